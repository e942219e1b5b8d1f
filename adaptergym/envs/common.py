"""Helpers the environments share: workload choice at reset, servability checks, observation scales.

What a server can serve (slot levels, rank covers, the load unit) lives in :mod:`adaptergym.server_capacity`,
which the layers below the environments use too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adaptergym.errors import WorkloadError
from adaptergym.scenarios import Scenario
from adaptergym.server_capacity import rank_cover
from adaptergym.twin.config import VLLM_MAX_LORA_RANKS
from adaptergym.workload import WorkloadSpec

#: Log scale of counts, ranks and slots in observations: ``log2(x) / LOG_SCALE`` (rank 512 -> 1).
LOG_SCALE = 9.0


def log_feature(x: np.ndarray | float) -> np.ndarray:
    """``log2(1 + x) / 9`` for counts and slots (0 -> 0, 511 -> 1)."""
    return np.log2(1.0 + np.asarray(x, np.float64)) / LOG_SCALE


def rank_feature(rank: np.ndarray | float) -> np.ndarray:
    """``log2(rank) / 9`` for LoRA ranks (8 -> 0.33, 512 -> 1); 0 stays 0."""
    rank = np.asarray(rank, np.float64)
    return np.where(rank > 0, np.log2(np.maximum(rank, 1.0)) / LOG_SCALE, 0.0)


def as_env_workload(value: Any) -> WorkloadSpec:
    """``options["workload"]``: a WorkloadSpec, a workload dict (the JSON format) or a path to a workload JSON."""
    if isinstance(value, WorkloadSpec):
        workload = value
    elif isinstance(value, dict):
        workload = WorkloadSpec.from_dict(value, source='options["workload"]')
    elif isinstance(value, (str, Path)):
        workload = WorkloadSpec.from_json(value)
    else:
        raise WorkloadError(f'options["workload"]: expected a WorkloadSpec, a dict or a path, '
                            f"got {type(value).__name__}")
    if workload.lengths.kind == "trace" or not workload.adapters:
        raise WorkloadError('options["workload"]: environments need adapters with rates and a length '
                            "distribution; a trace CSV cannot be pinned (build a WorkloadSpec instead)")
    if workload.arrival.kind == "burst":
        raise WorkloadError('options["workload"]: a "burst" arrival has no rates to place by; use poisson or gamma')
    return workload


@dataclass(frozen=True, slots=True)
class Episode:
    """What ``reset`` decided: the workload, where it came from, and the seed of its request draw."""

    workload: WorkloadSpec
    workload_seed: int  # scenario seed, or -1 for a workload pinned through options
    request_seed: int


def choose_episode(scenario: Scenario, seeds: range, rng: np.random.Generator,
                   options: dict[str, Any] | None) -> Episode:
    """Pick an episode's workload: ``options["workload"]``, else ``options["scenario_seed"]``, else one of
    ``seeds`` drawn with ``rng``. Always draws from ``rng`` the same way, so its stream stays aligned."""
    options = options or {}
    unknown = set(options) - {"workload", "scenario_seed"}
    if unknown:
        raise ValueError(f"reset options: unknown key(s) {sorted(unknown)}; known: 'workload', 'scenario_seed'")
    drawn = int(seeds[int(rng.integers(len(seeds)))])
    request_seed = int(rng.integers(2**31 - 1))
    if options.get("workload") is not None:
        return Episode(as_env_workload(options["workload"]), -1, request_seed)
    seed = int(options["scenario_seed"]) if options.get("scenario_seed") is not None else drawn
    return Episode(scenario.workload(seed), seed, request_seed)


def check_servable(workload: WorkloadSpec, caps: dict[int, int]) -> None:
    """Reject a workload with an adapter that no server of this profile can hold, even with one slot."""
    for adapter in workload.adapters:
        if adapter.rank > VLLM_MAX_LORA_RANKS[-1] or caps[rank_cover(adapter.rank)] == 0:
            raise WorkloadError(f"adapter {adapter.id!r}: rank {adapter.rank} does not start on this profile's GPU "
                                "even with max_loras=1; drop it or use a larger GPU profile")
