"""How far another request draw moves a calibration mix's starvation edge: the margin of the lower bound.

The capacity table takes each mix's edge as the largest over 4 request draws (``baselines.capacity.EDGE_SEEDS``);
placement verification draws requests with other seeds. For a sample of mixes (rank classes 16 and 32, the mixes
of 64-256 adapters, where the draws spread most), the edge of each of 24 single draws: its spread, and the largest
of all 24 over the largest of the first 4. ``baselines.bound.GPU_COST_LIMIT`` must cover that ratio (a concave
cost with ``c(0) = 0`` grows at most in proportion to the load).

    python examples/edge_spread.py      # about 1 min with 2 workers
"""

from concurrent.futures import ProcessPoolExecutor

import numpy as np

from adaptergym import load_profile
from adaptergym.workload import LengthSpec
from baselines.capacity import measure_mix_edge
from baselines.edge_table import calibration_mixes

MIXES = ("equal-64", "equal-128", "equal-256", "zipf-64-0.6", "zipf-64-1", "zipf-256-0.6", "zipf-256-1",
         "hot-4x0.5+cold-256")
COVERS = (16, 32)
DRAWS = range(24)


def edge(job: tuple[int, str, int]) -> tuple[int, str, int, float]:
    cover, name, seed = job
    found = measure_mix_edge(load_profile(None), LengthSpec(), cover, calibration_mixes()[name], seeds=(seed,))
    return cover, name, seed, found.load_tok_s


if __name__ == "__main__":
    edges: dict[tuple[int, str], list[float]] = {}
    with ProcessPoolExecutor(2) as pool:
        for cover, name, _, load in pool.map(edge, [(c, n, s) for c in COVERS for n in MIXES for s in DRAWS]):
            edges.setdefault((cover, name), []).append(load)
    ratios = []
    for (cover, name), loads in edges.items():
        e = np.array(loads)
        ratios.append(e.max() / e[:4].max())
        print(f"rank class {cover:>3} {name:>20}: spread (std of log edge) {np.std(np.log(e)):.3f}, "
              f"largest of {len(e)} / largest of the first 4 {ratios[-1]:.3f}")
    print(f"largest ratio {max(ratios):.3f}")
