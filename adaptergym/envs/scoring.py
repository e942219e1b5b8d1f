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


def steady_state_tokens(record: RunRecord, warmup_s: float) -> tuple[float, float]:
    """(offered, served) tokens/s of one replica after ``warmup_s``: tokens of the requests that arrive in
    ``[warmup_s, duration)`` and of the requests that finish in it.

    In a window of a few minutes, the requests still running at the end are a sizeable share of a
    well-served GPU's load (a ShareGPT request lasts about 10 s), so the hour-long runs' rule
    ``finished / arrived`` would call it starved. Comparing completions with arrivals once the GPU has
    warmed up measures the same thing in steady state: about 1 when the GPU keeps up, capacity / load when
    it does not.
    """
    span = record.duration_s - warmup_s
    tokens = record.input_tokens + record.output_tokens
    arrived = (record.arrival_s >= warmup_s) & (record.arrival_s < record.duration_s)
    finished = np.isfinite(record.finish_s) & (record.finish_s >= warmup_s) & (record.finish_s <= record.duration_s)
    return float(tokens[arrived].sum()) / span, float(tokens[finished].sum()) / span


class TwinScorer:
    """The Digital Twin over a window of ``window_s`` simulated seconds (requests drawn with the episode's seed).

    Per GPU: offered and served tokens/s by :func:`steady_state_tokens` after ``warmup_fraction`` of the
    window; starved by the papers' 10% rule on those; a GPU that does not start serves nothing. The fleet's
    p99 TTFT and metrics are the twin's over the whole window.
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
        offered, served = np.array([steady_state_tokens(r, self.warmup_s) for r in records]).T.reshape(2, -1)
        ok = np.array([r.startup.ok for r in records])
        served = np.where(ok, served, 0.0)
        fleet = summarize(records)
        return FleetScore(self.name, tuple(r.startup.status for r in records), offered, served,
                          starved(served, offered), fleet.p99_ttft_ms, fleet.to_dict(per_adapter=False))


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
