"""Run one online policy over one episode (what ``adaptergym replay`` does) and draw its timeline."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adaptergym.dynamic import DynamicFleet, EpisodeSummary, EpochResult
from adaptergym.metrics import finite_or_none


@dataclass
class Replay:
    """A policy's episode: every epoch's result, the totals, and how long deciding and simulating took."""

    policy: str
    summary: EpisodeSummary
    results: list[EpochResult] = field(repr=False)
    decision_s: list[float] = field(repr=False)
    simulation_s: float

    def epoch_rows(self) -> list[dict[str, Any]]:
        """One row per epoch: its :meth:`EpochResult.info` and the decision time."""
        return [{**r.info(), "decision_s": d} for r, d in zip(self.results, self.decision_s, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``adaptergym replay --json``."""
        return {"policy": self.policy, "summary": self.summary.to_dict(),
                "decision_s": {"mean": float(np.mean(self.decision_s)), "max": float(np.max(self.decision_s))},
                "simulation_s": self.simulation_s, "epochs": self.epoch_rows()}


def replay(policy: Any, fleet: DynamicFleet, progress: Callable[[int, int], None] | None = None) -> Replay:
    """Run ``policy`` (an :class:`baselines.online.OnlinePolicy`) on ``fleet`` from its first epoch to its last;
    ``progress(done, total)`` after each epoch."""
    policy.reset(fleet)
    decisions, simulating = [], 0.0
    while not fleet.done:
        start = time.perf_counter()
        plan = policy.plan(fleet)
        decided = time.perf_counter()
        fleet.step(plan)
        simulating += time.perf_counter() - decided
        decisions.append(decided - start)
        if progress:
            progress(fleet.epoch, fleet.epochs)
    return Replay(policy.name, fleet.summary(), list(fleet.results), decisions, simulating)


def plot_timeline(run: Replay, out: Path, title: str = "") -> None:
    """Offered (and served) load, GPUs in use and p99 TTFT per epoch, one panel each, against time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = run.results
    mid_h = np.array([(r.start_s + r.end_s) / 2 for r in results]) / 3600.0
    edges_h = np.array([results[0].start_s] + [r.end_s for r in results]) / 3600.0
    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    offered = [r.offered_tok_s.sum() / 1000 for r in results]
    served = [r.served_tok_s.sum() / 1000 for r in results]
    axes[0].stairs(offered, edges_h, label="offered", linewidth=1.5, baseline=None)
    axes[0].stairs(served, edges_h, label="served", linewidth=1, linestyle="--", baseline=None)
    starved = [r.starved.sum() for r in results]
    if any(starved):
        twin = axes[0].twinx()
        twin.bar(mid_h, starved, width=0.8 * np.diff(edges_h), color="C3", alpha=0.25)
        twin.set_ylabel("starved adapters", color="C3")
    axes[0].set_ylabel("load (k tok/s)")
    axes[0].legend(loc="upper left", fontsize=8)
    axes[1].stairs([r.gpu_seconds / r.length_s for r in results], edges_h, color="C2", linewidth=1.5, baseline=None)
    axes[1].set_ylabel("GPUs in use")
    axes[1].set_ylim(bottom=0)
    p99 = [finite_or_none(r.p99_ttft_ms) for r in results]
    if any(v is not None for v in p99):
        axes[2].plot(mid_h, [np.nan if v is None else v / 1000 for v in p99], marker="o", markersize=3, color="C1")
        axes[2].set_yscale("log")
    else:
        axes[2].text(0.5, 0.5, f"no latency from the {run.summary.scorer} scorer", ha="center",
                     transform=axes[2].transAxes)
    axes[2].set_ylabel("p99 TTFT (s)")
    axes[2].set_xlabel("time (h)")
    s = run.summary
    axes[0].set_title(title or f"{run.policy}: {s.gpu_hours:.2f} GPU-h, {s.starved_adapter_minutes:.0f} starved "
                      f"adapter-min")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
