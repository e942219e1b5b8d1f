"""Dynamic serving: a fleet whose plan changes epoch by epoch over a time-varying workload.

:class:`DynamicFleet` is the entry point (one decision epoch per ``step(plan)``); a plan maps replica ids to
:class:`ReplicaSpec`; each step returns an :class:`EpochResult`, and :meth:`DynamicFleet.summary` an
:class:`EpisodeSummary`. Online policies that make the plans live in ``baselines.online``.
"""

from adaptergym.dynamic.accounting import DEFAULT_SLO_TTFT_MS, EpisodeSummary, EpochResult, ReplicaEpoch
from adaptergym.dynamic.fleet import SCORERS, DynamicFleet
from adaptergym.twin.fleet_plan import FleetPlan, PlanChanges, ReplicaSpec

__all__ = [
    "DEFAULT_SLO_TTFT_MS",
    "SCORERS",
    "DynamicFleet",
    "EpisodeSummary",
    "EpochResult",
    "FleetPlan",
    "PlanChanges",
    "ReplicaEpoch",
    "ReplicaSpec",
]
