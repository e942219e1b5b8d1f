"""Scorers: what an environment asks at the end of an episode, "how does this placement serve its load?".

``twin`` runs the Digital Twin over a short window; ``surrogate`` asks the learned per-GPU model of
``adaptergym.surrogate`` (fast mode). Both return a :class:`FleetScore` with the same fields, so an environment's
reward does not depend on which one scored it (``info["scorer"]`` says which did).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from adaptergym.errors import ConfigError
from adaptergym.metrics import STARVATION_THRESHOLD, summarize
from adaptergym.profile import TwinProfile
from adaptergym.simulation import draw_requests
from adaptergym.twin import ReplicaPlan, RunRecord, ServerConfig, check_startup, simulate_fleet
from adaptergym.workload import WorkloadSpec

SCORERS = ("auto", "twin", "surrogate")


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
    p99_ttft_ms: float = float("nan")  # fleet p99 TTFT; nan when the scorer does not predict latency
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
                          starved(served, offered) & backlog, fleet.p99_ttft_ms, fleet.to_dict(per_adapter=False))


class SurrogateScorer:
    """The learned per-GPU model of ``adaptergym.surrogate`` (fast mode): throughput and starvation per GPU.

    Start-up feasibility is not learned: it is the twin's exact memory check. Offered load is the expected
    one (rates x mean request tokens); served is the predicted throughput, capped at the offered load. Starved
    when the model's starvation probability is at least 0.5. It does not predict latency.
    """

    name = "surrogate"
    predicts_latency = False

    def __init__(self, profile: TwinProfile, model: Any, features: Any, mean_tokens: Any) -> None:
        self.profile = profile
        self.model = model
        self.features = features
        self.mean_tokens = mean_tokens
        self._startup: dict[tuple[int, int], str] = {}

    def score(self, workload: WorkloadSpec, plans: Sequence[GpuPlan], seed: int) -> FleetScore:
        rates = np.array([a.rate for a in workload.adapters])
        ranks = np.array([a.rank for a in workload.adapters])
        rows = np.stack([self.features(rates[list(p.adapters)], ranks[list(p.adapters)], p.max_loras,
                                       workload.lengths) for p in plans])
        predicted = self.model.predict(rows)
        startup = tuple(self._status(p) for p in plans)
        ok = np.array([s == "ok" for s in startup])
        offered = np.array([rates[list(p.adapters)].sum() for p in plans]) * self.mean_tokens(workload.lengths)
        served = np.where(ok, np.minimum(np.asarray(predicted["throughput"], float), offered), 0.0)
        is_starved = (np.asarray(predicted["starved_prob"]) >= 0.5) | (~ok & (offered > 0))
        return FleetScore(self.name, startup, offered, served, is_starved)

    def _status(self, plan: GpuPlan) -> str:
        key = (plan.max_loras, plan.max_lora_rank)
        if key not in self._startup:
            self._startup[key] = check_startup(self.profile, plan.config()).status
        return self._startup[key]


def load_surrogate_scorer(profile: TwinProfile, mean_tokens: Any) -> SurrogateScorer | None:
    """The surrogate scorer for ``profile``, or None when ``adaptergym.surrogate`` or its model is absent."""
    try:
        module = importlib.import_module("adaptergym.surrogate")
    except ModuleNotFoundError:
        return None
    model = module.load_surrogate(profile.name)
    return None if model is None else SurrogateScorer(profile, model, module.gpu_features, mean_tokens)


def make_scorer(name: str, profile: TwinProfile, window_s: float, needs_latency: bool, mean_tokens: Any) -> Scorer:
    """The scorer an environment asked for; ``auto`` is the surrogate when it can do the job, else the twin.

    Raises:
        ConfigError: unknown name; ``surrogate`` without a trained model for the profile, or for an
            objective that needs latency (the surrogate predicts throughput and starvation only).
    """
    if name not in SCORERS:
        raise ConfigError(f"scorer: {name!r} is not one of {', '.join(SCORERS)}")
    if name == "twin" or (name == "auto" and needs_latency):
        return TwinScorer(profile, window_s)
    if needs_latency:
        raise ConfigError("scorer='surrogate' predicts no latency, which this objective needs; use scorer='twin'")
    surrogate = load_surrogate_scorer(profile, mean_tokens)
    if surrogate is not None:
        return surrogate
    if name == "auto":
        return TwinScorer(profile, window_s)
    raise ConfigError(f"scorer='surrogate': no trained surrogate for profile {profile.name!r} "
                      "(adaptergym.surrogate.load_surrogate found none); train one or use scorer='twin'")
