"""Heuristic placements: round-robin with vLLM's defaults, first-fit decreasing, rank-aware packing, random.

None of them models the twin; each is a family of placements indexed by one knob (a GPU count or a fill
level), and the policy returns the member with the fewest GPUs that the twin verifies starvation-free
(:func:`baselines.common.first_verified`). Adapters hotter than one GPU are replicated first
(:func:`baselines.common.copies_needed`) so that every family reaches a starvation-free member.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adaptergym.placement import VERIFY_DURATION_S, Placement
from adaptergym.profile import TwinProfile
from adaptergym.server_capacity import rank_cover
from adaptergym.workload import WorkloadSpec
from baselines import POLICIES
from baselines.bound import lower_bound_gpus
from baselines.capacity import CapacityModel, servable_model
from baselines.common import (
    Copy,
    Verifier,
    check_objective,
    copies_needed,
    first_fit_decreasing,
    first_verified,
    make_copies,
    slots_for,
    to_placement,
)

#: vLLM's default ``--max-loras`` (and ``--max-cpu-loras`` defaults to it).
VLLM_DEFAULT_MAX_LORAS = 1
#: Share of an admissible GPU (capacity model) one copy of a hot adapter may take in the heuristics.
HOT_FILL = 0.9
#: Fill levels the packing heuristics try, from the capacity model's admissible load down.
FILLS = tuple(np.round(np.arange(1.0, 0.04, -0.05), 2))


def _gpu_counts(workload: WorkloadSpec, profile: TwinProfile, copies: list[Copy]) -> list[int]:
    """GPU counts to search: from the lower bound (and the most copies of one adapter) to one GPU per copy."""
    most = max(np.bincount([c.index for c in copies]))
    start = max(lower_bound_gpus(workload, profile), int(most))
    return list(range(start, max(start, len(copies)) + 1))


def _hot_copies(workload: WorkloadSpec, model: CapacityModel) -> list[Copy]:
    """The workload's adapters, hot ones replicated so each copy takes at most ``HOT_FILL`` of a GPU."""
    return make_copies(workload, model, copies_needed(workload, model, HOT_FILL))


@dataclass
class RoundRobinPolicy:
    """vLLM out of the box: copies dealt in workload order to ``N`` GPUs (copy ``k`` to GPU ``k mod N``),
    every server with vLLM's default ``max_loras`` 1 and ``max_cpu_loras`` 1; ``N`` the fewest that verifies.
    Dealing spreads load evenly, so the ``latency`` objective gets the same placement."""

    objective: str = "gpus"
    verify_s: float = VERIFY_DURATION_S
    name: str = "round-robin"

    def __post_init__(self) -> None:
        check_objective(self.name, self.objective)

    def place(self, workload: WorkloadSpec, profile: TwinProfile, *, seed: int = 0) -> Placement:
        copies = _hot_copies(workload, servable_model(profile, workload))
        verifier = Verifier(workload, profile, seed, self.verify_s)

        def deal(n: int) -> Placement:
            groups: list[list[Copy]] = [[] for _ in range(n)]
            for k, c in enumerate(copies):
                groups[k % n].append(c)
            return to_placement(groups, [VLLM_DEFAULT_MAX_LORAS] * n, VLLM_DEFAULT_MAX_LORAS)

        return first_verified(_gpu_counts(workload, profile, copies), deal, verifier.ok, self.name)


@dataclass
class RandomPolicy:
    """Each copy on a uniformly random one of ``N`` GPUs (copies of one adapter on distinct GPUs), every
    adapter in a slot; ``N`` the fewest that verifies. The draw depends on ``seed`` only."""

    objective: str = "gpus"
    verify_s: float = VERIFY_DURATION_S
    name: str = "random"

    def __post_init__(self) -> None:
        check_objective(self.name, self.objective)

    def place(self, workload: WorkloadSpec, profile: TwinProfile, *, seed: int = 0) -> Placement:
        model = servable_model(profile, workload)
        copies = _hot_copies(workload, model)
        verifier = Verifier(workload, profile, seed, self.verify_s)

        def draw(n: int) -> Placement:
            rng = np.random.default_rng([seed, n])
            groups: list[list[Copy]] = [[] for _ in range(n)]
            for index in dict.fromkeys(c.index for c in copies):
                mine = [c for c in copies if c.index == index]
                for c, g in zip(mine, rng.choice(n, len(mine), replace=False), strict=True):
                    groups[g].append(c)
            return to_placement(groups, [slots_for(model, g) if g else 1 for g in groups])

        return first_verified(_gpu_counts(workload, profile, copies), draw, verifier.ok, self.name)


@dataclass
class FirstFitDecreasingPolicy:
    """First-fit decreasing by offered tokens/s against one per-GPU capacity, blind to ranks: ``fill`` x the
    admissible load of a GPU at the workload's largest rank; every adapter in a slot; ``fill`` the largest
    that verifies."""

    objective: str = "gpus"
    verify_s: float = VERIFY_DURATION_S
    name: str = "first-fit-decreasing"

    def __post_init__(self) -> None:
        check_objective(self.name, self.objective, ("gpus",))

    def place(self, workload: WorkloadSpec, profile: TwinProfile, *, seed: int = 0) -> Placement:
        model = servable_model(profile, workload)
        verifier = Verifier(workload, profile, seed, self.verify_s)

        def one(count: int) -> float:
            return model.admissible_tok_s(workload.max_rank, count)

        def pack(fill: float) -> Placement:
            copies = make_copies(workload, model, copies_needed(workload, model, fill * HOT_FILL))
            groups = first_fit_decreasing(copies, lambda cover, count: fill * one(count), model)
            return to_placement(groups, [slots_for(model, g) for g in groups])

        return first_verified(FILLS, pack, verifier.ok, self.name)


@dataclass
class RankAwarePolicy:
    """Rank-aware bin packing in the style of LoRAServe: adapters grouped by the vLLM ``max_lora_rank`` that
    covers them, each group packed first-fit decreasing on its own GPUs against ``fill`` x the admissible load
    at that rank (so every GPU's ``max_lora_rank``, and the LoRA kernels' padding, stays as small as its
    adapters allow); every adapter in a slot; ``fill`` the largest that verifies."""

    objective: str = "gpus"
    verify_s: float = VERIFY_DURATION_S
    name: str = "rank-aware"

    def __post_init__(self) -> None:
        check_objective(self.name, self.objective, ("gpus",))

    def place(self, workload: WorkloadSpec, profile: TwinProfile, *, seed: int = 0) -> Placement:
        model = servable_model(profile, workload)
        verifier = Verifier(workload, profile, seed, self.verify_s)

        def pack(fill: float) -> Placement:
            copies = make_copies(workload, model, copies_needed(workload, model, fill * HOT_FILL))
            groups: list[list[Copy]] = []
            for cover in sorted({rank_cover(c.rank) for c in copies}):
                mine = [c for c in copies if rank_cover(c.rank) == cover]
                groups += first_fit_decreasing(mine, lambda k, count: fill * model.admissible_tok_s(k, count), model)
            return to_placement(groups, [slots_for(model, g) for g in groups])

        return first_verified(FILLS, pack, verifier.ok, self.name)


POLICIES.register("round-robin")(RoundRobinPolicy)
POLICIES.register("random")(RandomPolicy)
POLICIES.register("first-fit-decreasing")(FirstFitDecreasingPolicy)
POLICIES.register("rank-aware")(RankAwarePolicy)
