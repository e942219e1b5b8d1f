"""The public entry points: workload -> twin -> metrics, for one replica or a placement on a fleet."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adaptergym.metrics import Metrics, summarize
from adaptergym.profile import TwinProfile, load_profile
from adaptergym.twin import ReplicaPlan, ServerConfig, check_lengths, check_ranks, run_replica, simulate_fleet
from adaptergym.twin.config import default_rank
from adaptergym.twin.replica import ProgressCallback
from adaptergym.workload import RequestBatch, WorkloadSpec, sample_requests


def as_workload(workload: WorkloadSpec | RequestBatch | str | Path) -> WorkloadSpec | RequestBatch:
    return WorkloadSpec.from_json(workload) if isinstance(workload, (str, Path)) else workload


def draw_requests(workload: WorkloadSpec | RequestBatch | str | Path, seed: int = 0,
                  duration_s: float | None = None) -> RequestBatch:
    """Concrete requests of a workload (a RequestBatch passes through)."""
    workload = as_workload(workload)
    if isinstance(workload, RequestBatch):
        return workload
    if duration_s is not None:
        workload = workload.with_duration(duration_s)
    return sample_requests(workload, np.random.default_rng(seed))


def simulate(
    workload: WorkloadSpec | RequestBatch | str | Path,
    profile: TwinProfile | str | None = None,
    config: ServerConfig | None = None,
    *,
    seed: int = 0,
    duration_s: float | None = None,
    progress: ProgressCallback | None = None,
) -> Metrics:
    """Simulate one vLLM replica serving every adapter of ``workload``.

    Args:
        workload: a spec, a path to a workload JSON / trace CSV, or concrete requests.
        profile: profile object, shipped name, model name or JSON path (default: the Llama-3.1-8B profile).
        config: server flags; unset fields come from the profile. ``max_lora_rank`` defaults to the largest
            adapter rank when neither config nor profile decide it.
        seed: seeds the request draw (same seed -> identical metrics).
        duration_s: overrides the workload's duration.
        progress: called with the completed fraction while the run goes.
    """
    prof = load_profile(profile)
    requests = draw_requests(workload, seed, duration_s)
    cfg = default_rank(config or ServerConfig(), requests.adapter_ranks).resolved(prof)
    check_ranks(requests, cfg)
    check_lengths(requests, cfg)
    return summarize(run_replica(prof, cfg, requests, progress))


@dataclass(frozen=True, slots=True)
class FleetMetrics:
    """A fleet run: the whole fleet's metrics and each replica's."""

    fleet: Metrics
    replicas: list[Metrics]

    @property
    def starved_replicas(self) -> int:
        return sum(m.starved for m in self.replicas)


def simulate_placement(
    workload: WorkloadSpec | RequestBatch | str | Path,
    replicas: Sequence[ReplicaPlan],
    profile: TwinProfile | str | None = None,
    *,
    seed: int = 0,
    router: str = "even",
    duration_s: float | None = None,
) -> FleetMetrics:
    """Simulate a placement: every replica of the fleet in one run, requests routed by ``router``."""
    prof = load_profile(profile)
    requests = draw_requests(workload, seed, duration_s)
    records = simulate_fleet(prof, requests, list(replicas), router)
    return FleetMetrics(summarize(records), [summarize(r) for r in records])
