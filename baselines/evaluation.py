"""One policy on one workload, judged the one way every placement is judged: what ``adaptergym place`` prints and
each row of ``adaptergym leaderboard`` holds."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from adaptergym.errors import WorkloadError
from adaptergym.placement import Placement, PlacementPolicy, Verification, verify
from adaptergym.profile import TwinProfile
from adaptergym.workload import WorkloadSpec
from baselines.bound import lower_bound_gpus


@dataclass(frozen=True)
class Outcome:
    """A policy's placement of a workload, its verification and the lower bound it is measured against."""

    policy: str
    profile: str
    placement: Placement
    lower_bound_gpus: int
    verification: Verification
    decision_time_s: float  # wall time of ``policy.place`` (its own twin runs and repairs included)

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``adaptergym place --json`` (DESIGN.md)."""
        return {"profile": self.profile, "gpus": self.placement.gpus, "lower_bound_gpus": self.lower_bound_gpus,
                "placement": self.placement.to_dicts(), "verified": self.verification.to_dict(),
                "decision_time_s": self.decision_time_s}

    def row(self) -> dict[str, Any]:
        """The policy-independent columns of a leaderboard row."""
        return {"gpus": self.placement.gpus, "lower_bound_gpus": self.lower_bound_gpus,
                "ratio_to_bound": self.placement.gpus / self.lower_bound_gpus,
                "starved_gpus": self.verification.starved_gpus,
                "total_throughput": self.verification.total_throughput,
                "p99_ttft_ms": self.verification.p99_ttft_ms, "decision_time_s": self.decision_time_s}


def place_and_verify(policy: PlacementPolicy, workload: WorkloadSpec, profile: TwinProfile, *,
                     seed: int = 0) -> Outcome:
    """Place ``workload`` with ``policy`` (timed), verify it (:func:`adaptergym.placement.verify`, same seed) and
    compute its lower bound (:func:`baselines.bound.lower_bound_gpus`).

    Raises:
        WorkloadError: a trace CSV or a workload without adapters (placement splits adapters' rates).
    """
    if workload.lengths.kind == "trace" or not workload.adapters:
        raise WorkloadError("workload: placement needs a workload JSON with adapters and rates, not a trace CSV")
    start = time.perf_counter()
    placement = policy.place(workload, profile, seed=seed)
    decision_s = time.perf_counter() - start
    return Outcome(policy.name, profile.name, placement, lower_bound_gpus(workload, profile),
                   verify(workload, placement, profile, seed=seed), decision_s)
