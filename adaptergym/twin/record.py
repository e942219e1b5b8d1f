"""The raw outcome of one replica run: per-request times and engine counters (no summarising here)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from adaptergym.twin.startup import Startup

#: ITL histogram: log-spaced bins of 0.5% width from 0.01 ms upward.
ITL_BIN_WIDTH = math.log(1.005)
ITL_MIN_MS = 0.01
ITL_BINS = 4000
#: A request's flag in the engines: refused (the waiting queue was full) or routed to another replica.
REFUSED = 1
ROUTED_AWAY = 2


def itl_bin(gap_ms: float) -> int:
    """Histogram bin of one inter-token gap."""
    return min(int(math.log(max(gap_ms, ITL_MIN_MS) / ITL_MIN_MS) / ITL_BIN_WIDTH), ITL_BINS - 1)


def itl_bins(gaps_ms: np.ndarray) -> np.ndarray:
    """Histogram bins of many gaps."""
    scaled = np.log(np.maximum(gaps_ms, ITL_MIN_MS) / ITL_MIN_MS) / ITL_BIN_WIDTH
    return np.minimum(scaled.astype(np.int64), ITL_BINS - 1)


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
    step_counts: np.ndarray | None = None  # step counts (``RAW_COUNTS``) summed over every step
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

    def arrived_before(self, t_s: float) -> RunRecord:
        """The same run judged over ``[0, t_s)``: only requests that arrived by then, and that duration."""
        keep = self.arrival_s < t_s
        return replace(self, duration_s=t_s, arrival_s=self.arrival_s[keep], adapter=self.adapter[keep],
                       input_tokens=self.input_tokens[keep], output_tokens=self.output_tokens[keep],
                       first_token_s=self.first_token_s[keep], finish_s=self.finish_s[keep],
                       preemptions=self.preemptions[keep], refused=self.refused[keep])
