"""``adaptergym bench placement``: how fast the published pipeline places a large workload."""

from __future__ import annotations

import time

import numpy as np

from adaptergym.bench import BENCHMARKS, Row
from adaptergym.profile import load_profile
from adaptergym.workload import powerlaw_workload
from baselines import get_policy
from baselines.capacity import capacity_model
from baselines.exact import lower_bound_gpus

#: Issue target: placing 1,000 adapters with the surrogate (no twin runs), s.
PLACE_TARGET_S = 1.0


@BENCHMARKS.register("placement")
def bench_placement() -> list[Row]:
    """Greedy on 1,000 Zipf adapters (alpha 1, 150 req/s, ranks 8/16/32, ShareGPT) on the default profile: the
    surrogate's packing alone (the issue's target), then with twin verification and repair; and the lower bound.
    The capacity model's one-off peak measurements are timed apart. Surrogate prediction latency per workload
    is `adaptergym bench surrogate`."""
    from adaptergym.surrogate import load_surrogate

    profile = load_profile(None)
    workload = powerlaw_workload(1000, 150.0, alpha=1.0, rng=np.random.default_rng(0), duration_s=600.0)
    start = time.perf_counter()
    load_surrogate(profile)
    capacity = capacity_model(profile, workload.lengths)
    for rank in (8, 16, 32):
        capacity.peak_tok_s(rank, 1)
    warm_s = time.perf_counter() - start
    rows: list[Row] = [{"benchmark": "placement", "metric": "warm-up (surrogate, capacity peaks)", "value": warm_s,
                        "unit": "s", "target": ""}]
    get_policy("greedy", verify=False).place(workload, profile)  # measures the remaining peaks once
    for label, options, target in (("greedy, surrogate only", {"verify": False}, f"<= {PLACE_TARGET_S:g}"),
                                   ("greedy, verified and repaired", {}, "")):
        start = time.perf_counter()
        placement = get_policy("greedy", **options).place(workload, profile)
        rows.append({"benchmark": "placement", "metric": f"{label}: 1,000 adapters ({placement.gpus} GPUs)",
                     "value": time.perf_counter() - start, "unit": "s", "target": target})
    start = time.perf_counter()
    bound = lower_bound_gpus(workload, profile)
    rows.append({"benchmark": "placement", "metric": f"lower bound, 1,000 adapters ({bound} GPUs)",
                 "value": time.perf_counter() - start, "unit": "s", "target": ""})
    return rows
