"""The published pipeline: pack adapters with the tree surrogate, then verify with the twin and repair.

1. **Copies.** An adapter hotter than 90% of what one GPU of its rank may take (the capacity model,
   :mod:`baselines.capacity`) is replicated up front: ``ceil`` as many copies, traffic split evenly.
2. **Pack** (next-fit, as the paper's greedy). Copies in decreasing order of ``max_lora_rank`` cover, then of
   load (so GPUs keep small ranks, and the busiest adapters share GPUs with few others); the current GPU takes
   the next copies as long as the surrogate, at its best ``max_loras``
   (:meth:`adaptergym.surrogate.Surrogate.best_levels`), predicts it serves them: starvation probability below
   0.5 and predicted throughput at least 90% of the offered load. Every candidate prefix of one GPU is asked
   in one batched call; the first one predicted to fail closes the GPU.
3. **Verify and repair.** Each GPU is simulated alone on its share (:func:`adaptergym.placement.verify`).
   A starved GPU is split in two (its copies dealt alternately by decreasing load), or, when it holds one copy,
   that adapter gets one more copy (its traffic is re-split); ``max_loras`` of changed GPUs is chosen again by
   the surrogate, and only they are simulated again. Repeat until no GPU starves.
4. **Shrink.** One GPU fewer at a time, the copies re-spread evenly, while the twin starves none. A GPU the
   surrogate's ``max_loras`` starves gets the nearest other levels tried by the twin
   (:data:`LEVEL_RETRIES` of them): near the edge the surrogate tends to give every adapter a slot, where
   fewer slots serve more.

With ``objective="latency"`` the packed GPU count is kept and the copies are re-spread over that many GPUs,
each to the GPU whose load relative to its capacity stays lowest (longest-processing-time first), then
verified and repaired the same way: the same GPUs, no hot spot, so a lower p99 TTFT.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from adaptergym.errors import ConfigError
from adaptergym.metrics import STARVATION_THRESHOLD
from adaptergym.placement import VERIFY_DURATION_S, Placement
from adaptergym.profile import TwinProfile
from adaptergym.server_capacity import rank_cover
from adaptergym.workload import WorkloadSpec
from baselines import POLICIES
from baselines.capacity import CapacityModel, servable_model
from baselines.common import (
    Copy,
    Verifier,
    check_objective,
    copies_needed,
    group_cover,
    make_copies,
    to_placement,
    twin_level,
)

if TYPE_CHECKING:
    from adaptergym.surrogate import Surrogate

log = logging.getLogger(__name__)

#: Share of an admissible GPU (capacity model) a copy of a hot adapter may take before packing.
HOT_FILL = 0.9
#: Candidate prefixes of one GPU go up to this many times its admissible load (capacity model).
PREFIX_REACH = 1.5
#: The surrogate's verdict: starved at this probability or above.
STARVED_PROBABILITY = 0.5
#: When shrinking, how many other ``max_loras`` levels the twin tries on a GPU the surrogate's level starves.
LEVEL_RETRIES = 4


@dataclass
class GreedyPolicy:
    """Surrogate-guided greedy packing with twin verification and repair (module doc).

    Args:
        objective: ``"gpus"`` (fewest GPUs) or ``"latency"`` (same GPUs, load spread evenly).
        model: the surrogate family, ``"accurate"`` or ``"tree"``.
        verify: simulate and repair (False: the surrogate's packing alone, as fast as it gets).
        verify_s: simulated seconds of each GPU's verification.
        max_rounds: repair rounds before giving up.
    """

    objective: str = "gpus"
    model: str = "accurate"
    verify: bool = True
    verify_s: float = VERIFY_DURATION_S
    max_rounds: int = 50
    name: str = "greedy"
    repairs: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        check_objective(self.name, self.objective)

    def place(self, workload: WorkloadSpec, profile: TwinProfile, *, seed: int = 0) -> Placement:
        from adaptergym.surrogate import load_surrogate, regenerate_command

        surrogate = load_surrogate(profile)
        if surrogate is None:
            raise ConfigError(f"greedy: no surrogate ships for profile {profile.name!r}; generate its dataset with "
                              f"`{regenerate_command(profile.name)}`, or pick a policy without one (e.g. exact)")
        capacity = servable_model(profile, workload)
        copies = make_copies(workload, capacity, copies_needed(workload, capacity, HOT_FILL))
        packer = _Packer(surrogate, self.model, capacity, workload, copies)
        groups = packer.pack()
        if self.objective == "latency":
            groups = spread(copies, len(groups), capacity)
        levels = packer.levels(groups)
        if not self.verify:
            return to_placement(groups, levels)
        return self._repair(groups, levels, packer, Verifier(workload, profile, seed, self.verify_s))

    def _repair(self, groups: list[list[Copy]], levels: list[int], packer: _Packer,
                verifier: Verifier) -> Placement:
        """Split or replicate starved GPUs until the twin starves none (module doc, step 3)."""
        self.repairs = 0
        for _ in range(self.max_rounds):
            placement = to_placement(groups, levels)
            starved = verifier.starved(placement)
            if not any(starved):
                return self._shrink(groups, levels, packer, verifier) if self.objective == "gpus" else placement
            kept = [g for g, s in zip(groups, starved, strict=True) if not s]
            alone: dict[int, list[Copy]] = {}  # adapter -> its starved single copies
            for group in (g for g, s in zip(groups, starved, strict=True) if s):
                self.repairs += 1
                if len(group) > 1:
                    ordered = sorted(group, key=lambda c: -c.load_tok_s)
                    kept += [ordered[0::2], ordered[1::2]]
                else:
                    alone.setdefault(group[0].index, []).append(group[0])
            for starved_copies in alone.values():
                kept = replicate(groups, kept, starved_copies)
            groups = kept
            levels = packer.levels(groups)
        raise ConfigError(f"greedy: still starved after {self.max_rounds} repair rounds; raise max_rounds")


    def _shrink(self, groups: list[list[Copy]], levels: list[int], packer: _Packer,
                verifier: Verifier) -> Placement:
        """One GPU fewer at a time, copies re-spread (:func:`spread`) and ``max_loras`` chosen again (by the
        surrogate, then by the twin where that starves: :func:`_twin_levels`), while the twin still starves none:
        the surrogate's packing is only as tight as its errors allow, and the twin has the last word (module
        doc, step 4)."""
        best = to_placement(groups, levels)
        for gpus in range(len(groups) - 1, 0, -1):
            trial = spread(packer.copies, gpus, packer.capacity)
            if len(trial) > gpus:
                break
            placement = _twin_levels(to_placement(trial, packer.levels(trial)), verifier, packer.capacity.max_slots)
            if placement is None:
                break
            best = placement
        return best


def _twin_levels(placement: Placement, verifier: Verifier, max_slots: dict[int, int]) -> Placement | None:
    """``placement`` with each GPU the twin starves moved to the nearest other ``max_loras`` level that it does
    not (:func:`baselines.common.twin_level`, :data:`LEVEL_RETRIES` tried per GPU); None if some GPU starves at
    every level tried."""
    copies = placement.copies()
    gpus = []
    for gpu in placement.assignments:
        kept = twin_level(gpu, copies, verifier, LEVEL_RETRIES, max_slots)
        if kept is None:
            return None
        gpus.append(kept)
    return Placement(tuple(gpus))


def replicate(before: list[list[Copy]], kept: list[list[Copy]], starved: list[Copy]) -> list[list[Copy]]:
    """One more copy of an adapter for each of its ``starved`` single-copy GPUs: its traffic is re-split
    evenly over all its copies (those in ``kept`` shrink) and the starved GPUs come back with a new GPU each."""
    first = starved[0]
    old = sum(c.index == first.index for g in before for c in g)
    total = old + len(starved)
    new = Copy(first.index, first.id, first.rank, first.load_tok_s * old / total)
    updated = [[new if c.index == first.index else c for c in g] for g in kept]
    return updated + [[new] for _ in range(total - sum(c.index == first.index for g in updated for c in g))]


class _Packer:
    """The surrogate's questions about one workload: does this set of copies fit a GPU, at which level."""

    def __init__(self, surrogate: Surrogate, model: str, capacity: CapacityModel, workload: WorkloadSpec,
                 copies: list[Copy]) -> None:
        self.surrogate = surrogate
        self.copies = copies
        self.model = model
        self.capacity = capacity
        self.lengths = workload.lengths

    def _arrays(self, group: list[Copy]) -> tuple[np.ndarray, np.ndarray]:
        share = self.capacity.tokens_per_request
        return np.array([c.load_tok_s / share for c in group]), np.array([c.rank for c in group])

    def levels(self, groups: list[list[Copy]]) -> list[int]:
        """The surrogate's best ``max_loras`` for each group, in one call."""
        chosen, _, _ = self.surrogate.best_levels([self._arrays(g) for g in groups], self.lengths, self.model)
        return [int(x) for x in chosen]

    def _fits(self, candidates: list[list[Copy]]) -> np.ndarray:
        """Whether the surrogate predicts each candidate group served (not starved, >= 90% of its load)."""
        _, served, prob = self.surrogate.best_levels([self._arrays(g) for g in candidates], self.lengths, self.model)
        offered = np.array([sum(c.load_tok_s for c in g) for g in candidates])
        return (prob < STARVED_PROBABILITY) & (served >= (1.0 - STARVATION_THRESHOLD) * offered)

    def pack(self) -> list[list[Copy]]:
        """Next-fit in (rank cover, load) decreasing order; each GPU's prefixes asked in one call."""
        order = sorted(self.copies, key=lambda c: (-rank_cover(c.rank), -c.load_tok_s))
        groups: list[list[Copy]] = []
        i = 0
        while i < len(order):
            reach = PREFIX_REACH * self.capacity.admissible_tok_s(order[i].rank)
            end, load, seen = i, 0.0, set()
            while end < len(order) and order[end].index not in seen and (load < reach or end == i):
                seen.add(order[end].index)
                load += order[end].load_tok_s
                end += 1
            prefixes = [order[i:k] for k in range(i + 1, end + 1)]
            fits = self._fits(prefixes)
            take = len(prefixes) if fits.all() else max(1, int(np.argmin(fits)))
            groups.append(order[i:i + take])
            i += take
        return groups


