"""How good the surrogate is: held-out twin workloads, real vLLM runs, choice of max_loras, prediction speed.

Held-out data is split by workload (every level of a workload on the same side), so the score measures
workloads the model never saw. Two baselines frame it: ``mean`` predicts the training set's mean served ratio
and its majority starvation verdict; ``capacity`` serves ``min(offered, C)`` with C the median throughput of
the starved training rows (one saturated GPU), starved when offered exceeds C / 0.9.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit

from adaptergym.errors import DataError
from adaptergym.metrics import STARVATION_THRESHOLD
from adaptergym.profile import TwinProfile
from adaptergym.surrogate.features import COLUMN, gpu_features
from adaptergym.surrogate.model import MODELS, STARVED_PROBABILITY, Surrogate, dataset_features
from adaptergym.surrogate.shipped import SHIPPED_WINDOW_S
from adaptergym.sweep.label import SweepSettings, label_workload
from adaptergym.workload import AdapterSpec, LengthSpec, WorkloadSpec

Predictor = Callable[[np.ndarray], dict[str, np.ndarray]]


def smape(y: np.ndarray, y_hat: np.ndarray) -> float:
    """Standard SMAPE, percent: ``100 mean(2|y - ŷ| / (|y| + |ŷ|))`` (0 where both are 0)."""
    denom = np.abs(y) + np.abs(y_hat)
    return float(100.0 * np.mean(np.where(denom > 0, 2.0 * np.abs(y - y_hat) / np.where(denom > 0, denom, 1), 0)))


def mape(y: np.ndarray, y_hat: np.ndarray) -> float:
    """MAPE, percent, over rows with ``y > 0``."""
    keep = y > 0
    return float(100.0 * np.mean(np.abs(y[keep] - y_hat[keep]) / y[keep])) if keep.any() else float("nan")


def split_by_workload(frame: pd.DataFrame, test_fraction: float = 0.25, seed: int = 0) -> tuple[pd.DataFrame,
                                                                                                   pd.DataFrame]:
    """Train and test rows, every row of a workload on the same side."""
    groups = frame["sweep_seed"].astype(str) + "/" + frame["workload_id"].astype(str)
    if groups.nunique() < 2:
        raise DataError("surrogate data: held-out evaluation needs rows of at least two workloads")
    train, test = next(GroupShuffleSplit(1, test_size=test_fraction, random_state=seed).split(frame, groups=groups))
    return frame.iloc[train], frame.iloc[test]


def baselines(train: pd.DataFrame) -> dict[str, Predictor]:
    """The two reference predictors (module docstring), fitted on ``train``."""
    started = train[train["startup"] == "ok"]
    ratio = float(started["served_ratio"].mean())
    majority = float(started["starved"].astype(bool).mean() >= 0.5)
    saturated = started.loc[started["starved"].astype(bool), "served_tok_s"]
    capacity = float(saturated.median()) if len(saturated) else float(started["served_tok_s"].max())

    def mean(rows: np.ndarray) -> dict[str, np.ndarray]:
        offered = rows[:, COLUMN["offered_tok_s"]]
        return {"throughput": ratio * offered, "starved_prob": np.full(len(rows), majority)}

    def cap(rows: np.ndarray) -> dict[str, np.ndarray]:
        offered = rows[:, COLUMN["offered_tok_s"]]
        return {"throughput": np.minimum(offered, capacity),
                "starved_prob": (offered * (1.0 - STARVATION_THRESHOLD) > capacity).astype(float)}

    return {"mean": mean, "capacity": cap}


def score(predicted: dict[str, np.ndarray], served: np.ndarray, starved: np.ndarray) -> dict[str, float]:
    """Throughput and starvation accuracy of one predictor on rows with known outcomes."""
    verdict = np.asarray(predicted["starved_prob"]) >= STARVED_PROBABILITY
    return {"throughput_smape": smape(served, predicted["throughput"]),
            "throughput_mape": mape(served, predicted["throughput"]),
            "starved_accuracy": float(np.mean(verdict == starved)),
            "n": len(served)}


def slot_choice(model: Surrogate, test: pd.DataFrame, which: str) -> dict[str, float]:
    """How well the model picks ``max_loras`` among the levels the twin ran for each held-out workload.

    Returns the share of workloads where the pick is the twin's best level (highest served throughput among
    non-starved levels, or among all when all starve), and the mean twin throughput at the pick over the
    twin's best (1 = always as good).
    """
    hits, ratios = [], []
    for _, group in test.groupby(["sweep_seed", "workload_id"], sort=False):
        if len(group) < 2:
            continue
        rows = dataset_features(group)
        predicted = model.predict(rows, which)
        twin_ok = (group["startup"] == "ok").to_numpy() & ~group["starved"].astype(bool).to_numpy()
        served = group["served_tok_s"].to_numpy()
        twin_pool = twin_ok if twin_ok.any() else np.ones(len(group), bool)
        best = served[twin_pool].max()
        pool = predicted["startup_ok"] & (predicted["starved_prob"] < STARVED_PROBABILITY)
        pool = pool if pool.any() else predicted["startup_ok"]
        if not pool.any():
            continue
        pick = np.flatnonzero(pool)[np.argmax(predicted["throughput"][pool])]
        hits.append(twin_pool[pick] and served[pick] >= 0.99 * best)
        ratios.append(served[pick] / best if best > 0 else 1.0)
    return {"best_level_share": float(np.mean(hits)) if hits else float("nan"),
            "throughput_vs_best": float(np.mean(ratios)) if ratios else float("nan"), "workloads": len(hits)}


def holdout_report(frame: pd.DataFrame, profile: TwinProfile, seed: int = 0) -> dict[str, Any]:
    """Train on 75% of the workloads of ``frame``, score on the rest (rows that started).

    Returns:
        ``{"train_rows", "test_rows", "models": {name: score}, "slot_choice": {model: ...}}`` where names are
        ``accurate``, ``tree`` and the baselines ``mean`` and ``capacity``.
    """
    train, test = split_by_workload(frame, seed=seed)
    model = Surrogate.fit(train, profile)
    started = test[test["startup"] == "ok"]
    rows = dataset_features(started)
    served = started["served_tok_s"].to_numpy(np.float64)
    starved = started["starved"].astype(bool).to_numpy()
    scores = {name: score(dict(model.predict(rows, name)), served, starved) for name in MODELS}
    scores |= {name: score(predict(rows), served, starved) for name, predict in baselines(train).items()}
    return {"train_rows": len(train), "test_rows": len(started), "models": scores,
            "slot_choice": {name: slot_choice(model, test, name) for name in MODELS}}


@dataclass(frozen=True, slots=True)
class RealGpu:
    """The one-GPU configuration of a real run: per-adapter rates (req/s) and ranks, slots, lengths."""

    rates: np.ndarray
    ranks: np.ndarray
    max_loras: int
    lengths: LengthSpec

    def features(self) -> np.ndarray:
        return gpu_features(self.rates, self.ranks, self.max_loras, self.lengths)

    def workload(self) -> WorkloadSpec:
        return WorkloadSpec(tuple(AdapterSpec(f"a{i:04d}", int(k), float(r))
                                  for i, (r, k) in enumerate(zip(self.rates, self.ranks, strict=True))), self.lengths)


def real_gpus(runs: pd.DataFrame, model_name: str) -> tuple[list[RealGpu], pd.DataFrame]:
    """The real runs of ``model_name`` that finished (status ``ok``) with LoRA adapters, as GPU configurations.

    Rates are ``adapter_rate_values`` repeated ``adapter_rate_counts`` times, ranks cycle
    ``dummy_lora_ranks_cycle``, ``max_loras`` is ``srv_max_loras``; lengths are ShareGPT, or the fixed
    synthetic lengths the run used.
    """
    needed = ("status", "model", "adapter_rate_values", "adapter_rate_counts", "dummy_lora_ranks_cycle",
              "srv_max_loras", "total_throughput_tok_s", "est_offered_load_tok_s")
    missing = [c for c in needed if c not in runs]
    if missing:
        raise DataError(f"real runs: no column(s) {missing}; pass a CSV with the columns of real_runs.csv")
    keep = (runs["status"] == "ok") & (runs["model"] == model_name) & runs["adapter_rate_values"].notna() \
        & runs["dummy_lora_ranks_cycle"].notna() & runs["srv_max_loras"].notna()
    chosen = runs[keep]
    gpus = []
    for _, run in chosen.iterrows():
        values = np.array(str(run["adapter_rate_values"]).split(), float)
        counts = np.array(str(run["adapter_rate_counts"]).split(), float).astype(int)
        rates = np.repeat(values, counts)
        cycle = np.array(str(run["dummy_lora_ranks_cycle"]).split(), float).astype(int)
        lengths = LengthSpec()
        if str(run.get("bench_use_synthetic_dataset", "")).lower() == "true":
            lengths = LengthSpec("fixed", int(run["bench_synthetic_input_length"]),
                                 int(run["bench_synthetic_output_length"]))
        gpus.append(RealGpu(rates, cycle[np.arange(rates.size) % cycle.size], int(run["srv_max_loras"]), lengths))
    return gpus, chosen


def _twin_served(gpu: RealGpu, settings: SweepSettings) -> float:
    return float(label_workload(gpu.workload(), gpu.max_loras, 0, settings)["served_tok_s"])


def real_runs_report(model: Surrogate, runs: pd.DataFrame, twin_workers: int = 0) -> dict[str, Any]:
    """Predicted vs measured ``total_throughput_tok_s`` on the real runs of the model's profile.

    Real starvation is the papers' rule against the run's estimated offered load (``est_offered_load_tok_s``).
    With ``twin_workers`` > 0, each run's configuration is also labelled by the twin as the sweep labels its
    points (``SHIPPED_WINDOW_S`` window, that many processes), which splits the surrogate's error against
    reality into the twin's own error and the surrogate's error against the twin.
    """
    gpus, chosen = real_gpus(runs, model.profile.model)
    if not gpus:
        return {"model": model.profile.model, "runs": 0}
    rows = np.stack([g.features() for g in gpus])
    served = chosen["total_throughput_tok_s"].to_numpy(np.float64)
    offered = chosen["est_offered_load_tok_s"].to_numpy(np.float64)
    starved = served < (1.0 - STARVATION_THRESHOLD) * offered
    report: dict[str, Any] = {
        "model": model.profile.model, "runs": len(gpus), "starved_runs": int(starved.sum()),
        "models": {name: score(dict(model.predict(rows, name)), served, starved) for name in MODELS}}
    if twin_workers > 0:
        settings = SweepSettings(model.profile, window_s=SHIPPED_WINDOW_S)
        with ProcessPoolExecutor(twin_workers) as pool:
            twin = np.array(list(pool.map(_twin_served, gpus, [settings] * len(gpus), chunksize=8)))
        report["twin_vs_real_smape"] = smape(served, twin)
        report["surrogate_vs_twin_smape"] = {name: smape(twin, model.predict(rows, name)["throughput"])
                                             for name in MODELS}
    return report


def prediction_latency(model: Surrogate, rows: np.ndarray, repeats: int = 20) -> dict[str, dict[str, float]]:
    """Wall time of ``predict``: one row per call, and per row in one call over all of ``rows`` (ms)."""
    out = {}
    for name in MODELS:
        model.predict(rows[:1], name)
        start = time.perf_counter()
        for i in range(repeats):
            model.predict(rows[i % len(rows): i % len(rows) + 1], name)
        single = (time.perf_counter() - start) / repeats
        start = time.perf_counter()
        model.predict(rows, name)
        batch = (time.perf_counter() - start) / len(rows)
        out[name] = {"ms_per_call_1_row": 1e3 * single, "ms_per_row_batched": 1e3 * batch, "batch_rows": len(rows)}
    return out
