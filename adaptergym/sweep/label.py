"""Label one sweep point with the Digital Twin: start-up outcome, offered and served load, starvation, latency.

Each point runs for a short window (``window_s``, 300 s by default) and is judged in steady state as the
environments' twin scorer does (:func:`adaptergym.scoring.steady_state`): offered counts tokens arriving
after the warm-up (the first 20%), served those of requests finishing after it; starved is the papers' rule
(served at least 10% short of offered) with a backlog (a request that arrived before the last 10% of the
window had not started by its end). Latencies are the twin's over the whole window.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from adaptergym.errors import ConfigError
from adaptergym.metrics import summarize
from adaptergym.profile import TwinProfile
from adaptergym.scoring import starved, steady_state
from adaptergym.simulation import draw_requests
from adaptergym.sweep.points import SweepPoint
from adaptergym.twin import ServerConfig, run_replica
from adaptergym.twin.config import default_rank
from adaptergym.workload import WorkloadSpec

#: Columns of every dataset row, in order: the point, its settings, then the labels.
COLUMNS = (
    "point_id", "workload_id", "seed", "profile", "profile_fingerprint", "sweep_seed", "window_s",
    "num_adapters", "rate_kind", "rate_values", "total_rate", "alpha", "rank_cycle", "lengths",
    "max_loras", "max_lora_rank", "max_cpu_loras",
    "startup", "offered_tok_s", "served_tok_s", "served_ratio", "backlog", "starved",
    "arrived_requests", "finished_requests", "mean_ttft_ms", "p99_ttft_ms", "mean_itl_ms", "preemptions",
)


def profile_fingerprint(profile: TwinProfile) -> str:
    """A short hash of everything in the profile the twin reads (its provenance excluded), so a dataset can
    tell whether the profile it was generated with has changed since."""
    return hashlib.sha256(json.dumps(profile.fingerprint_dict(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class SweepSettings:
    """What every point of a sweep shares: the profile, the sweep seed and the window."""

    profile: TwinProfile
    sweep_seed: int = 0
    window_s: float = 300.0
    warmup_fraction: float = 0.2

    def __post_init__(self) -> None:
        if not self.window_s > 0:
            raise ConfigError(f"window_s: {self.window_s} must be > 0 simulated seconds")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError(f"warmup_fraction: {self.warmup_fraction} must be in [0, 1)")

    def fixed_columns(self) -> dict[str, Any]:
        return {"profile": self.profile.name, "profile_fingerprint": profile_fingerprint(self.profile),
                "sweep_seed": self.sweep_seed, "window_s": self.window_s}


def label_workload(workload: WorkloadSpec, max_loras: int, seed: int, settings: SweepSettings) -> dict[str, Any]:
    """The twin's labels of one GPU serving every adapter of ``workload`` for ``settings.window_s``.

    The CPU cache holds every adapter and ``max_lora_rank`` is the smallest vLLM value covering the
    workload's ranks, as in the papers' runs.
    """
    requests = draw_requests(workload, seed, settings.window_s)
    n = len(workload.adapters)
    config = default_rank(ServerConfig(max_loras=max_loras, max_cpu_loras=max(max_loras, n)),
                          requests.adapter_ranks).resolved(settings.profile)
    record = run_replica(settings.profile, config, requests)
    state = steady_state(record, settings.warmup_fraction * settings.window_s)
    metrics = summarize(record)
    ratio = state.served_tok_s / state.offered_tok_s if state.offered_tok_s > 0 else 1.0
    is_starved = bool(starved(np.array([state.served_tok_s]), np.array([state.offered_tok_s]))[0])
    if record.startup.ok:
        is_starved = is_starved and state.backlog
    return {
        "max_loras": max_loras, "max_lora_rank": config.max_lora_rank, "max_cpu_loras": config.max_cpu_loras,
        "startup": record.startup.status, "offered_tok_s": state.offered_tok_s, "served_tok_s": state.served_tok_s,
        "served_ratio": ratio, "backlog": state.backlog, "starved": is_starved,
        "arrived_requests": metrics.arrived_requests, "finished_requests": metrics.successful_requests,
        "mean_ttft_ms": metrics.mean_ttft_ms, "p99_ttft_ms": metrics.p99_ttft_ms,
        "mean_itl_ms": metrics.mean_itl_ms, "preemptions": metrics.preemptions,
    }


def label_point(point: SweepPoint, settings: SweepSettings) -> dict[str, Any]:
    """Run one point through the twin and return its dataset row (keys: :data:`COLUMNS`)."""
    return {"point_id": point.point_id, "workload_id": point.workload_id, "seed": point.seed,
            **settings.fixed_columns(), **point.recipe.columns(),
            **label_workload(point.recipe.workload(settings.window_s), point.max_loras, point.seed, settings)}


def label_points(points: list[SweepPoint], settings: SweepSettings) -> list[dict[str, Any]]:
    """Rows of several points (one task of an executor)."""
    return [label_point(p, settings) for p in points]
