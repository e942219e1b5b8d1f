"""Scorers: what an environment asks at the end of an episode, "how does this placement serve its load?".

All return a :class:`FleetScore` with the same fields, so an environment's reward does not depend on which one
scored it (``info["scorer"]`` says which did).

``"twin"`` runs the Digital Twin for ``window_s`` simulated seconds, with requests drawn from the episode's
seed. After the first 20% of the window it compares, per GPU, the tokens of requests finishing with those
of requests arriving (in a window of minutes, requests still running at the end would otherwise count as
unserved), and calls the GPU starved when it served less than 90% and a request that arrived before the
last 10% of the window has not started (:func:`steady_state`). Short windows are conservative: a GPU near
its capacity, or with far fewer slots than adapters, can take minutes to settle and is called starved until
it does; a larger ``window_s`` settles more, at proportional cost.

``"surrogate"`` asks the learned per-GPU model of ``adaptergym.surrogate`` (fast mode; no latency); whether
vLLM starts is still the twin's exact memory check. ``"analytic"`` (fast mode while no surrogate is trained)
is a closed-form capacity from the profile's step-time model, optimistic at saturation and blind to adapter
loading and latency (:class:`AnalyticScorer`); it is only used when asked for by name. ``"auto"`` is the
surrogate when one is trained for the profile and the objective needs no latency, else the twin.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from adaptergym.errors import ConfigError
from adaptergym.metrics import STARVATION_THRESHOLD, finite_or_none, summarize
from adaptergym.profile import TwinProfile
from adaptergym.server_capacity import mean_lengths, mean_request_tokens
from adaptergym.simulation import draw_requests
from adaptergym.twin import ReplicaPlan, RunRecord, ServerConfig, check_startup, simulate_fleet
from adaptergym.twin.step_time import StepTimer
from adaptergym.workload import LengthSpec, WorkloadSpec

SCORERS = ("auto", "twin", "surrogate", "analytic")


@dataclass(frozen=True, slots=True)
class GpuPlan:
    """One GPU of a decision: which adapters (indices into the workload's adapters) and its server flags."""

    adapters: tuple[int, ...]
    max_loras: int
    max_lora_rank: int

    def config(self) -> ServerConfig:
        """vLLM flags of this GPU; the CPU cache holds all its adapters, as in the papers' runs."""
        return ServerConfig(max_loras=self.max_loras, max_cpu_loras=max(self.max_loras, len(self.adapters)),
                            max_lora_rank=self.max_lora_rank)


@dataclass(frozen=True, slots=True)
class FleetScore:
    """How each GPU of a placement serves its load (arrays have one entry per plan, in plan order)."""

    scorer: str
    startup: tuple[str, ...]
    offered_tok_s: np.ndarray
    served_tok_s: np.ndarray
    starved: np.ndarray
    p99_ttft_ms: float | None = None  # fleet p99 TTFT; None when the scorer does not predict it or none finished
    metrics: dict[str, Any] = field(default_factory=dict)  # the twin's fleet Metrics over the window

    @property
    def served_ratio(self) -> np.ndarray:
        """Served / offered tokens per GPU (1 for a GPU offered nothing)."""
        offered = self.offered_tok_s
        return np.where(offered > 0, self.served_tok_s / np.maximum(offered, 1e-12), 1.0)


class Scorer(Protocol):
    """Scores a list of GPU plans over a workload."""

    name: str
    predicts_latency: bool

    def score(self, workload: WorkloadSpec, plans: Sequence[GpuPlan], seed: int) -> FleetScore: ...


def starved(served_tok_s: np.ndarray, offered_tok_s: np.ndarray) -> np.ndarray:
    """The papers' rule, per GPU: served falls at least 10% short of offered (nothing offered: not starved)."""
    return (offered_tok_s > 0) & (served_tok_s < (1.0 - STARVATION_THRESHOLD) * offered_tok_s + 1e-9)


@dataclass(frozen=True, slots=True)
class SteadyState:
    """One replica over a short window, after its warm-up: offered and served tokens/s, and whether a backlog
    built up (a request that arrived before the last 10% of the window had not started by its end)."""

    offered_tok_s: float
    served_tok_s: float
    backlog: bool


def steady_state(record: RunRecord, warmup_s: float) -> SteadyState:
    """Offered and served load of one replica after ``warmup_s``, for a window of minutes rather than hours.

    Offered counts the tokens of requests arriving in ``[warmup_s, duration)``, served those of requests
    finishing in it: in a window of minutes, requests still running at the end are a sizeable share of a
    well-served GPU's load (a ShareGPT request lasts seconds), which the hour-long runs' ``finished /
    arrived`` would count as unserved; completions against arrivals measure the same thing in steady state.
    With few requests that ratio is noisy (one request arriving just before the end weighs a lot), hence
    ``backlog``: in a queue that starts empty, the request arriving at 90% of the window has started by its
    end exactly when the GPU serves at least 90% of its load, the papers' starvation threshold.
    """
    span = record.duration_s - warmup_s
    tokens = record.input_tokens + record.output_tokens
    arrived = (record.arrival_s >= warmup_s) & (record.arrival_s < record.duration_s)
    finished = np.isfinite(record.finish_s) & (record.finish_s >= warmup_s) & (record.finish_s <= record.duration_s)
    late = record.arrival_s < (1.0 - STARVATION_THRESHOLD) * record.duration_s
    waiting = ~(np.isfinite(record.first_token_s) & (record.first_token_s <= record.duration_s))
    return SteadyState(float(tokens[arrived].sum()) / span, float(tokens[finished].sum()) / span,
                       bool((late & waiting).any()))


class TwinScorer:
    """The Digital Twin over a window of ``window_s`` simulated seconds (requests drawn with the episode's seed).

    Per GPU: offered and served tokens/s by :func:`steady_state` after ``warmup_fraction`` of the window;
    starved when served falls 10% short of offered (the papers' rule) and a backlog built up; a GPU that does
    not start serves nothing and is starved if offered anything. The fleet's p99 TTFT and metrics are the
    twin's over the whole window.
    """

    name = "twin"
    predicts_latency = True

    def __init__(self, profile: TwinProfile, window_s: float, warmup_fraction: float = 0.2) -> None:
        if window_s <= 0:
            raise ConfigError(f"window_s: {window_s} must be > 0 simulated seconds")
        self.profile = profile
        self.window_s = float(window_s)
        self.warmup_s = warmup_fraction * self.window_s

    def score(self, workload: WorkloadSpec, plans: Sequence[GpuPlan], seed: int) -> FleetScore:
        requests = draw_requests(workload, seed, duration_s=self.window_s)
        ids = requests.adapter_ids
        replicas = [ReplicaPlan(p.config(), tuple(ids[i] for i in p.adapters)) for p in plans]
        records = simulate_fleet(self.profile, requests, replicas)
        states = [steady_state(r, self.warmup_s) for r in records]
        offered = np.array([s.offered_tok_s for s in states])
        served = np.array([s.served_tok_s for s in states])
        backlog = np.array([s.backlog for s in states])
        fleet = summarize(records)
        return FleetScore(self.name, tuple(r.startup.status for r in records), offered, served,
                          starved(served, offered) & backlog, finite_or_none(fleet.p99_ttft_ms),
                          fleet.to_dict(per_adapter=False))


class SurrogateScorer:
    """The learned per-GPU model of ``adaptergym.surrogate`` (fast mode): throughput and starvation per GPU.

    Start-up feasibility is not learned: it is the twin's exact memory check. Offered load is the expected
    one (rates x mean request tokens); served is the predicted throughput, capped at the offered load. Starved
    when the model's starvation probability is at least 0.5. It does not predict latency.
    """

    name = "surrogate"
    predicts_latency = False

    def __init__(self, profile: TwinProfile, model: Any, features: Any) -> None:
        self.model = model
        self.features = features
        self._startup = StartupCache(profile)

    def score(self, workload: WorkloadSpec, plans: Sequence[GpuPlan], seed: int) -> FleetScore:
        return self.score_rates(*workload_arrays(workload), workload.lengths, plans)

    def score_rates(self, rates: np.ndarray, ranks: np.ndarray, lengths: LengthSpec,
                    plans: Sequence[GpuPlan]) -> FleetScore:
        """:meth:`score` for adapters given as arrays of rates (req/s) and ranks (what ``plans`` index)."""
        members = [np.array(p.adapters, np.intp) for p in plans]
        rows = np.stack([self.features(rates[m], ranks[m], p.max_loras, lengths) for m, p in zip(members, plans,
                                                                                                  strict=True)])
        predicted = self.model.predict(rows)
        startup = tuple(self._startup.status(p) for p in plans)
        ok = np.array([s == "ok" for s in startup])
        offered = np.array([rates[m].sum() for m in members]) * mean_request_tokens(lengths)
        served = np.where(ok, np.minimum(np.asarray(predicted["throughput"], float), offered), 0.0)
        is_starved = (np.asarray(predicted["starved_prob"]) >= 0.5) | (~ok & (offered > 0))
        return FleetScore(self.name, startup, offered, served, is_starved)


def workload_arrays(workload: WorkloadSpec) -> tuple[np.ndarray, np.ndarray]:
    """The adapters' rates (req/s) and ranks, in workload order."""
    return np.array([a.rate for a in workload.adapters]), np.array([a.rank for a in workload.adapters])


class StartupCache:
    """vLLM's start-up outcome per (max_loras, max_lora_rank), computed once each."""

    def __init__(self, profile: TwinProfile) -> None:
        self.profile = profile
        self._status: dict[tuple[int, int], str] = {}
        self._kv_tokens: dict[tuple[int, int], int] = {}

    def status(self, plan: GpuPlan) -> str:
        key = (plan.max_loras, plan.max_lora_rank)
        if key not in self._status:
            startup = check_startup(self.profile, plan.config().resolved(self.profile))
            self._status[key], self._kv_tokens[key] = startup.status, startup.kv_cache_tokens
        return self._status[key]

    def kv_tokens(self, plan: GpuPlan) -> int:
        self.status(plan)
        return self._kv_tokens[(plan.max_loras, plan.max_lora_rank)]


class AnalyticScorer:
    """A closed-form capacity per GPU from the profile, for fast mode when no surrogate is trained.

    The GPU runs a full batch in steady state: ``n`` sequences, limited by ``max_num_seqs``, by its KV cache
    (each sequence holding its prompt and half its output on average) and by the token budget (each step
    decodes ``n`` tokens and prefills ``n * input / output``). One step takes the profile's step-time model
    for that batch (the ``min(max_loras, adapters)`` highest-rank adapters in it) plus scheduler overhead, and
    completes ``n / output`` requests. Served is ``min(offered, capacity)``, starved by the papers' 10% rule;
    start-up is the twin's exact memory check. It ignores adapter loading, queueing and burstiness, so it is
    optimistic: at saturation on the default profile it is about 16% above the twin's throughput when every
    adapter has a slot, and about 60% above it with 64 adapters churning through 16 slots
    (``adaptergym bench envs`` prints the comparison). No latency.
    """

    name = "analytic"
    predicts_latency = False

    def __init__(self, profile: TwinProfile) -> None:
        self.profile = profile
        self._startup = StartupCache(profile)
        self._timers: dict[tuple[int, int], StepTimer] = {}

    def capacity_tok_s(self, plan: GpuPlan, ranks: np.ndarray, lengths: Any) -> float:
        """Saturated throughput (prompt + output tokens/s) of one GPU serving adapters of ``ranks``."""
        if self._startup.status(plan) != "ok":
            return 0.0
        key = (plan.max_lora_rank, plan.max_loras)
        if key not in self._timers:
            self._timers[key] = StepTimer(self.profile, plan.max_lora_rank, True, plan.max_loras)
        config = plan.config().resolved(self.profile)
        return full_batch_capacity_tok_s(self._timers[key], config, self._startup.kv_tokens(plan),
                                         min(plan.max_loras, ranks.size), cpu_cached(config, ranks.size), lengths)

    def score(self, workload: WorkloadSpec, plans: Sequence[GpuPlan], seed: int) -> FleetScore:
        return self.score_rates(*workload_arrays(workload), workload.lengths, plans)

    def score_rates(self, rates: np.ndarray, ranks: np.ndarray, lengths: LengthSpec,
                    plans: Sequence[GpuPlan]) -> FleetScore:
        """:meth:`score` for adapters given as arrays of rates (req/s) and ranks (what ``plans`` index)."""
        offered = np.array([rates[list(p.adapters)].sum() for p in plans]) * mean_request_tokens(lengths)
        capacity = np.array([self.capacity_tok_s(p, ranks[list(p.adapters)], lengths) for p in plans])
        served = np.minimum(offered, capacity)
        return FleetScore(self.name, tuple(self._startup.status(p) for p in plans), offered, served,
                          starved(served, offered))


def full_batch(config: ServerConfig, kv_tokens: float, lengths: Any) -> float:
    """Sequences a GPU runs at once when its queue never empties: ``max_num_seqs``, or as many as its KV cache
    holds (each with its prompt and half its output), or as many as the token budget feeds (each step decodes
    ``n`` tokens and prefills ``n * input / output``), whichever is fewest."""
    prompt, output = mean_lengths(lengths)
    return min(float(config.max_num_seqs or 1), kv_tokens / (prompt + output / 2),
               (config.max_num_batched_tokens or 1) * output / (prompt + output))


def full_batch_capacity_tok_s(timer: StepTimer, config: ServerConfig, kv_tokens: float, adapters: int, cached: int,
                              lengths: Any) -> float:
    """The analytic scorer's saturated throughput (prompt + output tokens/s, class doc of :class:`AnalyticScorer`)
    of a resolved ``config`` with ``kv_tokens`` of KV cache, ``adapters`` distinct adapters in every batch and
    ``cached`` in the CPU cache; ``timer`` is the config's step model."""
    prompt, output = mean_lengths(lengths)
    n = full_batch(config, kv_tokens, lengths)
    step_ms = (timer.step_ms(n, n * prompt / output, n * (prompt + output / 2), adapters, cached)
               + timer.scheduler_ms(n, 0))
    return n * (prompt + output) / output / (step_ms / 1000.0)


def cpu_cached(config: ServerConfig, served: int) -> int:
    """Adapters a resolved ``config`` holds in the CPU cache once every one of ``served`` has been used."""
    return min(int(config.max_cpu_loras or config.max_loras), served)


def load_surrogate_scorer(profile: TwinProfile) -> SurrogateScorer | None:
    """The surrogate scorer for ``profile``, or None when ``adaptergym.surrogate`` or its model is absent."""
    try:
        module = importlib.import_module("adaptergym.surrogate")
    except ModuleNotFoundError:
        return None
    model = module.load_surrogate(profile.name)
    return None if model is None else SurrogateScorer(profile, model, module.gpu_features)


def make_scorer(name: str, profile: TwinProfile, window_s: float, needs_latency: bool) -> Scorer:
    """The scorer an environment asked for; ``auto`` is the surrogate when it can do the job, else the twin
    (never the analytic estimate, which is only used when asked for by name).

    Raises:
        ConfigError: unknown name; ``surrogate`` without a trained model for the profile; ``surrogate`` or
            ``analytic`` for an objective that needs latency (they predict throughput and starvation only).
    """
    if name not in SCORERS:
        raise ConfigError(f"scorer: {name!r} is not one of {', '.join(SCORERS)}")
    if name == "twin" or (name == "auto" and needs_latency):
        return TwinScorer(profile, window_s)
    if needs_latency:
        raise ConfigError(f"scorer={name!r} predicts no latency, which this objective needs; use scorer='twin'")
    if name == "analytic":
        return AnalyticScorer(profile)
    surrogate = load_surrogate_scorer(profile)
    if surrogate is not None:
        return surrogate
    if name == "auto":
        return TwinScorer(profile, window_s)
    raise ConfigError(f"scorer='surrogate': no trained surrogate for profile {profile.name!r} "
                      "(adaptergym.surrogate.load_surrogate found none); train one, or use scorer='twin' "
                      "(or 'analytic', a cruder closed form)")
