"""``adaptergym bench placement``: how fast the policies place a large workload, verified."""

from __future__ import annotations

import time

import numpy as np

from adaptergym.bench import BENCHMARKS, Row
from adaptergym.profile import load_profile
from adaptergym.workload import powerlaw_workload
from baselines import get_policy
from baselines.bound import lower_bound_gpus, single_adapter_bound_gpus
from baselines.capacity import capacity_model
from baselines.cost_model import cost_model

#: Issue target: placing 1,000 adapters with the surrogate (no twin runs), s.
PLACE_TARGET_S = 1.0
#: Issue target: placing 1,000 adapters, every GPU verified by the twin, s.
VERIFIED_TARGET_S = 10.0


@BENCHMARKS.register("placement")
def bench_placement() -> list[Row]:
    """Greedy and local-search on 1,000 Zipf adapters (alpha 1, 150 req/s, ranks 8/16/32, ShareGPT) on the default
    profile: greedy's surrogate packing alone, then each policy with its twin verification and repair; and the
    bounds. Loading the surrogate and the capacity and cost models (once per process) is timed apart. Surrogate
    prediction latency per workload is `adaptergym bench surrogate`."""
    from adaptergym.surrogate import load_surrogate

    profile = load_profile(None)
    workload = powerlaw_workload(1000, 150.0, alpha=1.0, rng=np.random.default_rng(0), duration_s=600.0)
    start = time.perf_counter()
    load_surrogate(profile)
    capacity = capacity_model(profile, workload.lengths)
    cost_model(profile, workload.lengths)
    for rank in (8, 16, 32):
        capacity.peak_tok_s(rank, 1)
    warm_s = time.perf_counter() - start
    rows: list[Row] = [{"benchmark": "placement", "metric": "warm-up (surrogate, capacity and cost models)",
                        "value": warm_s, "unit": "s", "target": ""}]
    for label, policy, options, target in (
            ("greedy, surrogate only", "greedy", {"verify": False}, f"<= {PLACE_TARGET_S:g}"),
            ("greedy, verified and repaired", "greedy", {}, ""),
            ("local-search, verified and repaired", "local-search", {}, f"<= {VERIFIED_TARGET_S:g}")):
        start = time.perf_counter()
        placement = get_policy(policy, **options).place(workload, profile)
        rows.append({"benchmark": "placement", "metric": f"{label}: 1,000 adapters ({placement.gpus} GPUs)",
                     "value": time.perf_counter() - start, "unit": "s", "target": target})
    for label, bound in (("lower bound", lower_bound_gpus), ("single-adapter bound", single_adapter_bound_gpus)):
        start = time.perf_counter()
        gpus = bound(workload, profile)
        rows.append({"benchmark": "placement", "metric": f"{label}, 1,000 adapters ({gpus} GPUs)",
                     "value": time.perf_counter() - start, "unit": "s", "target": ""})
    return rows
