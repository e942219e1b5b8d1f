"""The final fit: step-time coefficients that make the twin's replays match measured mean ITL.

Every step the twin simulates is a linear function of its counts (decode sequences, prefill tokens, context,
distinct adapters, slots, ...), and the engine sums those counts weighted by the inter-token gaps each step
closes. So a replay's mean ITL moves with the coefficients ``c`` as ``itl(c) ~ itl(c0) + x.(c - c0)``, with
``x`` the replay's mean feature vector per gap. Each round replays the training runs with the current
coefficients, fits the linearisation in least absolute relative error (MAPE, what the twin is judged by, so
a few runs the model cannot describe do not drag the others along), with priors from the micro-benchmarks and
the base profile (so terms the runs cannot separate stay where those put them), and repeats: the replays'
dynamics (batch sizes, queueing) follow the new step times. The profile kept is the one whose replays came
closest to the training runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from adaptergym.profile import STEP_FEATURES, TwinProfile
from adaptergym.real_runs import Replay
from adaptergym.twin.frameworks import framework_of
from adaptergym.validation import Prediction, mape, predict_all

#: A replay serving less than this share of its offered load is saturated (busy all the time).
SATURATED = 0.97
#: Relative error below which the absolute-error fit is smoothed into a quadratic one (keeps it differentiable).
SMOOTHING = 0.01


@dataclasses.dataclass(frozen=True)
class Prior:
    """Where a coefficient should stay unless the runs say otherwise, and how firmly (1 = as firmly as the
    whole training set together pins a 100% relative deviation)."""

    value: float
    strength: float


def capped(items: Sequence[Replay], duration_s: float) -> list[Replay]:
    """The same runs, each simulated for at most ``duration_s`` (steady-state ITL needs no full hour)."""
    out = []
    for item in items:
        w = item.workload
        if w is not None and w.arrival.kind != "burst" and w.duration_s > duration_s:
            w = w.with_duration(duration_s)
        out.append(dataclasses.replace(item, workload=w))
    return out


def _mean_features(profile: TwinProfile, item: Replay, counts: Sequence[float]) -> np.ndarray:
    timer = framework_of(profile).step_timer(profile, item.config.resolved(profile))
    raw = np.asarray(counts, float)
    return timer.design(raw) / raw[0]


def fit_end_to_end(
    profile: TwinProfile,
    items: Sequence[Replay],
    priors: dict[str, Prior],
    *,
    rounds: int = 3,
    duration_s: float = 900.0,
    workers: int | None = None,
    free: Sequence[str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[TwinProfile, dict[str, Any]]:
    """Refit the step-time coefficients on ``items`` (runs measured ok); returns the profile and a fit report.
    Only the terms in ``free`` move (default: all); the others stay at 0."""
    moving = np.array([free is None or name in free for name in STEP_FEATURES])
    items = capped([i for i in items if i.status == "ok" and "mean_itl_ms" in i.measured], duration_s)
    history: list[dict[str, float]] = []
    tried: list[TwinProfile] = []  # the profile each round replayed with
    for round_no in range(1, rounds + 1):
        predictions = _replay(profile, items, workers, progress, f"end-to-end fit, round {round_no}/{rounds}")
        usable = [(i, p) for i, p in zip(items, predictions, strict=True)
                  if p.predicted_status == "ok" and len(p.counts) and p.counts[0] > 0
                  and np.isfinite(p.predicted.get("mean_itl_ms", np.nan))]
        y = np.array([i.measured["mean_itl_ms"] for i, _ in usable])
        now = np.array([p.predicted["mean_itl_ms"] for _, p in usable])
        history.append(_errors(round_no, items, predictions))
        tried.append(profile)
        features = np.stack([_mean_features(profile, i, p.counts) for i, p in usable])
        current = np.array(profile.step_time.vector())
        # relative residual: (now + x.(c - c0) - y) / y
        a = features / y[:, None]
        b = (y - now + features @ current) / y
        a_thr, b_thr = _throughput_rows(profile, items, predictions, current)
        a, b = np.vstack([a, a_thr]), np.concatenate([b, b_thr])
        scale = float(len(y))  # in absolute error, n runs 100% off weigh n
        prior_rows, prior_targets = [], []
        for j, name in enumerate(STEP_FEATURES):
            prior = priors.get(name)
            # A prior at 0 carries no scale to measure deviations against (and would pin the term): none.
            if prior is not None and prior.strength > 0 and abs(prior.value) > 1e-6:
                magnitude = abs(prior.value)
                row = np.zeros(len(STEP_FEATURES))
                row[j] = scale * prior.strength / magnitude
                prior_rows.append(row)
                prior_targets.append(scale * prior.strength * prior.value / magnitude)
        values = np.zeros(len(STEP_FEATURES))
        values[moving] = _robust_fit(np.vstack([a, *prior_rows])[:, moving], np.concatenate([b, prior_targets]),
                                     current[moving])
        coefficients = dict(zip(STEP_FEATURES, (float(c) for c in values), strict=True))
        step_time = dataclasses.replace(profile.step_time, coefficients=coefficients)
        profile = dataclasses.replace(profile, step_time=step_time)
    history.append(_errors(rounds + 1, items, _replay(profile, items, workers, progress, "end-to-end fit, check")))
    tried.append(profile)
    # Each round's fit is of a linearisation, so a round can land further from the data than the one before it:
    # keep the profile whose replays came closest to the training runs (the starting one, when no fit did).
    best = min(range(len(history)), key=lambda k: history[k]["train_itl_mape"])
    return tried[best], {"rows": len(items), "simulated_s_per_run": duration_s, "rounds": history,
                         "kept_round": history[best]["round"], "train_itl_mape": history[best]["train_itl_mape"],
                         "train_throughput_mape": history[best]["train_throughput_mape"]}


def _errors(round_no: int, items: Sequence[Replay], predictions: Sequence[Prediction]) -> dict[str, float]:
    """Training MAPE of mean ITL and throughput of one round's replays."""
    def error(metric: str) -> float:
        return mape(np.array([i.measured.get(metric, np.nan) for i in items]),
                    np.array([p.predicted.get(metric, np.nan) for p in predictions]))

    return {"round": round_no, "train_itl_mape": error("mean_itl_ms"),
            "train_throughput_mape": error("total_throughput"), "rows": len(items)}


