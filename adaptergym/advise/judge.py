"""The twin's verdict on a server config for one workload, and which verdict each objective prefers.

A config is run exactly as ``adaptergym simulate`` runs it with the same flags, window and seed (so its printed
command reproduces the verdict), and, when its capacity is asked for, saturated: the workload's adapter mix
scaled to offer :data:`OVERLOAD` times the fast model's (optimistic) capacity, tokens/s completed in the second
half of :data:`CAPACITY_WINDOW_S` simulated seconds.

A verdict is *feasible* when the server starts, is not starved (the papers' rule over the whole window) and
its p99 TTFT is within the SLO; without one, within :data:`LATENCY_SLACK` times the lowest p99 TTFT any verdict
that serves the workload reached (the papers' rule lets a GPU queue for tens of seconds and still pass; this
keeps every objective from buying its gain with such queues). Objectives (:func:`pick`), ties within
:data:`TIE`:

- ``throughput``: the highest capacity; ties: the lowest p99 TTFT;
- ``latency``: the lowest p99 TTFT; ties: the largest KV cache (headroom for bursts);
- ``memory``: the most GPU memory left free (``(1 - gpu_memory_utilization)`` x GPU memory) among verdicts
  serving at least :data:`MEMORY_SERVED_SHARE` of the best feasible served throughput; ties: the lowest p99 TTFT.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from adaptergym.advise.fast import FastModel
from adaptergym.metrics import Metrics
from adaptergym.profile import GIB, TwinProfile
from adaptergym.server_capacity import second_half_throughput
from adaptergym.simulation import simulate
from adaptergym.twin import ServerConfig, check_startup
from adaptergym.workload import AdapterSpec, WorkloadSpec

OBJECTIVES = ("throughput", "latency", "memory")
#: Relative difference within which two verdicts tie on the objective's first criterion.
TIE = 0.01
#: Without an SLO, a recommendation's p99 TTFT is at most this many times the lowest any serving verdict reached.
LATENCY_SLACK = 2.0
#: Served share of the best feasible served throughput that ``memory`` keeps.
MEMORY_SERVED_SHARE = 0.99
#: Offered load of a capacity run, in multiples of the fast model's capacity (which is optimistic).
OVERLOAD = 1.5
#: Simulated seconds of a capacity run (its second half is measured).
CAPACITY_WINDOW_S = 240.0


@dataclass(frozen=True)
class Verdict:
    """One config run on the twin over the workload (``metrics``) and saturated (``capacity_tok_s``, None when
    not asked for)."""

    config: ServerConfig
    metrics: Metrics
    kv_cache_gib: float
    lora_gib: float
    free_gib: float
    capacity_tok_s: float | None = None

    @property
    def p99_ttft_ms(self) -> float:
        p99 = self.metrics.p99_ttft_ms
        return p99 if math.isfinite(p99) else math.inf

    def serves(self) -> bool:
        """Starts and is not starved."""
        return self.metrics.startup == "ok" and not self.metrics.starved

    def feasible(self, slo_ttft_ms: float | None) -> bool:
        return self.serves() and (slo_ttft_ms is None or self.p99_ttft_ms <= slo_ttft_ms)

    def to_dict(self) -> dict[str, Any]:
        m = self.metrics
        return {"gpu_memory_utilization": self.config.gpu_memory_utilization, "kv_cache_gib": self.kv_cache_gib,
                "kv_cache_tokens": m.kv_cache_tokens, "lora_gib": self.lora_gib, "free_gib": self.free_gib,
                "startup": m.startup, "starved": m.starved, "offered_throughput": m.offered_throughput,
                "total_throughput": m.total_throughput, "capacity_tok_s": self.capacity_tok_s,
                "mean_ttft_ms": m.mean_ttft_ms, "p99_ttft_ms": m.p99_ttft_ms, "mean_itl_ms": m.mean_itl_ms,
                "preemptions": m.preemptions}


class Judge:
    """Runs configs on the twin for one workload, window and seed; each config once."""

    def __init__(self, workload: WorkloadSpec, profile: TwinProfile, fast: FastModel, duration_s: float,
                 seed: int) -> None:
        self.workload, self.profile, self.fast = workload, profile, fast
        self.duration_s, self.seed = duration_s, seed
        self._verdicts: dict[ServerConfig, Verdict] = {}
        self.extra_runs = 0

    @property
    def runs(self) -> int:
        """Twin runs so far (the workload's, the capacity runs and the second draws)."""
        return sum(1 + (v.capacity_tok_s is not None) for v in self._verdicts.values()) + self.extra_runs

    def __call__(self, config: ServerConfig, capacity: bool = False) -> Verdict:
        """The verdict on ``config``; with ``capacity``, its capacity run too."""
        if config not in self._verdicts:
            startup = check_startup(self.profile, config)
            metrics = simulate(self.workload, self.profile, config, seed=self.seed, duration_s=self.duration_s)
            memory = self.profile.memory
            kv_gib = startup.kv_cache_tokens * memory.kv_bytes_per_token / GIB
            free = memory.gpu_memory_gib * (1.0 - (config.gpu_memory_utilization or 0.0))
            self._verdicts[config] = Verdict(config, metrics, kv_gib, startup.lora_gib, free)
        verdict = self._verdicts[config]
        if capacity and verdict.capacity_tok_s is None:
            estimate = self.fast.estimate(config)
            served = second_half_throughput(self.profile, self._overload(estimate.capacity_tok_s), config,
                                            self.seed) if estimate is not None else 0.0
            verdict = self._verdicts[config] = replace(verdict, capacity_tok_s=served)
        return verdict

    def holds_on_another_draw(self, config: ServerConfig, bound_ms: float) -> bool:
        """Whether ``config`` also serves the workload within a p99 TTFT of ``bound_ms`` on an independent request
        draw (seed + 1): a check on a budget chosen at the edge of what one draw needs."""
        metrics = simulate(self.workload, self.profile, config, seed=self.seed + 1, duration_s=self.duration_s)
        self.extra_runs += 1
        p99 = metrics.p99_ttft_ms if math.isfinite(metrics.p99_ttft_ms) else math.inf
        return metrics.startup == "ok" and not metrics.starved and p99 <= bound_ms

    def _overload(self, capacity_tok_s: float) -> WorkloadSpec:
        """The workload's adapter mix offering :data:`OVERLOAD` x ``capacity_tok_s``."""
        scale = OVERLOAD * capacity_tok_s / max(self.fast.offered_tok_s, 1e-9)
        adapters = tuple(AdapterSpec(a.id, a.rank, a.rate * scale) for a in self.workload.adapters)
        return replace(self.workload.with_adapters(adapters), duration_s=CAPACITY_WINDOW_S, num_requests=None)


def _within(value: float, best: float) -> bool:
    return abs(value - best) <= TIE * abs(best)


def latency_bound(verdicts: Sequence[Verdict], slo_ttft_ms: float | None) -> float | None:
    """The p99 TTFT a feasible verdict keeps (module doc): the SLO, else the slack over the lowest that serves."""
    serving = [v.p99_ttft_ms for v in verdicts if v.serves()]
    if slo_ttft_ms is None and serving:
        return LATENCY_SLACK * min(serving)
    return slo_ttft_ms


def pick(verdicts: Sequence[Verdict], objective: str, slo_ttft_ms: float | None) -> Verdict | None:
    """The verdict ``objective`` prefers among the feasible ones (module doc); None if none is feasible."""
    bound = latency_bound(verdicts, slo_ttft_ms)
    ok = [v for v in verdicts if v.feasible(bound)]
    if not ok:
        return None
    if objective == "throughput":
        top = max(v.capacity_tok_s for v in ok)
        return min((v for v in ok if _within(v.capacity_tok_s, top)), key=lambda v: v.p99_ttft_ms)
    if objective == "latency":
        top = min(v.p99_ttft_ms for v in ok)
        return max((v for v in ok if _within(v.p99_ttft_ms, top)), key=lambda v: v.kv_cache_gib)
    served = max(v.metrics.total_throughput for v in ok)
    keep = [v for v in ok if v.metrics.total_throughput >= MEMORY_SERVED_SHARE * served]
    top = max(v.free_gib for v in keep)
    return min((v for v in keep if _within(v.free_gib, top)), key=lambda v: v.p99_ttft_ms)