def spread_into(groups: list[list[Copy]], copies: list[Copy], capacity: CapacityModel,
                weights: Sequence[float] | None = None) -> list[list[Copy]] | None:
    """Add ``copies`` to ``groups`` (in place), largest first, each to the GPU left least loaded relative to its
    capacity (at its ``max_lora_rank`` and adapter count once it joins) times its weight (default 1: an even
    spread; the ``optuna`` policy searches uneven ones), never two copies of one adapter on a GPU; None if a
    copy has nowhere to go."""
    scale = list(weights) if weights is not None else [1.0] * len(groups)
    loads = [sum(c.load_tok_s for c in g) for g in groups]
    covers = [group_cover(g) if g else 0 for g in groups]
    members = [{c.index for c in g} for g in groups]
    for c in sorted(copies, key=lambda c: -c.load_tok_s):
        options = [((loads[k] + c.load_tok_s)
                    / (scale[k] * capacity.admissible_tok_s(max(covers[k], c.rank), len(groups[k]) + 1)), k)
                   for k in range(len(groups)) if c.index not in members[k]]
        if not options:
            return None
        k = min(options)[1]
        groups[k].append(c)
        loads[k] += c.load_tok_s
        covers[k] = max(covers[k], rank_cover(c.rank))
        members[k].add(c.index)
    return groups


def spread(copies: list[Copy], gpus: int, capacity: CapacityModel) -> list[list[Copy]]:
    """Copies over ``gpus`` GPUs (more only if an adapter has more copies), balanced by :func:`spread_into`."""
    most = max(np.bincount([c.index for c in copies]))
    return [g for g in spread_into([[] for _ in range(max(gpus, int(most)))], copies, capacity) or [] if g]


POLICIES.register("greedy")(GreedyPolicy)
