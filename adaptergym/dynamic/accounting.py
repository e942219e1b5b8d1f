"""What one decision epoch cost and served, and an episode's totals.

Definitions (the same for every scorer that can give them):

* **GPU-seconds**: each replica counts from its cold start until it is removed and drained.
* **starved adapter**: over the epoch, the tokens of the adapter's requests that finished fall at least 10% short of
  those that arrived (the papers' rule) *and* it has a backlog: one of its requests that arrived before the last
  10% of the epoch has not started by its end. An adapter with requests (arrived in the epoch, or backlogged)
  that no serving replica holds at the epoch's end (none in the plan, or only replicas still starting) is
  starved too. Starved adapter-seconds add the epoch's length per starved adapter.
* **TTFT SLO**: a request meets it when its first token comes within ``slo_ttft_ms`` of its arrival. It is judged
  in the epoch in which that deadline falls (so every request is judged once, when the answer is known; those
  whose deadline falls after the episode are not judged); refused requests miss it.
* **p99 TTFT**: over the requests whose first token came in the epoch (requests still waiting show in the SLO
  share, not here).
* **loads, migrations, restarts, cold starts, removals**: the plan changes made at the epoch's start
  (:class:`adaptergym.twin.fleet_plan.PlanChanges`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adaptergym.metrics import STARVATION_THRESHOLD, finite_or_none
from adaptergym.scoring import starved as falls_short
from adaptergym.twin.fleet_plan import PlanChanges
from adaptergym.twin.online_fleet import FleetSnapshot

#: Default TTFT service-level objective, ms: a first token within 2 s, for interactive chat.
DEFAULT_SLO_TTFT_MS = 2000.0


@dataclass(frozen=True, slots=True)
class ReplicaEpoch:
    """One replica over an epoch. ``offered_tok_s``/``served_tok_s``: tokens/s of the requests it got that
    arrived / finished in the epoch; ``waiting``: requests queued on it at the end (None from fast scorers)."""

    id: int
    state: str
    adapters: int
    max_loras: int
    max_lora_rank: int
    offered_tok_s: float
    served_tok_s: float
    starved: bool
    waiting: int | None = None


@dataclass(frozen=True, slots=True)
class EpochResult:
    """One decision epoch (module doc for the definitions). Per-adapter arrays follow the workload's adapter order.

    ``slo_met``/``slo_judged``, ``p99_ttft_ms`` and ``held`` are None when the scorer does not model latency
    (the surrogate and analytic scorers).
    """

    epoch: int
    start_s: float
    end_s: float
    scorer: str
    gpus: int  # replicas in the plan
    gpu_seconds: float
    offered_rates: np.ndarray = field(repr=False)  # req/s that arrived, per adapter
    offered_tok_s: np.ndarray = field(repr=False)
    served_tok_s: np.ndarray = field(repr=False)
    starved: np.ndarray = field(repr=False)  # bool, per adapter
    changes: PlanChanges
    replicas: tuple[ReplicaEpoch, ...]
    requests: int  # arrived in the epoch
    slo_judged: int | None = None
    slo_met: int | None = None
    p99_ttft_ms: float | None = None
    held: int | None = None  # requests waiting at the router at the end (no serving replica holds their adapter)

    @property
    def length_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def starved_adapter_s(self) -> float:
        return float(self.starved.sum()) * self.length_s

    @property
    def slo_share(self) -> float | None:
        """Share of the requests judged in this epoch that met the TTFT SLO (None: not modelled or none judged)."""
        if not self.slo_judged:
            return None
        return self.slo_met / self.slo_judged

    def info(self) -> dict[str, Any]:
        """Scalars of the epoch (an environment's ``info``): no per-adapter arrays, no NaN."""
        return {"epoch": self.epoch, "start_s": self.start_s, "end_s": self.end_s, "scorer": self.scorer,
                "gpus": self.gpus, "gpu_seconds": self.gpu_seconds, "starved_adapters": int(self.starved.sum()),
                "starved_adapter_s": self.starved_adapter_s, "requests": self.requests,
                "offered_tok_s": float(self.offered_tok_s.sum()), "served_tok_s": float(self.served_tok_s.sum()),
                "slo_share": self.slo_share, "p99_ttft_ms": finite_or_none(self.p99_ttft_ms), "held": self.held,
                "loads": self.changes.adapter_loads, "migrations": self.changes.migrations,
                "restarts": len(self.changes.restarts), "cold_starts": len(self.changes.cold_starts),
                "removals": len(self.changes.removals)}


@dataclass(frozen=True, slots=True)
class EpisodeSummary:
    """An episode's totals. ``slo_share`` and ``p99_ttft_ms`` are None from scorers that model no latency."""

    scorer: str
    epochs: int
    duration_s: float
    gpu_hours: float
    starved_adapter_minutes: float
    requests: int
    slo_share: float | None
    p99_ttft_ms: float | None
    loads: int
    migrations: int
    restarts: int
    cold_starts: int
    removals: int
    finished: int | None = None
    refused: int | None = None
    unfinished: int | None = None

    @property
    def mean_gpus(self) -> float:
        return self.gpu_hours * 3600.0 / self.duration_s

    def to_dict(self) -> dict[str, Any]:
        out = {name: finite_or_none(getattr(self, name)) for name in self.__dataclass_fields__}
        return {**out, "mean_gpus": self.mean_gpus}


def summarize_episode(results: list[EpochResult], final: FleetSnapshot | None, slo_ttft_ms: float) -> EpisodeSummary:
    """Totals over ``results``; ``final`` (the twin's snapshot at the end) gives latency and request outcomes."""
    if not results:
        raise ValueError("summarize_episode needs at least one epoch")
    judged = sum(r.slo_judged or 0 for r in results)
    p99 = slo = None
    outcomes: dict[str, int | None] = {"finished": None, "refused": None, "unfinished": None}
    if final is not None:
        started = np.isfinite(final.first_token_s)
        ttft_ms = (final.first_token_s[started] - final.arrival_s[started]) * 1000.0
        p99 = float(np.percentile(ttft_ms, 99)) if ttft_ms.size else None
        slo = sum(r.slo_met or 0 for r in results) / judged if judged else None
        finished = np.isfinite(final.finish_s) & (final.finish_s <= final.time_s + 1e-9)
        outcomes = {"finished": int(finished.sum()), "refused": int(final.refused.sum()),
                    "unfinished": int((~finished & ~final.refused).sum())}
    return EpisodeSummary(
        scorer=results[0].scorer, epochs=len(results), duration_s=results[-1].end_s - results[0].start_s,
        gpu_hours=sum(r.gpu_seconds for r in results) / 3600.0,
        starved_adapter_minutes=sum(r.starved_adapter_s for r in results) / 60.0,
        requests=sum(r.requests for r in results), slo_share=slo, p99_ttft_ms=p99,
        loads=sum(r.changes.adapter_loads for r in results), migrations=sum(r.changes.migrations for r in results),
        restarts=sum(len(r.changes.restarts) for r in results),
        cold_starts=sum(len(r.changes.cold_starts) for r in results),
        removals=sum(len(r.changes.removals) for r in results), **outcomes)


@dataclass(frozen=True, slots=True)
class TwinEpochFigures:
    """Per-adapter and per-replica figures of one epoch, from a twin snapshot taken at its end."""

    offered_tok_s: np.ndarray
    served_tok_s: np.ndarray
    starved: np.ndarray
    replica_offered: dict[int, float]
    replica_served: dict[int, float]
    replica_starved: dict[int, bool]
    slo_judged: int
    slo_met: int
    p99_ttft_ms: float | None


def twin_epoch_figures(snap: FleetSnapshot, start_s: float, end_s: float, adapters: int, served: np.ndarray,
                       slo_ttft_ms: float) -> TwinEpochFigures:
    """The epoch [start_s, end_s) seen from a snapshot taken at ``end_s`` (module doc); ``served`` marks the
    adapters a serving replica holds at ``end_s``."""
    span = end_s - start_s
    arrived = (snap.arrival_s >= start_s) & (snap.arrival_s < end_s)
    finished = np.isfinite(snap.finish_s) & (snap.finish_s >= start_s) & (snap.finish_s < end_s)
    early = snap.arrival_s < start_s + (1.0 - STARVATION_THRESHOLD) * span
    not_started = ~(np.isfinite(snap.first_token_s) & (snap.first_token_s < end_s)) & ~snap.refused
    backlog_mask = early & not_started
    tokens = snap.tokens.astype(float)
    offered = np.bincount(snap.adapter[arrived], tokens[arrived], adapters) / span
    done = np.bincount(snap.adapter[finished], tokens[finished], adapters) / span
    backlog = np.bincount(snap.adapter[backlog_mask], minlength=adapters) > 0
    is_starved = (falls_short(done, offered) & backlog) | (((offered > 0) | backlog) & ~served)
    replica_offered, replica_served, replica_starved = {}, {}, {}
    for rid in np.unique(snap.replica[arrived | finished | backlog_mask]).tolist():
        if rid < 0:
            continue
        mine = snap.replica == rid
        o = float(tokens[arrived & mine].sum()) / span
        s = float(tokens[finished & mine].sum()) / span
        replica_offered[rid], replica_served[rid] = o, s
        replica_starved[rid] = bool(falls_short(np.array([s]), np.array([o]))[0]) and bool((backlog_mask & mine).any())
    deadline = snap.arrival_s + slo_ttft_ms / 1000.0
    judged = (deadline >= start_s) & (deadline < end_s)
    met = judged & np.isfinite(snap.first_token_s) & (snap.first_token_s <= deadline)
    first = np.isfinite(snap.first_token_s) & (snap.first_token_s >= start_s) & (snap.first_token_s < end_s)
    ttft_ms = (snap.first_token_s[first] - snap.arrival_s[first]) * 1000.0
    p99 = float(np.percentile(ttft_ms, 99)) if ttft_ms.size else None
    return TwinEpochFigures(offered, done, is_starved, replica_offered, replica_served, replica_starved,
                            int(judged.sum()), int(met.sum()), p99)
