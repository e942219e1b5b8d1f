"""``DynamicFleet``: a fleet of vLLM replicas over a time-varying workload, driven one decision epoch at a time.

    from adaptergym.dynamic import DynamicFleet, ReplicaSpec

    fleet = DynamicFleet("w.json", seed=0, epoch_s=300.0)          # scorer="twin" (default), "surrogate", "analytic"
    while not fleet.done:
        plan = {0: ReplicaSpec(fleet.adapter_ids[:40], max_loras=16),  # replica id -> what it serves
                1: ReplicaSpec(fleet.adapter_ids[40:], max_loras=16)}
        result = fleet.step(plan)                                     # EpochResult: GPU-s, starved, SLO, p99, ...
    print(fleet.summary())                                            # EpisodeSummary of the whole episode

A step applies the plan at the epoch's start, with vLLM's costs (:mod:`adaptergym.twin.online_fleet`: runtime
adapter loads, restarts and cold starts at the profile's start-up time, draining removals), then serves the
epoch's requests. The first plan is the fleet the episode starts with: it serves at once and costs no change.
What a policy may look at before deciding: :meth:`observed_counts` / :meth:`observed_rates` (what arrived in past
epochs, e.g. for an ``adaptergym.forecast`` forecaster), :attr:`results`
(past epochs, per replica), :attr:`plan`; the oracle and the static baselines also read :meth:`true_rates`.

Scorers: ``"twin"`` simulates every request (latency, SLO and queues included); ``"surrogate"`` and
``"analytic"`` are fast mode (:mod:`adaptergym.dynamic.fast`): the same plan changes and start-up delays, each
replica judged by a per-GPU model, no latency. Each :class:`EpochResult` says which scorer produced it. The
same workload, seed, plans and scorer give identical results.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from adaptergym.dynamic.accounting import (
    DEFAULT_SLO_TTFT_MS,
    EpisodeSummary,
    EpochResult,
    ReplicaEpoch,
    summarize_episode,
    twin_epoch_figures,
)
from adaptergym.dynamic.fast import FAST_SCORERS, FastFleet
from adaptergym.dynamic.traffic import Traffic
from adaptergym.errors import ConfigError
from adaptergym.profile import TwinProfile, load_profile
from adaptergym.server_capacity import mean_request_tokens
from adaptergym.twin.fleet_plan import FleetPlan, PlanChanges
from adaptergym.twin.online_fleet import OnlineFleet
from adaptergym.workload import RequestBatch, WorkloadSpec

SCORERS = ("twin", *FAST_SCORERS)


class DynamicFleet:
    """A fleet over a workload, one decision epoch per :meth:`step` (module doc).

    Args:
        workload: a workload spec, a workload JSON / trace CSV path, or drawn requests.
        profile: twin profile (object, shipped name, model name or path; default the shipped default).
        seed: seeds the request draw.
        epoch_s: decision epoch, s (at most the workload's duration; the last epoch may be shorter).
        scorer: ``"twin"``, ``"surrogate"`` or ``"analytic"``.
        router: ``"even"`` or ``"least-loaded"`` over the replicas serving an adapter (twin scorer).
        slo_ttft_ms: the TTFT objective the SLO share counts against, ms.
        season_s: the workload's daily cycle, s, if known (``Scenario.season_s``), for seasonal forecasters.
        counts_only: fast scorers only: draw per-epoch arrival counts instead of requests where that is exact
            (Poisson arrivals; :class:`adaptergym.dynamic.traffic.Traffic`), for environments that reset often.

    Raises:
        ConfigError: a bad epoch, scorer, router or SLO.
    """

    def __init__(self, workload: WorkloadSpec | RequestBatch | str | Path, profile: TwinProfile | str | None = None,
                 *, seed: int = 0, epoch_s: float = 300.0, scorer: str = "twin", router: str = "even",
                 slo_ttft_ms: float = DEFAULT_SLO_TTFT_MS, season_s: float | None = None,
                 counts_only: bool = False) -> None:
        if scorer not in SCORERS:
            raise ConfigError(f"scorer: {scorer!r} is not one of {', '.join(SCORERS)}")
        if counts_only and scorer == "twin":
            raise ConfigError("counts_only: the twin scorer simulates every request; use it with a fast scorer")
        if not slo_ttft_ms > 0:
            raise ConfigError(f"slo_ttft_ms: {slo_ttft_ms!r} must be a number of milliseconds > 0")
        self.profile = load_profile(profile)
        self.traffic = Traffic(workload, seed, epoch_s, counts_only)
        self.adapter_ids: tuple[str, ...] = self.traffic.adapter_ids
        self.adapter_ranks: np.ndarray = self.traffic.adapter_ranks
        self.epoch_s = float(epoch_s)
        self.scorer = scorer
        self.slo_ttft_ms = float(slo_ttft_ms)
        self.season_s = season_s
        self.epoch = 0  # index of the next epoch to run
        self.plan: dict = {}
        self.results: list[EpochResult] = []
        self._twin = OnlineFleet(self.profile, self.traffic.requests, router) if scorer == "twin" else None
        self._fast = None if self._twin else FastFleet(self.profile, scorer, self.adapter_ids, self.adapter_ranks,
                                                       self.traffic.lengths)

    # ------------------------------------------------------------------ what a policy may look at
    @property
    def epochs(self) -> int:
        return self.traffic.epochs

    @property
    def duration_s(self) -> float:
        return self.traffic.duration_s

    @property
    def done(self) -> bool:
        return self.epoch >= self.epochs

    @property
    def lengths(self):
        """The request length distribution planners should assume (a ``LengthSpec``)."""
        return self.traffic.lengths

    def bounds(self, epoch: int | None = None) -> tuple[float, float]:
        """[start, end) of ``epoch`` (default: the coming one), s."""
        return self.traffic.bounds(self.epoch if epoch is None else epoch)

    def observed_counts(self) -> np.ndarray:
        """Arrivals of each adapter in each epoch run so far: shape (epochs run, adapters)."""
        return self.traffic.arrivals[: self.epoch].copy()

    def observed_rates(self) -> np.ndarray:
        """Arrival rates seen so far, req/s: shape (epochs run, adapters)."""
        return self.traffic.observed[: self.epoch].copy()

    def true_rates(self, epoch: int | None = None) -> np.ndarray:
        """The workload's mean rate of each adapter over ``epoch`` (default: the coming one), req/s. Knowing the
        future: for the oracle and the static baselines only."""
        return self.traffic.true_rates(self.epoch if epoch is None else epoch)

    def rate_table(self) -> np.ndarray:
        """:meth:`true_rates` of every epoch: shape (epochs, adapters)."""
        return np.stack([self.traffic.true_rates(k) for k in range(self.epochs)])

    # ------------------------------------------------------------------ stepping
    def step(self, plan: FleetPlan) -> EpochResult:
        """Apply ``plan`` at the coming epoch's start and serve the epoch; returns what it cost and served.

        Raises:
            ConfigError: the episode is over, or the plan is malformed (unknown adapter, flags vLLM rejects).
        """
        if self.done:
            raise ConfigError(f"step: the episode is over ({self.epochs} epochs); start a new DynamicFleet")
        start, end = self.bounds()
        warm = self.epoch == 0
        rates = self.traffic.observed[self.epoch]
        if self._twin is not None:
            result = self._twin_epoch(plan, warm, start, end, rates)
        else:
            result = self._fast_epoch(plan, warm, start, end, rates)
        self.plan = dict(plan)
        self.results.append(result)
        self.epoch += 1
        return result

    def _twin_epoch(self, plan: FleetPlan, warm: bool, start: float, end: float, rates: np.ndarray) -> EpochResult:
        fleet = self._twin
        changes = fleet.apply(plan, warm=warm)
        fleet.run_until(end)
        served = np.zeros(len(self.adapter_ids), bool)
        for replica in fleet.replicas.values():
            if replica.engine is not None:
                served[list(replica.adapters)] = True
        figures = twin_epoch_figures(fleet.snapshot(), start, end, len(self.adapter_ids), served, self.slo_ttft_ms)
        replicas = tuple(
            ReplicaEpoch(rid, r.state, len(r.adapters), r.config.max_loras, int(r.config.max_lora_rank or 0),
                         figures.replica_offered.get(rid, 0.0), figures.replica_served.get(rid, 0.0),
                         figures.replica_starved.get(rid, False), r.engine.n_waiting if r.engine else 0)
            for rid, r in sorted(fleet.replicas.items()))
        return EpochResult(self.epoch, start, end, "twin", len(plan), fleet.gpu_seconds(start, end), rates,
                           figures.offered_tok_s, figures.served_tok_s, figures.starved,
                           PlanChanges() if warm else changes, replicas,
                           int(self.traffic.arrivals[self.epoch].sum()), figures.slo_judged, figures.slo_met,
                           figures.p99_ttft_ms, fleet.held())

    def _fast_epoch(self, plan: FleetPlan, warm: bool, start: float, end: float, rates: np.ndarray) -> EpochResult:
        fleet = self._fast
        changes = fleet.apply(plan, start, warm=warm)
        verdict = fleet.judge(start, end, rates)
        offered = rates * mean_request_tokens(self.lengths)
        states = fleet.states(end)
        replicas = []
        for rid, spec in sorted(plan.items()):
            config = spec.config(fleet.ranks, len(self.adapter_ids))
            judged = verdict.replicas[rid]
            replicas.append(ReplicaEpoch(rid, states[rid], len(spec.adapters), config.max_loras,
                                         int(config.max_lora_rank or self.profile.engine.max_lora_rank),
                                         judged.offered_tok_s, judged.served_tok_s, judged.starved))
        return EpochResult(self.epoch, start, end, self.scorer, len(plan), len(plan) * (end - start), rates,
                           offered, offered * verdict.served_share, verdict.starved, PlanChanges() if warm else changes,
                           tuple(replicas), int(self.traffic.arrivals[self.epoch].sum()))

    def summary(self) -> EpisodeSummary:
        """Totals over the epochs run so far."""
        final = self._twin.snapshot() if self._twin is not None else None
        return summarize_episode(self.results, final, self.slo_ttft_ms)
