"""How far above the capacity table's edge another request draw passes verification: the margin of the lower bound.

The capacity table keeps each calibration mix's edge as the largest found over the request draws of
``baselines.capacity.EDGE_SEEDS``; placement verification draws requests with other seeds. For a sample of mixes
(rank classes 16 and 32 with the mixes of 64-256 adapters, where the draws spread most, and rank class 8 with
512-1,024 adapters; Poisson arrivals, and Gamma arrivals at each CV the table covers), the edge of each of 24
fresh draws alone (seeds the table never used), and the largest of them over the table's edge for those arrivals
(``CapacityTable.edges_for``). ``baselines.bound.GPU_COST_LIMITS`` must cover the largest of these ratios, per
arrival kind (a concave cost with ``c(0) = 0`` grows at most in proportion to the load).

    python examples/edge_spread.py [DRAWS]      # default 24 fresh draws; about 3 min with 2 workers
"""

import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from adaptergym import load_profile
from adaptergym.workload import ArrivalSpec, LengthSpec
from baselines.capacity import EDGE_SEEDS, POISSON, measure_mix_edge
from baselines.edge_table import GAMMA_CVS, calibration_mixes, shipped_table

#: (rank class, mix) pairs measured under Poisson arrivals, and under Gamma arrivals.
SPREAD_MOST = ("equal-64", "equal-128", "equal-256", "zipf-64-0.6", "zipf-64-1", "zipf-256-0.6", "zipf-256-1",
               "hot-4x0.5+cold-256")
CELLS = [(cover, name) for cover in (16, 32) for name in SPREAD_MOST]
CELLS += [(8, "equal-512"), (8, "equal-1024"), (8, "zipf-1024-0.6")]
GAMMA_CELLS = [(cover, name) for cover in (16, 32) for name in ("equal-256", "zipf-256-0.6", "hot-4x0.5+cold-256")]
FIRST_FRESH_SEED = 1000


def edge(job: tuple[int, str, ArrivalSpec, int]) -> tuple[int, str, ArrivalSpec, float]:
    cover, name, arrival, seed = job
    found = measure_mix_edge(load_profile(None), LengthSpec(), cover, calibration_mixes()[name], seeds=(seed,),
                             arrival=arrival)
    return cover, name, arrival, found.load_tok_s


if __name__ == "__main__":
    draws = range(FIRST_FRESH_SEED, FIRST_FRESH_SEED + (int(sys.argv[1]) if len(sys.argv) > 1 else 24))
    assert not set(draws) & set(EDGE_SEEDS)
    table = shipped_table(load_profile(None), LengthSpec())
    arrivals = [(POISSON, CELLS)] + [(ArrivalSpec("gamma", cv), GAMMA_CELLS) for cv in GAMMA_CVS]
    jobs = [(cover, name, arrival, seed) for arrival, cells in arrivals for cover, name in cells for seed in draws]
    edges: dict[tuple[int, str, ArrivalSpec], list[float]] = {}
    with ProcessPoolExecutor(2) as pool:
        for cover, name, arrival, load in pool.map(edge, jobs):
            edges.setdefault((cover, name, arrival), []).append(load)
    ratios: dict[str, list[float]] = {}
    for (cover, name, arrival), loads in edges.items():
        e, kept = np.array(loads), table.edges_for(arrival)[cover][name].load_tok_s
        ratios.setdefault(arrival.kind, []).append(e.max() / kept)
        label = "Poisson" if arrival.kind == "poisson" else f"Gamma CV {arrival.cv:g}"
        print(f"{label:>12} rank class {cover:>3} {name:>20}: spread (std of log edge) {np.std(np.log(e)):.3f}, "
              f"largest of {len(e)} fresh draws / table edge {ratios[arrival.kind][-1]:.3f}")
    for kind, found in ratios.items():
        print(f"largest ratio, {kind} arrivals: {max(found):.3f}")
