"""The ideal tracker: the GPU-hours an episode would take if the fleet followed its true load epoch by epoch, the
reference that says how much of static-on-peak's GPU-hours any re-planner could save at all.

Each epoch gets as many GPUs as the re-planners' own packing (:class:`baselines.online.packing.Packer`, the greedy
surrogate pipeline at the same headroom as ``static-peak``, a LoRA slot per adapter) needs for the true rates, and
pays nothing to change: no start-up time, no load, no drain, no forecast error. Two figures:

* **instant**: the packing of each epoch's own true rates;
* **with the start-up lead**: the packing of each adapter's highest true rate over the epoch and those a replica
  launched at its start spends starting (:func:`baselines.online.policies.lead_epochs`, at the start-up time of
  the largest ``max_loras`` the packing of the adapters' peaks uses), so a rise is served by replicas started in
  time (never fewer GPUs than the instant figure: the greedy packing is not monotone in the rates). This is
  what a perfect forecast with this packer could reach; the oracle pays the rest (held capacity, the margins
  that keep it from starving, the fleet's changes).

It is not a lower bound on GPU-hours (the packer is a heuristic, and the twin may starve at its headroom); it is
the saving this project's packing leaves on the table by not knowing the future, in the same units as the
leaderboard.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from adaptergym.dynamic import DynamicFleet
from baselines.online.packing import Group, Packer, plan_of
from baselines.online.policies import HEADROOM, lead_epochs


@dataclass(frozen=True, slots=True)
class IdealTracker:
    """An episode's ideal-tracker GPU-hours, instant and with the start-up lead of ``lead`` epochs (module doc)."""

    gpu_hours: float
    lead_gpu_hours: float
    lead: int


def ideal_tracker(fleet: DynamicFleet, headroom: float = HEADROOM,
                  pack: Callable[[np.ndarray], Sequence[Group]] | None = None) -> IdealTracker:
    """The ideal tracker of ``fleet``'s episode (module doc); only its true rate table is read, so a fast-mode
    fleet (``counts_only``) will do. ``pack`` (rates -> GPUs) replaces the re-planners' packing at ``headroom``,
    e.g. with a re-planner's own :meth:`~baselines.online.policies.Replanner.pack`."""
    table = fleet.rate_table()
    hours = np.diff(fleet.traffic.edges) / 3600.0
    pack = pack or Packer(fleet, headroom, slot_each=True).pack
    slots = max(spec.max_loras for spec in plan_of(pack(table.max(axis=0))).values())
    lead = lead_epochs(fleet.profile.startup_time.seconds(slots), fleet.epoch_s)
    instant = [len(pack(rates)) for rates in table]
    ahead = [len(pack(table[e: e + lead].max(axis=0))) for e in range(len(table))]
    return IdealTracker(float(np.dot(instant, hours)), float(np.dot(np.maximum(ahead, instant), hours)), lead)
