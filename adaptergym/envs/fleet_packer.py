"""The packer behind ``AdapterFleet-v0``'s knobs: a target fill, a shrink hysteresis and a slot fraction in, a fleet
plan out, changing the running fleet as little as it can.

Loads are in GPUs' worth, the environments' unit (offered tokens/s over one GPU's saturated throughput). What a
replica can carry falls with the adapters it holds (every adapter in a batch adds step time, and adapters beyond
its slots are swapped in and out): ``capacity[k]`` is the load a replica holding ``k`` adapters serves without
starving (the twin's starvation edges, :mod:`adaptergym.edges`), and a replica's *utilisation* is its load over
that. ``fill`` is the utilisation the packer plans for. Each decision:

1. **Replica count.** The fewest replicas ``N`` whose capacity at ``n / N`` adapters each, times ``fill``,
   carries the load, when that is at least the current count (growth is never delayed); otherwise the fleet
   shrinks only to the fewest that carry the load times ``1 + hysteresis``, so a fleet that fits on one replica
   fewer only just is not shrunk (and grown back) as the load wobbles. At most ``max_replicas``.
2. **Copies.** An adapter whose own load exceeds ``fill`` times a replica's capacity is served by enough
   replicas to bring each copy under it (the router splits its traffic evenly); every adapter has at least one.
3. **Sticky assignment.** Adapters stay where they are. A shrink removes the least utilised replicas (those
   still starting first); their adapters, and new copies, go to the least utilised replicas, largest first.
4. **Relief.** While a replica is planned above ``fill``, the adapter (copy) whose move to the least utilised
   replica leaves the higher of the two utilisations lowest moves there, as long as that lowers it.
5. **Flags.** Every replica's ``max_lora_rank`` covers the workload's highest rank, so adding any adapter to a
   running replica is a runtime load, never a restart. A new replica's ``max_loras`` is the smallest level
   ``>= slot_fraction x`` its adapters (or the fleet's mean adapters per replica, if more: it may receive
   more later), capped at the largest level vLLM starts with at that rank; a running replica keeps its
   ``max_loras`` (changing it would restart it).
6. **Make before break** (:func:`keep_serving`): what runs keeps serving the adapters moved to replicas that
   are still starting, and replicas leaving the plan stay until those serve.

Each step costs well under a millisecond for a few hundred adapters: no model is asked, only sums of loads.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from adaptergym.server_capacity import rank_cover
from adaptergym.twin.fleet_plan import FleetPlan, ReplicaSpec

#: Slack on load comparisons (GPUs' worth), so rounding never moves an adapter.
EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Knobs:
    """One decision of the packer (module doc): ``fill`` (planned load per replica, GPUs' worth), ``hysteresis``
    (extra room required before shrinking, a fraction) and ``slot_fraction`` (new replicas' ``max_loras`` per
    adapter)."""

    fill: float
    hysteresis: float
    slot_fraction: float


class KnobPacker:
    """Keeps a target assignment of adapters to replicas and moves it by :class:`Knobs` (module doc).

    Args:
        adapter_ids: the workload's adapters (plans name them).
        ranks: their LoRA ranks.
        capacity: ``capacity[k]``, the load (GPUs' worth) a replica holding ``k`` adapters serves without
            starving, for ``k`` in ``0 .. len(adapter_ids)``.
        max_replicas: the largest fleet it plans.
        levels: the ``max_loras`` values a new replica may get, increasing.
        max_slots: the largest of ``levels`` vLLM starts with at the workload's rank cover.
    """

    def __init__(self, adapter_ids: Sequence[str], ranks: np.ndarray, capacity: np.ndarray, max_replicas: int,
                 levels: Sequence[int], max_slots: int) -> None:
        self.ids = tuple(adapter_ids)
        self.rank = rank_cover(int(np.max(ranks)))
        self.capacity = np.asarray(capacity, float)
        self._at_count = self.capacity.copy()  # capacity by rounded effective count, which is at least one adapter
        self._at_count[0] = self.capacity[min(1, self.capacity.size - 1)]
        self.max_replicas = int(max_replicas)
        self.levels = tuple(v for v in levels if v <= max_slots) or (1,)
        self.replicas: list[int] = []  # replica ids of the target (before make-before-break), in row order
        self.holds = np.zeros((0, len(self.ids)), bool)  # holds[row, adapter]: that replica serves that adapter
        self.slots: dict[int, int] = {}
        self._ids = itertools.count()

    @property
    def copies(self) -> np.ndarray:
        """Replicas of the target holding each adapter."""
        return self.holds.sum(axis=0)

    def plan(self, load: np.ndarray, knobs: Knobs, current: FleetPlan, starting: Collection[int] = ()) -> FleetPlan:
        """The plan for per-adapter planned ``load`` (GPUs' worth) under ``knobs``, from the running plan
        ``current`` (``starting``: its replicas not serving yet)."""
        replicas, holds = list(self.replicas), self.holds.copy()
        spread = effective_count(load)
        count = self.replica_count(float(load.sum()), spread, len(replicas), knobs)
        per_copy = knobs.fill * self.capacity[max(1, round(spread / count))]
        copies = np.clip(np.ceil(load / per_copy - EPS), 1, count).astype(int)
        share = load / copies
        room = {rid: self.slots.get(rid, self.levels[-1]) / knobs.slot_fraction for rid in replicas}
        if len(replicas) > count:  # the least utilised go (those still starting first) while the rest hold all
            used = self.utilisation(holds @ share, holds @ share**2)
            for k in sorted(range(len(replicas)), key=lambda k: (replicas[k] not in starting, used[k], replicas[k])):
                rest = sum(room.values()) - room[replicas[k]]
                if len(room) > count and rest >= copies.sum():
                    del room[replicas[k]]
            keep = [k for k, rid in enumerate(replicas) if rid in room]
            replicas, holds = [replicas[k] for k in keep], holds[keep]
        while len(replicas) < count:
            replicas.append(self._new_id(current))
        holds = np.vstack([holds, np.zeros((len(replicas) - holds.shape[0], len(self.ids)), bool)])
        limit = np.array([self.slots.get(rid, self.levels[-1]) / knobs.slot_fraction for rid in replicas])
        loads, squares = holds @ share, holds @ share**2
        have, held = holds.sum(axis=0), holds.sum(axis=1)
        for a in np.flatnonzero(have != copies)[np.argsort(-load[have != copies], kind="stable")].tolist():
            while have[a] > copies[a]:  # drop the copy on the most utilised holder
                k = int(np.argmax(np.where(holds[:, a], self.utilisation(loads, squares), -np.inf)))
                holds[k, a], have[a], held[k] = False, have[a] - 1, held[k] - 1
                loads[k], squares[k] = loads[k] - share[a], squares[k] - share[a] ** 2
            while have[a] < copies[a]:  # add one on the least utilised non-holder, one with room if any
                after = self.utilisation(loads + share[a], squares + share[a] ** 2)
                others = ~holds[:, a]
                free = others & (held < limit)
                k = int(np.argmin(np.where(free if free.any() else others, after, np.inf)))
                holds[k, a], have[a], held[k] = True, have[a] + 1, held[k] + 1
                loads[k], squares[k] = loads[k] + share[a], squares[k] + share[a] ** 2
        self._relieve(holds, held, loads, squares, share, limit, knobs.fill)
        typical = holds.sum() / len(replicas)  # adapters per replica: what a new replica may come to hold
        for k, rid in enumerate(replicas):
            if rid not in self.slots:
                self.slots[rid] = self.level_for(max(int(holds[k].sum()), typical), knobs.slot_fraction)
        self.replicas, self.holds = replicas, holds
        self.slots = {rid: self.slots[rid] for rid in replicas}
        plan = {rid: ReplicaSpec(tuple(map(self.ids.__getitem__, np.flatnonzero(holds[k]).tolist())), self.slots[rid],
                                 self.rank)
                for k, rid in sorted(enumerate(replicas), key=lambda kr: kr[1])}
        return keep_serving(plan, current, starting)

    def capacities(self, loads: np.ndarray, squares: np.ndarray) -> np.ndarray:
        """Capacity (GPUs' worth) of replicas carrying ``loads``, whose adapters' loads squared sum to ``squares``:
        ``capacity`` at their effective count ``loads**2 / squares`` (at one adapter for a replica with no load)."""
        count = np.where(squares > EPS, loads * loads / np.maximum(squares, EPS), 1.0)
        return self._at_count.take(np.rint(count).astype(np.intp), mode="clip")

    def utilisation(self, loads: np.ndarray, squares: np.ndarray) -> np.ndarray:
        """Load over capacity of such replicas."""
        return loads / self.capacities(loads, squares)

    def target_loads(self, load: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Planned load and capacity of each replica of the target (row order) at per-adapter ``load``, each
        adapter's load split evenly over its copies."""
        share = load / np.maximum(self.copies, 1)
        loads = self.holds @ share
        return loads, self.capacities(loads, self.holds @ share**2)

    def carries(self, total: float, spread: float, replicas: int, fill: float) -> bool:
        """Whether ``replicas`` replicas carry ``total`` load of effective count ``spread`` (shared evenly) at
        ``fill``."""
        return total <= replicas * fill * self.capacity[max(1, round(spread / replicas))] + EPS

    def replica_count(self, total: float, spread: float, now: int, knobs: Knobs) -> int:
        """Step 1 of the module doc: replicas for ``total`` load (GPUs' worth, effective count ``spread``) when
        ``now`` run."""
        def fewest(needed: float) -> int:
            return next((r for r in range(1, self.max_replicas + 1)
                         if self.carries(needed, spread, r, knobs.fill)), self.max_replicas)

        grown = fewest(total)
        return grown if grown >= now else min(now, fewest(total * (1.0 + knobs.hysteresis)))

    def level_for(self, adapters: float, slot_fraction: float) -> int:
        """The smallest allowed ``max_loras`` level covering ``slot_fraction x adapters`` (the largest allowed when
        none does)."""
        need = max(1.0, slot_fraction * adapters)
        return next((v for v in self.levels if v >= need - EPS), self.levels[-1])

    def _new_id(self, current: FleetPlan) -> int:
        """A replica id never used in this episode (nor running in ``current``)."""
        while True:
            rid = next(self._ids)
            if rid not in self.slots and rid not in current:
                return rid

    def _relieve(self, holds: np.ndarray, held: np.ndarray, loads: np.ndarray, squares: np.ndarray,
                 share: np.ndarray, limit: np.ndarray, fill: float) -> None:
        """Step 4 of the module doc (at most one move per adapter copy), only onto replicas with room (``held``:
        adapters on each replica, kept up to date)."""
        share_squared = share**2
        for _ in range(int(held.sum())):
            used = self.utilisation(loads, squares)
            hi = int(np.argmax(used))
            if used[hi] <= fill + EPS:
                return
            free = held < limit
            free[hi] = False
            if not free.any():
                return
            lo = int(np.argmin(np.where(free, used, np.inf)))
            after = np.maximum(self.utilisation(loads[hi] - share, squares[hi] - share_squared),
                               self.utilisation(loads[lo] + share, squares[lo] + share_squared))
            after[holds[lo] | ~holds[hi]] = np.inf  # only adapters on hi and not on lo move
            a = int(np.argmin(after))
            if not after[a] < used[hi] - EPS:
                return
            holds[hi, a], holds[lo, a] = False, True
            held[hi], held[lo] = held[hi] - 1, held[lo] + 1
            loads[hi], loads[lo] = loads[hi] - share[a], loads[lo] + share[a]
            squares[hi], squares[lo] = squares[hi] - share[a] ** 2, squares[lo] + share[a] ** 2


def effective_count(load: np.ndarray) -> float:
    """How many equal adapters ``load`` behaves like, ``sum(load)**2 / sum(load**2)`` (all of them when equal, one
    when one adapter carries it all; 1 when there is no load)."""
    squares = float((load**2).sum())
    return float(load.sum()) ** 2 / squares if squares > 0 else 1.0


def keep_serving(plan: FleetPlan, current: FleetPlan, starting: Collection[int] = ()) -> FleetPlan:
    """``plan``, changed so that nothing ``current`` serves goes unserved while replicas start: an adapter that
    ``plan`` puts only on starting replicas (new ones, or ``starting`` ones) stays on the running replicas of
    ``current`` that hold it, and a running replica ``plan`` drops stays, as it is, while any replica of the plan
    is starting. Once nothing starts, the next plan can drop them."""
    up = {rid for rid in current if rid not in starting}
    if all(rid in up for rid in plan):
        return plan
    served = {a for rid, spec in plan.items() if rid in up for a in spec.adapters}
    out = dict(plan)
    for rid in sorted(up):
        old = current[rid]
        if rid not in out:
            out[rid] = old
            continue
        keep = [a for a in old.adapters if a not in served and a not in out[rid].adapters]
        if keep:
            spec = out[rid]
            out[rid] = ReplicaSpec((*spec.adapters, *keep), spec.max_loras, spec.max_lora_rank)
    return out
