"""``adaptergym bench surrogate``: training time and prediction latency of the shipped surrogate."""

from __future__ import annotations

import time

import numpy as np

from adaptergym.bench import BENCHMARKS, Row
from adaptergym.profile import DEFAULT_PROFILE
from adaptergym.surrogate.evaluation import prediction_latency
from adaptergym.surrogate.features import gpu_features
from adaptergym.surrogate.shipped import clear_cache, load_surrogate
from adaptergym.sweep.points import sweep_points

#: Issue target: predicting one workload (one GPU's row) in a batch (the paper measured 0.12-0.15 ms).
BATCHED_TARGET_MS = 0.02


@BENCHMARKS.register("surrogate")
def bench_surrogate() -> list[Row]:
    """The default profile's surrogate: training on its shipped dataset, then ``predict`` on 10,000 GPU rows
    of random sweep workloads at random levels (one row per call, and all in one call), and ``best_levels``
    choosing max_loras for 1,000 such GPUs in one call (each tried at up to 14 levels)."""
    clear_cache()
    start = time.perf_counter()
    model = load_surrogate(DEFAULT_PROFILE)
    fit_s = time.perf_counter() - start
    if model is None:
        return [{"benchmark": "surrogate", "metric": "shipped dataset", "value": "missing", "unit": "",
                 "target": f"adaptergym sweep --profile {DEFAULT_PROFILE} --ship"}]
    points = sweep_points(12345, 10_000)
    rows = np.stack([gpu_features(*p.recipe.arrays(), p.max_loras, p.recipe.lengths) for p in points])
    out: list[Row] = [{"benchmark": "surrogate", "metric": "train on the shipped dataset", "value": fit_s,
                       "unit": "s", "target": "< 5"}]
    for name, figures in prediction_latency(model, rows).items():
        out += [
            {"benchmark": f"surrogate/{name}", "metric": "predict, 1 row per call",
             "value": figures["ms_per_call_1_row"], "unit": "ms/call", "target": ""},
            {"benchmark": f"surrogate/{name}", "metric": "predict, 10,000 rows in one call",
             "value": figures["ms_per_row_batched"], "unit": "ms/row", "target": f"<= {BATCHED_TARGET_MS}"},
        ]
    groups = [p.recipe.arrays() for p in points[:1000]]
    lengths = points[0].recipe.lengths
    for name in ("accurate", "tree"):
        start = time.perf_counter()
        model.best_levels(groups, lengths, name)
        out.append({"benchmark": f"surrogate/{name}", "metric": "best max_loras, 1,000 GPUs in one call",
                    "value": 1e3 * (time.perf_counter() - start) / len(groups), "unit": "ms/GPU", "target": ""})
    return out
