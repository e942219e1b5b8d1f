"""``advise``: the whole vLLM server configuration for one GPU serving a workload, and its KV-budget curve.

Steps: Optuna over the fast model proposes finalists (:mod:`adaptergym.advise.search`); the twin runs each
(:class:`adaptergym.advise.judge.Judge`) and the objective picks one (:func:`adaptergym.advise.judge.pick`);
the twin then runs the pick's knobs at :data:`CURVE_POINTS` KV budgets (``gpu_memory_utilization`` from the
smallest that starts to the cap, each with its capacity run), which is the trade-off curve, and the objective
picks again among finalists and curve, so the twin, not the estimate, sets the budget (for ``memory`` it
bisects the budget below the pick down to the grid's step, keeping a smaller one only if a second request draw
agrees). Every verdict comes from the window and seed of the printed ``adaptergym simulate`` command
(:func:`adaptergym.placement.verification_window_s`: 600 simulated s, longer for a light workload).

A time-varying workload (a rate ``schedule``) is sized for its busiest minute: the search, the finalists and
the curve run it at those constant rates (:func:`peak_workload`); the recommendation is then run once on the
workload as it varies, over its whole duration, and that run is the prediction the printed command reproduces.

When no finalist serves the workload without starving, it does not fit on one GPU (``fits_one_gpu`` False; the
CLI then asks the placement policies how many GPUs it needs). When some serve it but none meets the SLO, even
along the curve of the lowest-latency one, :class:`AdviceError` says so with the best p99 TTFT found.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from adaptergym.advise.fast import FastModel
from adaptergym.advise.judge import OBJECTIVES, Judge, Verdict, latency_bound, pick
from adaptergym.advise.knobs import (
    UTILIZATION_STEP,
    Space,
    simulate_command,
    utilization_floor,
    vllm_flags_dict,
    vllm_serve_command,
)
from adaptergym.advise.search import DEFAULT_TRIALS, finalists
from adaptergym.errors import ConfigError, WorkloadError
from adaptergym.placement import verification_window_s
from adaptergym.profile import TwinProfile, load_profile
from adaptergym.simulation import simulate
from adaptergym.twin.config import VLLM_MAX_LORA_RANKS
from adaptergym.workload import AdapterSpec, WorkloadSpec, rate_table

#: KV budgets (utilizations) of the trade-off curve.
CURVE_POINTS = 6
#: Epoch over which a time-varying workload's peak rates are averaged, seconds.
PEAK_EPOCH_S = 60.0


class AdviceError(ConfigError):
    """No configuration meets what was asked (an SLO no server config meets)."""


@dataclass(frozen=True)
class Advice:
    """What ``advise`` found. ``best`` is None when the workload does not fit on one GPU."""

    workload: WorkloadSpec
    profile: TwinProfile
    objective: str
    slo_ttft_ms: float | None
    seed: int
    duration_s: float
    best: Verdict | None
    curve: tuple[Verdict, ...]
    finalists: tuple[Verdict, ...]
    trials: int
    twin_runs: int
    seconds: float
    closest: Verdict | None = None  # does not fit: the finalist serving the largest share

    @property
    def fits_one_gpu(self) -> bool:
        return self.best is not None

    def vllm_command(self) -> str:
        return vllm_serve_command(self.profile, self.best.config)

    def simulate_command(self, workload_path: str) -> str:
        return simulate_command(workload_path, self.profile, self.best.config, self.duration_s, self.seed)

    def to_dict(self, workload_path: str = "W.json") -> dict[str, Any]:
        out: dict[str, Any] = {
            "profile": self.profile.name, "workload": self.workload.name, "objective": self.objective,
            "slo_ttft_ms": self.slo_ttft_ms, "fits_one_gpu": self.fits_one_gpu, "seed": self.seed,
            "duration_s": self.duration_s,
            "search": {"trials": self.trials, "finalists": len(self.finalists), "twin_runs": self.twin_runs,
                       "seconds": self.seconds}}
        if self.best is not None:
            out |= {"flags": vllm_flags_dict(self.best.config), "vllm_serve": self.vllm_command(),
                    "simulate_command": self.simulate_command(workload_path), "predicted": self.best.to_dict(),
                    "gpu_memory_gib": self.profile.memory.gpu_memory_gib,
                    "curve": [v.to_dict() for v in self.curve]}
        elif self.closest is not None:
            out["closest"] = self.closest.to_dict()
        return out


def check_workload(workload: WorkloadSpec, profile: TwinProfile) -> None:
    """Refuse what no server config of ``profile`` can serve, or what advise cannot size (one-line errors)."""
    if workload.lengths.kind == "trace" or not workload.adapters:
        raise WorkloadError("workload: advise needs a workload JSON with adapters and rates, not a trace CSV")
    if workload.arrival.kind == "burst":
        raise WorkloadError("arrival.kind: advise sizes a server for request rates; a 'burst' workload has none "
                            "(use poisson or gamma)")
    if workload.total_rate <= 0:
        raise WorkloadError("adapters[].rate: all rates are 0 req/s, so there is nothing to serve")
    largest = max(workload.adapters, key=lambda a: a.rank)
    if largest.rank > VLLM_MAX_LORA_RANKS[-1]:
        raise WorkloadError(f"adapter {largest.id!r}: rank {largest.rank} fits on no GPU (vLLM's --max-lora-rank "
                            f"goes up to {VLLM_MAX_LORA_RANKS[-1]}); this workload fits nowhere")
    space = Space.of(workload, profile)
    if space.max_slots(space.rank_choices[0]) == 0:
        raise WorkloadError(f"adapter {largest.id!r}: rank {largest.rank} does not start on {profile.name} even "
                            "with --max-loras 1 and the whole KV budget; this workload fits nowhere on this GPU")


def advise(workload: WorkloadSpec, profile: TwinProfile | str | None = None, *, objective: str = "throughput",
           slo_ttft_ms: float | None = None, seed: int = 0, trials: int = DEFAULT_TRIALS,
           duration_s: float | None = None) -> Advice:
    """Search the server knobs for one GPU serving ``workload`` (module doc).

    Args:
        workload: adapters with rates (a workload JSON's spec).
        profile: profile object, name or path (default: the shipped default).
        objective: ``throughput``, ``latency`` or ``memory`` (:mod:`adaptergym.advise.judge`).
        slo_ttft_ms: p99 TTFT every recommendation must meet, ms.
        seed: seeds the Optuna sampler and every twin run's request draw.
        trials: Optuna trials over the fast model.
        duration_s: simulated seconds of every twin run on the workload (default: placement verification's
            window, 600 s or long enough for 500 requests; a time-varying workload's final run: its duration).

    Raises:
        ConfigError: unknown objective, a non-positive SLO, trial count or duration.
        WorkloadError: a workload no GPU of the profile can serve, or a trace / burst workload.
        AdviceError: configs serve the workload, but none within the SLO.
    """
    start = time.perf_counter()
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective: {objective!r} is not one of {', '.join(OBJECTIVES)}")
    if slo_ttft_ms is not None and not (math.isfinite(slo_ttft_ms) and slo_ttft_ms > 0):
        raise ConfigError(f"slo_ttft_ms: {slo_ttft_ms} must be a number of milliseconds > 0")
    if trials < 1:
        raise ConfigError(f"trials: {trials} must be >= 1")
    if duration_s is not None and not (math.isfinite(duration_s) and duration_s > 0):
        raise ConfigError(f"duration_s: {duration_s} must be a number of simulated seconds > 0")
    prof = load_profile(profile)
    check_workload(workload, prof)
    sized = peak_workload(workload)
    space, fast = Space.of(sized, prof), FastModel(sized, prof)
    judge = Judge(sized, prof, fast, duration_s or verification_window_s(sized.total_rate), seed)
    judged = [judge(c, capacity=objective == "throughput") for c in finalists(space, fast, objective, trials, seed)]
    best = pick(judged, objective, slo_ttft_ms)
    curve: list[Verdict] = []
    if best is None and any(v.serves() for v in judged):  # an SLO: try the budgets of the lowest-latency config
        curve = kv_curve(space, judge, pick(judged, "latency", None))
        best = pick(judged + curve, objective, slo_ttft_ms)
        if best is None:
            fastest = min(v.p99_ttft_ms for v in judged + curve if v.serves())
            raise AdviceError(f"slo_ttft_ms: no configuration meets a p99 TTFT of {slo_ttft_ms:g} ms on "
                              f"{prof.name}; the lowest found is {fastest:.0f} ms. Relax the SLO or serve the "
                              "workload on more GPUs (adaptergym place --objective latency)")
    if best is not None:
        if best.config not in {v.config for v in curve}:
            curve = kv_curve(space, judge, best)
        judged = [judge(v.config) for v in judged]  # the curve may have added capacity runs
        best = pick(judged + curve, objective, slo_ttft_ms)
        if objective == "memory":
            curve = refine_budget(judge, judged, curve, best, objective, slo_ttft_ms)
            best = pick(judged + curve, objective, slo_ttft_ms)
    closest = None if best is not None else max(judged, key=lambda v: v.metrics.total_throughput)
    window = judge.duration_s
    if best is not None and workload.schedule:  # what the printed command runs: the workload as it varies
        window = duration_s or workload.duration_s
        best = replace(best, metrics=simulate(workload, prof, best.config, seed=seed, duration_s=window))
    return Advice(workload, prof, objective, slo_ttft_ms, seed, window, best, tuple(curve), tuple(judged), trials,
                  judge.runs + bool(workload.schedule and best), time.perf_counter() - start, closest)


def peak_workload(workload: WorkloadSpec) -> WorkloadSpec:
    """``workload`` at constant rates: its own, or for a time-varying one each adapter's rate in the busiest
    :data:`PEAK_EPOCH_S` of its schedule (the minute with the highest total rate), which a server must serve."""
    if not workload.schedule:
        return workload
    epochs = rate_table(workload).epoch_rates(PEAK_EPOCH_S)
    peak = epochs[int(np.argmax(epochs.sum(axis=1)))]
    adapters = tuple(AdapterSpec(a.id, a.rank, float(r)) for a, r in zip(workload.adapters, peak, strict=True))
    return workload.with_schedule(()).with_adapters(adapters)


def refine_budget(judge: Judge, judged: list[Verdict], curve: list[Verdict], best: Verdict, objective: str,
                  slo_ttft_ms: float | None) -> list[Verdict]:
    """The curve with the twin's bisection of the KV budget between ``best`` and the curve point below it, on the
    utilization grid, as long as the objective prefers the smaller budget and it holds on a second request draw
    too (the curve's steps are coarse, and ``memory`` wants the least that serves as well, but not a budget one
    draw's luck passes); returns the curve, sorted."""
    utilization = best.config.gpu_memory_utilization
    below = [v.config.gpu_memory_utilization for v in curve if v.config.gpu_memory_utilization < utilization]
    if best not in curve or not below:
        return curve
    low, high, added = max(below), utilization, []
    while round((high - low) / UTILIZATION_STEP) > 1:
        middle = round(low + UTILIZATION_STEP * (round((high - low) / UTILIZATION_STEP) // 2), 6)
        verdict = judge(replace(best.config, gpu_memory_utilization=middle), capacity=True)
        added.append(verdict)
        everything = judged + curve + added
        bound = latency_bound(everything, slo_ttft_ms)
        if pick(everything, objective, slo_ttft_ms) is verdict and judge.holds_on_another_draw(verdict.config, bound):
            high = middle
        else:
            low = middle
    return sorted(curve + added, key=lambda v: v.config.gpu_memory_utilization)


def kv_curve(space: Space, judge: Judge, verdict: Verdict) -> list[Verdict]:
    """``verdict``'s knobs at :data:`CURVE_POINTS` utilizations from the smallest that starts to the cap, and at
    its own, in increasing order."""
    config = verdict.config
    floor = utilization_floor(space.profile, config)
    steps = np.unique(np.rint(np.linspace(0, round((space.utilization_cap - floor) / UTILIZATION_STEP),
                                          CURVE_POINTS)).astype(int))
    utilizations = sorted({round(floor + k * UTILIZATION_STEP, 6) for k in steps} | {config.gpu_memory_utilization})
    return [judge(replace(config, gpu_memory_utilization=u), capacity=True) for u in utilizations]
