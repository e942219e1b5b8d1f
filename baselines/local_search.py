"""``local-search``: a packing by the lower bound's cost model, checked and repaired by the twin, on the fewest GPUs
it verifies.

Greedy (the published pipeline) packs with the tree surrogate's verdicts and then shrinks by re-spreading
copies. This policy packs with the cost model of the lower bound (:mod:`baselines.cost_model`), fitted on the
twin's starvation edges, so its first packing already uses the bound's GPU count, and lets the twin decide:

1. **Copies.** Each adapter costs ``c_k(l)`` at its rank class (the most any curve of the class's family
   charges); one hotter than :data:`HOT_FILL` of what any GPU carries is split into the fewest even copies below
   that.
2. **Pack** ``G`` GPUs, ``G`` from the lower bound up. Each rank class, from the highest, gets its share of the
   GPUs by cost (the GPU where one class ends is shared with the next, and costs its copies at the higher class);
   its copies, by decreasing cost, each go to the GPU of its share that it leaves least costly, so hot adapters
   spread over the GPUs and cold ones fill them (a GPU of hot adapters only, or of cold ones only, serves less
   than one that mixes them). Then single moves from the costliest GPU to the cheapest while that lowers the
   costliest.
3. **Verify and repair** (the twin, :class:`baselines.common.Verifier`). Each GPU runs at the ``max_loras`` that
   served the most similar calibration mixes best (:meth:`baselines.capacity.CapacityModel.best_level`), or with
   a slot for every adapter when it has room to spare (:data:`LIGHT_COST`); where
   the twin starves it, the levels next to it are tried (:func:`baselines.common.twin_level`). The GPU starved
   worst at every level tried hands copies worth its shortfall (its cost times the share it falls short of 90%,
   plus :data:`MOVE_STEP`) to the verified GPUs, each copy to the one it raises least per cost moved (a copy
   that would raise a GPU's rank class raises it most; a GPU that starved earlier in the repair takes copies
   last), and the GPUs changed are checked again; a starved GPU holding a single copy gets its adapter one more
   copy, on a GPU of its own (replication chosen by the search). Only changed GPUs are simulated. After
   ``max_moves`` moves without a verified placement, or with more than half the GPUs starved at every level
   tried, the next packing of the neighbourhood (step 4).
4. **The neighbourhood of a GPU count** (:meth:`_Search.packings`), each packing repaired as in step 3 until one
   verifies, else ``G + 1``: the packing of step 2; then up to :data:`REBALANCE_ROUNDS` rounds of balancing by
   the twin: each GPU's capacity is its cost times the factor its rates can be scaled by and still verify at its
   level (bisection), and single moves go from the GPU fullest for its capacity to the one they leave least full
   (so a GPU the twin serves better than the cost model says takes load from one it serves worse), while the
   capacities sum to at least :data:`REACH` of the costs; a round that overshoots (a GPU it filled is, by the
   capacities measured again, fuller than the fullest was before it: the twin serves a GPU less the more it
   carries, which fixed capacities do not see) is redone from its start moving at most half the cost it moved;
   then the packing with one more copy of each adapter whose copy costs more than :data:`HOT_SPLIT` of a GPU;
   then one with every rank class free to use every GPU.
5. **Empty a GPU.** From a verified placement above the bound, the least costly GPU is emptied, its copies packed
   onto the others by cost as in step 2, and step 3 run; the result is kept only if the twin verifies it.

A placement it returns is one the twin verified GPU by GPU (``place_and_verify`` repeats exactly those runs).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from adaptergym.errors import ConfigError
from adaptergym.metrics import STARVATION_THRESHOLD
from adaptergym.placement import VERIFY_DURATION_S, GpuAssignment, Placement
from adaptergym.profile import TwinProfile
from adaptergym.server_capacity import rank_cover
from adaptergym.workload import WorkloadSpec
from baselines import POLICIES
from baselines.bound import lower_bound_gpus
from baselines.capacity import servable_model
from baselines.common import Copy, Verifier, check_objective, group_cover, slot_ladder, to_placement, twin_level
from baselines.cost_model import CostModel, cost_model
from baselines.greedy import LEVEL_RETRIES, replicate

#: A copy takes at most this share of the most any GPU of its rank class was seen to carry.
HOT_FILL = 0.9
#: A GPU costing at most this has room to spare: it gets a slot for every adapter.
LIGHT_COST = 0.7
#: Cost moved off a starved GPU beyond its shortfall.
MOVE_STEP = 0.03
#: A copy costing more than this share of a GPU gets one more copy in a packing tried at a GPU count.
HOT_SPLIT = 0.25
#: The range a GPU's rates are scaled over to find what the twin says it can take, and the bisection steps.
EDGE_BRACKET = (0.8, 1.2)
EDGE_STEPS = 4
#: Rounds of balancing by the twin's capacities (each measures them again on the GPUs it left).
REBALANCE_ROUNDS = 3
#: No balancing round when the capacities sum to less than this share of the costs: the load does not fit these
#: GPUs by moving it between them (the capacities are measured to about 1.4%: :data:`EDGE_STEPS` in the bracket).
REACH = 0.98


@dataclass
class LocalSearchPolicy:
    """Cost-model packing with twin verification, repair moves and GPU emptying (module doc).

    Args:
        objective: ``"gpus"`` only (fewest GPUs without starvation).
        max_moves: repair moves tried at one GPU count before adding a GPU.
        verify_s: simulated seconds of each GPU's verification.
    """

    objective: str = "gpus"
    max_moves: int = 6
    verify_s: float = VERIFY_DURATION_S
    name: str = "local-search"
    twin_runs: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        check_objective(self.name, self.objective, ("gpus",))

    def place(self, workload: WorkloadSpec, profile: TwinProfile, *, seed: int = 0) -> Placement:
        search = _Search(workload, profile, Verifier(workload, profile, seed, self.verify_s))
        low = search.low
        found = None
        for gpus in range(low, len(search.copies) + 1):
            found = search.attempt(gpus, self.max_moves)
            if found is not None:
                break
        if found is None:
            raise ConfigError("local-search: no GPU count verifies; the workload may hold an adapter one GPU "
                              "cannot serve")
        while found[0].gpus > low:
            smaller = search.empty_one(found[1], self.max_moves)
            if smaller is None:
                break
            found = smaller
        self.twin_runs = search.verifier.runs
        return found[0]

    def place_on(self, workload: WorkloadSpec, profile: TwinProfile, gpus: int, *, seed: int = 0) -> Placement | None:
        """Steps 1-4 of the module doc at ``gpus`` GPUs only: the placement the twin verified after the repair
        moves (a further copy may add GPUs), or None. ``python -m baselines.bound_check`` probes one GPU below the
        lower bound with it."""
        search = _Search(workload, profile, Verifier(workload, profile, seed, self.verify_s))
        found = search.attempt(gpus, self.max_moves)
        self.twin_runs = search.verifier.runs
        return None if found is None else found[0]

    def capacities(self, workload: WorkloadSpec, profile: TwinProfile, gpus: int, *,
                   seed: int = 0) -> list[tuple[int, float, float]]:
        """The packing of step 2 on ``gpus`` GPUs as the twin sees it: per GPU, its rank class, its cost and its
        capacity (its cost times the factor its rates scale by and still verify: what step 4 balances by). A
        packing whose capacities sum to less than its costs does not fit by moving load between its GPUs
        (``examples/bound_gap.py``)."""
        search = _Search(workload, profile, Verifier(workload, profile, seed, self.verify_s))
        groups = [g for g in search.pack([[] for _ in range(gpus)], search.copies) if g]
        return [(group_cover(g), search.cost(g), c) for g, c in zip(groups, search.capacities(groups), strict=True)]


class _Search:
    """One workload's copies, costs and twin runs."""

    def __init__(self, workload: WorkloadSpec, profile: TwinProfile, verifier: Verifier) -> None:
        capacity = servable_model(profile, workload)
        costs = cost_model(profile, workload.lengths, workload.arrival)
        if costs is None:
            raise ConfigError(f"local-search: no capacity table for {profile.name!r} at {workload.lengths.kind} "
                              f"lengths and {workload.arrival.kind} arrivals (CV {workload.arrival.cv:g}); measure "
                              f"one with `python -m baselines.edge_table --profile {profile.name}` or use greedy")
        self.costs: CostModel = costs
        self.capacity = capacity
        self.verifier = verifier
        self.copies: list[Copy] = []
        for i, (adapter, load) in enumerate(zip(workload.adapters, capacity.loads(workload), strict=True)):
            curve = costs.curve(rank_cover(adapter.rank))
            n = max(1, math.ceil(load / (HOT_FILL * curve.max_load_tok_s) - 1e-12))
            self.copies += [Copy(i, adapter.id, adapter.rank, float(load) / n)] * n
        self.low = lower_bound_gpus(workload, profile)

    def cost(self, group: list[Copy], cover: int | None = None) -> float:
        """The model cost of ``group`` on one GPU (of rank class ``cover``; default: the group's own)."""
        if not group:
            return 0.0
        return self.costs.curve(cover or group_cover(group)).gpu_cost(np.array([c.load_tok_s for c in group]))

    def attempt(self, gpus: int, max_moves: int) -> tuple[Placement, list[list[Copy]]] | None:
        """Steps 2-4 of the module doc at ``gpus`` GPUs, packed each way of :meth:`packings` until the twin
        verifies one: the first verified (with its groups), or None (also when an adapter has more copies than
        ``gpus``: each copy needs a GPU of its own, which a low bound's count may not have)."""
        if max(Counter(c.index for c in self.copies).values()) > gpus:
            return None
        for groups in self.packings(gpus):
            found = self.repair(groups, max_moves)
            if found is not None:
                return found
        return None

    def packings(self, gpus: int) -> Iterator[list[list[Copy]]]:
        """The neighbourhood a GPU count is tried in (module doc, step 4): the packing of step 2; rounds of it
        balanced by the twin's capacities (a round that overshot redone from its start moving half as much: a
        bisection on how much to move); the packing with one more copy of every adapter whose copy costs more than
        :data:`HOT_SPLIT` of a GPU (the twin starves a GPU of a few hot adapters at a lower cost than one
        whose load is spread); and one with every rank class free to use every GPU (the hot adapters of all
        classes spread over all of them)."""
        empty = [[] for _ in range(gpus)]
        groups = [g for g in self.pack(empty, self.copies) if g]  # a GPU the packing left empty has no capacity
        yield groups
        start, start_capacity, start_fill, moved, receivers = groups, [], math.inf, 0.0, set()
        for _ in range(REBALANCE_ROUNDS):
            capacity = self.capacities(groups)
            fill = [self.cost(g) / c for g, c in zip(groups, capacity, strict=True)]
            if sum(capacity) < REACH * sum(map(self.cost, groups)):  # moving load between them will not do
                break
            if max(fill) > start_fill and int(np.argmax(fill)) in receivers:
                # the last round overshot (a GPU it filled is now fuller than the fullest was): redo it moving half
                groups, moved, receivers = self.rebalance(start, start_capacity, moved / 2)
            else:
                start, start_capacity, start_fill = groups, capacity, max(fill)
                groups, moved, receivers = self.rebalance(groups, capacity)
            if not moved:  # nothing moves: the same packing again
                break
            yield groups
        split = self.split_hot(gpus)
        if split is not None:
            yield self.pack(empty, split)
        yield self.pack(empty, split or self.copies, by_class=False)

    def rebalance(self, groups: list[list[Copy]], capacity: list[float],
                  budget: float = math.inf) -> tuple[list[list[Copy]], float, set[int]]:
        """``groups`` balanced by what the twin says each GPU can take (module doc, step 4; ``capacity`` from
        :meth:`capacities`): single moves from the GPU fullest for its capacity to the one it leaves least full,
        while that lowers the fullest and the cost taken off the GPUs moved from stays within ``budget``. Also
        the cost moved and the GPUs left costlier than before (the receivers)."""
        gpus = [_Gpu(self.costs, g) for g in groups]
        before, moved = [g.cost for g in gpus], 0.0
        for _ in range(len(self.copies)):
            fill = [g.cost / c for g, c in zip(gpus, capacity, strict=True)]
            high = int(np.argmax(fill))
            left = (gpus[high].sums[:, None] - gpus[high].each()).max(axis=0)
            moves = [(max(float(left[j]) / capacity[high], gpu.cost_with(c) / capacity[k]), j, k)
                     for j, c in enumerate(gpus[high].copies) for k, gpu in enumerate(gpus)
                     if k != high and c.index not in gpu.members and moved + gpus[high].cost - left[j] <= budget]
            if not moves or min(moves)[0] >= fill[high] - 1e-9:
                break
            _, j, k = min(moves)
            moved += gpus[high].cost - float(left[j])
            gpus[k].add(gpus[high].remove(j))
        return [g.copies for g in gpus], moved, {k for k, g in enumerate(gpus) if g.cost > before[k]}

    def capacities(self, groups: list[list[Copy]]) -> list[float]:
        """What the twin says each group's GPU can take, in cost units: its cost times :meth:`edge_scale` at the
        level it verifies at (when it starves at every level tried: the one of those two levels either side of
        the suggested one that serves the most)."""
        placement = to_placement(groups, self.levels(groups))
        copies = placement.copies()
        capacity = []
        for group, gpu in zip(groups, placement.assignments, strict=True):
            kept = twin_level(gpu, copies, self.verifier, LEVEL_RETRIES, self.capacity.max_slots)
            if kept is None:
                levels, at = slot_ladder(gpu, min(len(group), self.capacity.max_slots[group_cover(group)]))
                kept = max((replace(gpu, max_loras=m) for m in levels[max(0, at - 2):at + 3]),
                           key=lambda g: self.verifier.served_share(g, copies))
            capacity.append(self.cost(group) * self.edge_scale(kept, copies))
        return capacity

    def edge_scale(self, gpu: GpuAssignment, copies: Counter[str]) -> float:
        """The factor (within :data:`EDGE_BRACKET`, :data:`EDGE_STEPS` bisection steps in log space) by which
        ``gpu``'s adapters' rates can be scaled and still pass verification at its level (the bracket's low end
        when that starves too: then an over-estimate)."""
        passes = self.verifier.served_share(gpu, copies) >= 1.0 - STARVATION_THRESHOLD
        low, high = (1.0, EDGE_BRACKET[1]) if passes else (EDGE_BRACKET[0], 1.0)
        for _ in range(EDGE_STEPS):
            mid = math.sqrt(low * high)
            if self.verifier.served_share(gpu, copies, mid) >= 1.0 - STARVATION_THRESHOLD:
                low = mid
            else:
                high = mid
        return low

    def split_hot(self, gpus: int) -> list[Copy] | None:
        """The copies with one more copy of each adapter whose copy costs more than :data:`HOT_SPLIT` (at most
        ``gpus`` copies of an adapter), or None when there is none."""
        per_adapter = Counter(c.index for c in self.copies)
        hot = {c.index for c in self.copies if self.cost([c]) > HOT_SPLIT and per_adapter[c.index] < gpus}
        if not hot:
            return None
        out, split = [], set()
        for c in self.copies:
            if c.index not in hot:
                out.append(c)
            elif c.index not in split:  # an adapter's copies may be one object repeated: split it once
                split.add(c.index)
                n = per_adapter[c.index] + 1
                out += [replace(c, load_tok_s=c.load_tok_s * (n - 1) / n)] * n
        return out

    def pack(self, groups: list[list[Copy]], copies: list[Copy], by_class: bool = True) -> list[list[Copy]]:
        """``copies`` added to ``groups`` (module doc, step 2; each rank class on its share of the GPUs unless
        ``by_class`` is False or ``groups`` holds copies already), then balanced by single moves."""
        gpus = [_Gpu(self.costs, g) for g in groups]
        own = [self.cost([c]) for c in copies]
        target = (sum(g.cost for g in gpus) + sum(own)) / len(gpus)
        fresh, placed = by_class and not any(g.copies for g in gpus), 0.0
        for cover in sorted({rank_cover(c.rank) for c in copies}, reverse=True):
            members = sorted((k for k, c in enumerate(copies) if rank_cover(c.rank) == cover), key=lambda k: -own[k])
            window = range(len(gpus))
            if fresh:  # the class's share of the GPUs, after the higher classes'
                first = min(int(placed / target + 1e-9), len(gpus) - 1)
                placed += sum(own[k] for k in members)
                window = range(first, max(first + 1, min(len(gpus), math.ceil(placed / target - 1e-9))))
            for k in members:
                c = copies[k]
                options = [(gpus[g].cost_with(c), g) for g in window if c.index not in gpus[g].members]
                options = options or [(gpu.cost_with(c), g) for g, gpu in enumerate(gpus) if c.index not in gpu.members]
                if not options:
                    raise ConfigError(f"local-search: adapter {c.id!r} has more copies than GPUs")
                gpus[min(options)[1]].add(c)
        for _ in range(len(self.copies)):  # balance: single moves from the costliest GPU to the cheapest
            high = max(gpus, key=lambda g: g.cost)
            low = min(gpus, key=lambda g: g.cost)
            left = (high.sums[:, None] - high.each()).max(axis=0)  # high's cost without each copy (same class)
            moves = [(max(float(left[j]), low.cost_with(c)), j)
                     for j, c in enumerate(high.copies) if c.index not in low.members]
            if not moves or min(moves)[0] >= high.cost - 1e-9:
                break
            low.add(high.remove(min(moves)[1]))
        return [g.copies for g in gpus]

    def levels(self, groups: list[list[Copy]]) -> list[int]:
        """Each group's ``max_loras``: a slot for every adapter (as many as start) on a GPU with room to spare
        (cost up to :data:`LIGHT_COST`: no request waits for a slot), else the level that served the most similar
        calibration mixes best near their edge (:meth:`baselines.capacity.CapacityModel.best_level`)."""
        levels = []
        for g in groups:
            cover = group_cover(g)
            best = self.capacity.best_level(cover, np.array([c.load_tok_s for c in g]))
            light = best is None or self.cost(g) <= LIGHT_COST
            levels.append(min(len(g), self.capacity.max_slots[cover]) if light else best)
        return levels

    def repair(self, groups: list[list[Copy]], max_moves: int) -> tuple[Placement, list[list[Copy]]] | None:
        """Step 3 of the module doc: the verified placement of ``groups`` after at most ``max_moves`` moves
        (with its groups), or None."""
        groups = [g for g in groups if g]
        levels = self.levels(groups)
        strained: set[int] = set()  # GPUs that starved in this repair (by position in groups)
        for _ in range(max_moves + 1):
            placement = to_placement(groups, levels)
            copies = placement.copies()
            slots = self.capacity.max_slots
            kept = [twin_level(g, copies, self.verifier, LEVEL_RETRIES, slots) for g in placement.assignments]
            levels = [g.max_loras if g is not None else level for g, level in zip(kept, levels, strict=True)]
            starved = [k for k, g in enumerate(kept) if g is None]
            if not starved:
                return Placement(tuple(g for g in kept if g is not None)), groups
            if len(starved) > max(1, len(groups) // 2):
                return None
            strained.update(starved)
            shares = {k: self.verifier.served_share(placement.assignments[k], copies) for k in starved}
            worst = min(starved, key=shares.__getitem__)
            changed = self._move(groups, worst, starved, shares[worst], strained)
            if changed is None and len(groups[worst]) > 1:  # no verified GPU to take its copies
                return None
            if changed is None:  # a single copy starves: one more copy of its adapter, on a GPU of its own
                kept_groups = [g for k, g in enumerate(groups) if k != worst]
                levels = [level for k, level in enumerate(levels) if k != worst]
                groups = replicate(groups, kept_groups, groups[worst])
                strained.clear()
                levels += self.levels(groups[len(levels):])
            else:
                for k, level in zip(changed, self.levels([groups[k] for k in changed]), strict=True):
                    levels[k] = level
        return None

    def _move(self, groups: list[list[Copy]], worst: int, starved: list[int], share: float,
              strained: set[int]) -> list[int] | None:
        """Copies worth the shortfall of GPU ``worst`` moved to verified GPUs, each to the one it leaves least
        costly (a GPU that starved earlier in this repair, in ``strained``, only when no other can take it); the
        GPUs changed, or None when ``worst`` holds a single copy (or no GPU can take one)."""
        source = groups[worst]
        receivers = {k: _Gpu(self.costs, groups[k]) for k in range(len(groups)) if k not in starved}
        if len(source) < 2 or not receivers:
            return None
        left = self.cost(source) * ((1.0 - STARVATION_THRESHOLD - share) / (1.0 - STARVATION_THRESHOLD) + MOVE_STEP)
        cover = group_cover(source)
        moved: dict[int, int] = {}  # position in source -> receiving GPU

        def best(j: int) -> tuple[float, int] | None:
            """The receiver of copy ``j``: least added cost per cost saved (a copy that would raise a receiver's
            rank class adds the most), a strained GPU last; and that ratio."""
            options = [(k in strained, (gpu.cost_with(source[j]) - gpu.cost) / max(saving[j], 1e-9), k)
                       for k, gpu in receivers.items() if source[j].index not in gpu.members]
            return min(options)[1:] if options else None

        saving = [self.cost([c], cover) for c in source]
        while len(moved) < len(source) - 1 and left > 0:
            picks = [(pick, j) for j in range(len(source)) if j not in moved and saving[j] <= left
                     and (pick := best(j)) is not None]
            if not picks and not moved:  # none fits the shortfall: the cheapest copy some GPU takes
                picks = [(pick, j) for j in sorted(range(len(source)), key=saving.__getitem__)[:1]
                         if (pick := best(j)) is not None]
            if not picks:
                break
            (_, k), j = min(picks, key=lambda p: (p[0][0], -saving[p[1]]))
            receivers[k].add(source[j])
            moved[j] = k
            left -= saving[j]
        if not moved:
            return None
        groups[worst] = [c for j, c in enumerate(source) if j not in moved]
        for k in set(moved.values()):
            groups[k] = receivers[k].copies
        return [worst, *sorted(set(moved.values()))]

    def empty_one(self, groups: list[list[Copy]], max_moves: int) -> tuple[Placement, list[list[Copy]]] | None:
        """Step 5 of the module doc: the least costly GPU emptied onto the others, repaired; None if the twin
        does not verify it."""
        victim = min(range(len(groups)), key=lambda k: self.cost(groups[k]))
        others = [list(g) for k, g in enumerate(groups) if k != victim]
        if any(all(any(x.index == c.index for x in g) for g in others) for c in groups[victim]):
            return None
        return self.repair(self.pack(others, groups[victim]), max_moves)


class _Gpu:
    """A GPU being packed: its copies, rank class and each cost curve's sum over them, kept up to date."""

    def __init__(self, costs: CostModel, copies: list[Copy]) -> None:
        self.costs = costs
        self.copies: list[Copy] = []
        self.members: set[int] = set()
        self.cover = 0
        self.sums = self._sums([], 0)
        for c in copies:
            self.add(c)

    @property
    def cost(self) -> float:
        return float(self.sums.max())

    def _sums(self, copies: list[Copy], cover: int) -> np.ndarray:
        if not copies:
            return np.zeros(len(self.costs.curve(cover or min(self.costs.curves)).cost))
        return self.costs.curve(cover).each(np.array([c.load_tok_s for c in copies])).sum(axis=1)

    def _sums_with(self, c: Copy) -> np.ndarray:
        cover = max(self.cover, rank_cover(c.rank))
        if cover == self.cover:
            return self.sums + self.costs.curve(cover).one(c.load_tok_s)
        return self._sums([*self.copies, c], cover)  # every copy at the higher rank class

    def cost_with(self, c: Copy) -> float:
        """The cost with ``c`` added (all copies at the higher rank class when ``c`` raises it)."""
        return float(self._sums_with(c).max())

    def each(self) -> np.ndarray:
        """curves x copies: what each cost curve of this GPU's rank class charges each copy."""
        return self.costs.curve(self.cover).each(np.array([c.load_tok_s for c in self.copies]))

    def add(self, c: Copy) -> None:
        self.sums = self._sums_with(c)
        self.cover = max(self.cover, rank_cover(c.rank))
        self.copies.append(c)
        self.members.add(c.index)

    def remove(self, j: int) -> Copy:
        c = self.copies.pop(j)
        self.members.discard(c.index)
        self.cover = group_cover(self.copies) if self.copies else 0
        self.sums = self._sums(self.copies, self.cover)
        return c


POLICIES.register("local-search")(LocalSearchPolicy)
