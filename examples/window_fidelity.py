"""How often the environments' twin scorer, which simulates a short window, reaches the hour-long verdict on
starvation. Random 100-adapter placements (even trials: load-balanced with noise; odd: uniform), each GPU judged
by ``TwinScorer`` over a short window and by a 3,600-s twin run with the papers' rule. Takes about 80 s.

    python examples/window_fidelity.py [WINDOW_S ...]      # default: 120 300
"""

import sys

import numpy as np

from adaptergym import ReplicaPlan, load_profile, simulate_placement
from adaptergym.scoring import GpuPlan, TwinScorer
from adaptergym.server_capacity import rank_cover
from adaptergym.workload import powerlaw_workload

windows = [float(w) for w in sys.argv[1:]] or [120.0, 300.0]
profile = load_profile(None)
rng = np.random.default_rng(11)
hour, short = [], {w: [] for w in windows}
for trial in range(16):
    workload = powerlaw_workload(100, float(rng.uniform(10, 90)), alpha=float(rng.uniform(0.5, 1.5)), rng=rng)
    gpus = int(rng.integers(3, 12))
    load, assignment = np.zeros(gpus), np.zeros(100, int)
    for i in np.argsort([-a.rate for a in workload.adapters]):
        g = int(np.argmin(load * rng.uniform(0.7, 1.3, gpus))) if trial % 2 == 0 else int(rng.integers(gpus))
        assignment[i], load[g] = g, load[g] + workload.adapters[i].rate
    max_loras = int(rng.choice([4, 8, 16, 32]))
    plans = [GpuPlan(tuple(np.flatnonzero(assignment == g).tolist()), max_loras,
                     rank_cover(max(workload.adapters[i].rank for i in np.flatnonzero(assignment == g))))
             for g in range(gpus) if (assignment == g).any()]
    replicas = [ReplicaPlan(p.config(), tuple(workload.adapters[i].id for i in p.adapters)) for p in plans]
    hour += [m.starved for m in simulate_placement(workload, replicas, profile, seed=trial).replicas]
    for window in windows:
        short[window] += TwinScorer(profile, window).score(workload, plans, seed=trial).starved.tolist()
truth = np.array(hour)
print(f"{truth.size} GPUs, {truth.sum()} starved over an hour")
for window in windows:
    verdict = np.array(short[window])
    print(f"window {window:.0f} s: same verdict on {100 * np.mean(verdict == truth):.1f}% of GPUs, "
          f"{np.sum(verdict & ~truth)} called starved that are not, {np.sum(~verdict & truth)} starved missed")
