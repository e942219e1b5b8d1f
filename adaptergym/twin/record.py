"""The raw outcome of one replica run: per-request times and engine counters (no summarising here)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adaptergym.twin.startup import Startup


@dataclass(frozen=True, slots=True)
class RunRecord:
    """Per-request arrays (aligned) plus engine counters; ``nan`` times mean "did not happen"."""

    startup: Startup
    duration_s: float
    arrival_s: np.ndarray
    adapter: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    preemptions: np.ndarray
    refused: np.ndarray
    adapter_ids: tuple[str, ...]
    itl_hist: np.ndarray
    itl_counts: np.ndarray | None = None  # step counts (``RAW_COUNTS``) weighted by the ITL gaps they close
    steps: int = 0
    busy_s: float = 0.0
    mean_running: float = 0.0
    mean_waiting: float = 0.0
    max_waiting: int = 0
    max_running: int = 0
    mean_kv_usage: float = 0.0
    loads_from_disk: int = 0
    loads_from_cpu: int = 0
    sim_time_s: float = 0.0
