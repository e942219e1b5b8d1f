"""Where the best placement of a large workload lies more than 1.15x above the lower bound, is the bound loose or
did the search miss a placement on the bound's count? For each workload named (default: the grid workloads of
``python -m baselines.bound_check`` that local-search places beyond 1.15x of the bound), local-search's packing
on the bound's GPU count as the twin sees it: each GPU's cost (by the bound's cost model) and its capacity (the
cost times the factor its rates can be scaled by and still pass verification, request draw 0).

If the capacities sum to less than the costs, no moving of load between these GPUs fits the workload on the
bound's count: the twin serves those mixes worse than the cost model credits (the bound is loose there, unless a
packing with other mixes serves better). If they sum to more, the count is within reach of a better search.

    python examples/bound_gap.py [WORKLOAD[:GPUS] ...]   # e.g. grid/zipf-300-150-a1.2; about 1-3 s each

A workload is a grid or README workload of the bound check (``readme/issue-600-150-a0.9``); ``:GPUS`` measures
the packing on that many GPUs instead of the bound's count.
"""

import sys

from adaptergym import load_profile
from baselines import get_policy
from baselines.bound import lower_bound_gpus
from baselines.bound_check import grid_workloads, readme_workloads

BEYOND = ("grid/zipf-300-150-a0.7", "grid/zipf-600-150-a0.7", "grid/zipf-1000-40-a0.7", "grid/zipf-1000-150-a0.9",
          "grid/zipf-1000-150-a1.2")

profile, workloads = load_profile(None), grid_workloads() | readme_workloads()
for arg in sys.argv[1:] or BEYOND:
    name, _, count = arg.partition(":")
    workload = workloads[name]
    bound = lower_bound_gpus(workload, profile)
    gpus = get_policy("local-search").capacities(workload, profile, int(count or bound))
    cost, capacity = sum(g[1] for g in gpus), sum(g[2] for g in gpus)
    print(f"{name}: bound {bound}; {len(gpus)} GPUs: cost {cost:.3f}, twin capacity {capacity:.3f} "
          f"({capacity / cost:.3f} of it); "
          "per GPU (rank class: cost/capacity): " + ", ".join(f"{k}: {c:.2f}/{cap:.2f}" for k, c, cap in gpus))