def _robust_fit(a: np.ndarray, b: np.ndarray, start: np.ndarray) -> list[float]:
    """Coefficients >= 0 minimising the summed absolute residual of ``a @ c = b`` (smoothed below ``SMOOTHING``):
    a few training runs the step model cannot describe (some micro-benchmark bursts are 90% off) do not drag
    every other run along as they would in least squares."""
    solution = least_squares(lambda c: a @ c - b, np.maximum(start, 1e-9), jac=lambda c: a, bounds=(0, np.inf),
                             loss="soft_l1", f_scale=SMOOTHING)
    return [float(c) for c in solution.x]


def _throughput_rows(profile: TwinProfile, items: Sequence[Replay], predictions: Sequence[Prediction],
                     current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows asking saturated replays to match measured throughput.

    A replay that falls behind its load is busy all the time, so its throughput is its work over the time that
    work takes: new coefficients that make every step ``T_new / T_now`` as long scale throughput by the inverse.
    Matching the measured throughput asks the summed step time (``design(step_counts) @ c`` plus the scheduler
    and loading time the coefficients do not touch) to equal ``T_now * thr_now / thr_real``.
    """
    rows, targets = [], []
    for item, p in zip(items, predictions, strict=True):
        thr_real = item.measured.get("total_throughput", np.nan)
        thr_now, offered = p.predicted.get("total_throughput", np.nan), p.predicted.get("offered_throughput", 0.0)
        if (p.predicted_status != "ok" or not len(p.step_counts) or item.workload is None
                or item.workload.arrival.kind == "burst" or not (thr_real > 0 and thr_now > 0)
                or thr_now >= SATURATED * offered):
            continue
        timer = framework_of(profile).step_timer(profile, item.config.resolved(profile))
        raw = np.asarray(p.step_counts, float)
        design, overhead = timer.design(raw), raw[-1]
        target = (design @ current + overhead) * thr_now / thr_real
        rows.append(design / target)
        targets.append((target - overhead) / target)
    width = len(STEP_FEATURES)
    return (np.array(rows).reshape(-1, width), np.array(targets))


def _replay(profile: TwinProfile, items: Sequence[Replay], workers: int | None,
            progress: Callable[[str, int, int], None] | None, label: str) -> list[Prediction]:
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(label, done, len(items))

    return predict_all(items, {i.system: profile for i in items}, workers=workers, progress=tick)
