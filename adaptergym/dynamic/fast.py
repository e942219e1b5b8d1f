"""Fast mode: the fleet's plan changes and start-up delays, with service judged per replica by a closed-form or
learned scorer instead of the twin (for training agents; thousands of epochs per minute).

What it keeps of the twin: the plan's changes (:func:`plan_changes`), each replica's start-up time (a replica
serves from ``ready_s``: at once for the first plan, after the profile's start-up time after a cold start or a
restart; never if vLLM refuses its flags), and GPU-seconds (a removed replica is freed at once: no drain).

How it judges an epoch, from the rates that arrived in it. A replica up for a fraction ``f`` of the epoch gets,
while up, each of its adapters' rate divided by the sum of ``f`` over the adapter's replicas (the router only
sends to replicas that serve). The scorer (:mod:`adaptergym.scoring`: ``surrogate`` or ``analytic``) gives
each replica's served share of that load and whether it starves. An adapter is served its replicas' shares,
weighted by their ``f``, for the part of the epoch some replica of it is up; it is starved when that falls 10%
short of what it was offered, when at least 10% of its traffic goes to a replica the scorer calls starved, or
when it is offered traffic and no replica holds it. Latency (TTFT, SLO) is not modelled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from adaptergym.errors import ConfigError
from adaptergym.metrics import STARVATION_THRESHOLD
from adaptergym.profile import TwinProfile
from adaptergym.scoring import AnalyticScorer, GpuPlan, SurrogateScorer, load_surrogate_scorer
from adaptergym.twin import check_startup
from adaptergym.twin.fleet_plan import FleetPlan, PlanChanges, check_plan, plan_changes
from adaptergym.workload import LengthSpec

FAST_SCORERS = ("surrogate", "analytic")


def fast_scorer(name: str, profile: TwinProfile) -> SurrogateScorer | AnalyticScorer:
    """The per-replica scorer of fast mode.

    Raises:
        ConfigError: an unknown name, or ``surrogate`` for a profile without a trained surrogate.
    """
    if name == "analytic":
        return AnalyticScorer(profile)
    if name == "surrogate":
        scorer = load_surrogate_scorer(profile)
        if scorer is None:
            raise ConfigError(f"scorer='surrogate': no trained surrogate for profile {profile.name!r}; use "
                              "scorer='analytic' or 'twin'")
        return scorer
    raise ConfigError(f"scorer: {name!r} is not one of twin, {', '.join(FAST_SCORERS)}")


class FastFleet:
    """The fleet's plan and start-up timing, judged by a fast scorer (module doc).

    Args:
        profile: twin profile (start-up time and memory check; the scorer's model).
        scorer: ``"surrogate"`` or ``"analytic"``.
        adapter_ids, adapter_ranks: the workload's adapters.
        lengths: the length distribution the scorer assumes.
    """

    def __init__(self, profile: TwinProfile, scorer: str, adapter_ids: Sequence[str], adapter_ranks: np.ndarray,
                 lengths: LengthSpec) -> None:
        self.profile = profile
        self.scorer = fast_scorer(scorer, profile)
        self.ids = tuple(adapter_ids)
        self.ranks = {a: int(r) for a, r in zip(adapter_ids, adapter_ranks, strict=True)}
        self.lengths = lengths
        self.plan: dict = {}
        self.ready_s: dict[int, float] = {}

    def apply(self, plan: FleetPlan, t: float, warm: bool = False) -> PlanChanges:
        """Switch to ``plan`` at ``t`` (``warm``: new replicas serve at once); returns what changed."""
        check_plan(plan, self.ranks)
        changes = plan_changes(self.plan, plan, self.ranks, len(self.ids))
        for rid in changes.removals:
            del self.ready_s[rid]
        for rid in (*changes.cold_starts, *changes.restarts):
            config = plan[rid].config(self.ranks, len(self.ids)).resolved(self.profile)
            if not check_startup(self.profile, config).ok:
                self.ready_s[rid] = math.inf
            else:
                self.ready_s[rid] = t if warm else t + self.profile.startup_time.seconds(config.max_loras)
        self.plan = dict(plan)
        return changes

    def judge(self, start_s: float, end_s: float, rates: np.ndarray) -> PlanVerdict:
        """How the plan serves ``rates`` (req/s) over [start_s, end_s), given when each replica is up."""
        span = end_s - start_s
        up = {rid: min(1.0, max(0.0, (end_s - max(self.ready_s[rid], start_s)) / span)) for rid in self.plan}
        return judge_plan(self.scorer, self.plan, rates, self.ids, self.ranks, self.lengths, up)

    def states(self, t: float) -> Mapping[int, str]:
        return {rid: ("failed" if math.isinf(self.ready_s[rid]) else "serving" if self.ready_s[rid] <= t
                      else "starting") for rid in sorted(self.plan)}


@dataclass(frozen=True, slots=True)
class ReplicaVerdict:
    """One replica at the rates it gets while up: offered and served tokens/s (the scorer's), starved (the
    scorer says so, or it serves 10% short of its load), and the fraction ``up`` of the time it serves."""

    offered_tok_s: float
    served_tok_s: float
    starved: bool
    up: float


@dataclass(frozen=True, slots=True)
class PlanVerdict:
    """How a plan serves per-adapter rates: each adapter's served share and starvation, and each replica's."""

    served_share: np.ndarray
    starved: np.ndarray
    replicas: Mapping[int, ReplicaVerdict]


def judge_plan(scorer: SurrogateScorer | AnalyticScorer, plan: FleetPlan, rates: np.ndarray, adapter_ids: Sequence[str],
               ranks: Mapping[str, int], lengths: LengthSpec, up: Mapping[int, float] | None = None) -> PlanVerdict:
    """Judge ``plan`` at per-adapter ``rates`` (req/s, in ``adapter_ids`` order) with a per-replica ``scorer``
    (module doc); ``up``: each replica's serving fraction of the time (default: all serve all along)."""
    up = {rid: 1.0 for rid in plan} if up is None else up
    position = adapter_positions(tuple(adapter_ids)).__getitem__
    n = len(adapter_ids)
    held = {rid: np.fromiter(map(position, spec.adapters), np.int64, len(spec.adapters))
            for rid, spec in plan.items()}  # adapter indices of each replica, in plan order
    every = np.concatenate([np.zeros(0, np.int64), *held.values()])
    ups = np.repeat([up[rid] for rid in held], [h.size for h in held.values()])
    weight_sum, coverage = np.bincount(every, ups, n), np.zeros(n)
    np.maximum.at(coverage, every, ups)
    serving = [rid for rid in sorted(plan) if up[rid] > 0 and plan[rid].adapters]
    served_share, starved_traffic = np.zeros(n), np.zeros(n)
    replicas = {rid: ReplicaVerdict(0.0, 0.0, False, up[rid]) for rid in plan}
    if serving:
        copies = np.concatenate([held[rid] for rid in serving])  # one entry per (serving replica, adapter)
        sizes = [held[rid].size for rid in serving]
        bounds = np.cumsum([0, *sizes])
        rank_of = np.array([ranks[a] for a in adapter_ids])
        gpus = []
        for k, rid in enumerate(serving):
            config = plan[rid].config(ranks, n)
            gpus.append(GpuPlan(tuple(range(bounds[k], bounds[k + 1])), config.max_loras, int(config.max_lora_rank)))
        score = scorer.score_rates(rates[copies] / weight_sum[copies], rank_of[copies], lengths, gpus)
        ratio = score.served_ratio
        is_starved = score.starved | (ratio < 1.0 - STARVATION_THRESHOLD - 1e-9)
        for j, rid in enumerate(serving):
            replicas[rid] = ReplicaVerdict(float(score.offered_tok_s[j]), float(score.served_tok_s[j]),
                                           bool(is_starved[j]), up[rid])
        share = np.repeat([up[rid] for rid in serving], sizes) / weight_sum[copies]
        served_share = np.bincount(copies, share * np.repeat(ratio, sizes), n)
        starved_traffic = np.bincount(copies, share * np.repeat(is_starved, sizes), n)
    served_share *= coverage
    starved = (rates > 0) & ((served_share < 1.0 - STARVATION_THRESHOLD - 1e-9)
                             | (starved_traffic >= STARVATION_THRESHOLD) | (coverage == 0))
    return PlanVerdict(served_share, starved, replicas)


@lru_cache(maxsize=8)
def adapter_positions(adapter_ids: tuple[str, ...]) -> dict[str, int]:
    """Each adapter's index in ``adapter_ids`` (built once per workload, not once per judged epoch)."""
    return {a: i for i, a in enumerate(adapter_ids)}
