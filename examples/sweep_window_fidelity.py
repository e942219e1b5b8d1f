"""How well the sweep's short windows agree with hour-long twin runs judged by the papers' rule.

The first POINTS points of the shipped sweep (seed 0) are labelled as the sweep labels them (a 300-s window,
steady state after a 20% warm-up) and run again for 3,600 s with the papers' definitions (throughput = tokens of
requests finished within the hour / 3,600 s; starved when it falls 10% short of the tokens that arrived).
Points whose server does not start agree trivially and are left out. Figures are split at max_loras 4: with
few slots and many adapters the twin's throughput climbs as the queue grows (each adapter load serves more
queued requests), so a short window under-states an hour. Two processes; about a minute.

    python examples/sweep_window_fidelity.py [POINTS]      # default: 120
"""

import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from adaptergym import ServerConfig, load_profile, simulate
from adaptergym.surrogate.evaluation import smape
from adaptergym.sweep import SweepPoint, SweepSettings, label_point, sweep_points

LONG_S = 3600.0
profile = load_profile(None)
settings = SweepSettings(profile, sweep_seed=0, window_s=300.0)


def both(point: SweepPoint) -> tuple[dict, tuple[float, float, bool]]:
    short = label_point(point, settings)
    config = ServerConfig(max_loras=point.max_loras, max_cpu_loras=max(point.max_loras, point.recipe.num_adapters))
    hour = simulate(point.recipe.workload(LONG_S), profile, config, seed=point.seed)
    return short, (hour.offered_throughput, hour.total_throughput, hour.starved)


if __name__ == "__main__":
    points = sweep_points(0, int(sys.argv[1]) if len(sys.argv) > 1 else 120)
    with ProcessPoolExecutor(2) as pool:
        pairs = [(s, h) for s, h in pool.map(both, points, chunksize=4) if s["startup"] == "ok"]
    short_served = np.array([s["served_tok_s"] for s, _ in pairs])
    hour_served = np.array([h[1] for _, h in pairs])
    short_ratio = np.array([s["served_ratio"] for s, _ in pairs])
    hour_ratio = np.array([h[1] / h[0] for _, h in pairs])
    short_starved = np.array([s["starved"] for s, _ in pairs])
    hour_starved = np.array([h[2] for _, h in pairs])
    print(f"{len(pairs)} points that start ({len(points) - len(pairs)} do not); "
          f"{hour_starved.sum()} starved over an hour, {short_starved.sum()} in the 300-s window")
    print(f"same starvation verdict: {100 * np.mean(short_starved == hour_starved):.1f}% "
          f"(short says starved, hour not: {np.sum(short_starved & ~hour_starved)}; "
          f"hour says starved, short not: {np.sum(~short_starved & hour_starved)})")
    few_slots = np.array([s["max_loras"] <= 4 for s, _ in pairs])
    for name, keep in (("all", np.ones_like(few_slots)), ("max_loras <= 4", few_slots), ("max_loras > 4", ~few_slots)):
        print(f"{name} ({keep.sum()} points): served tokens/s, 300-s window vs hour: SMAPE "
              f"{smape(hour_served[keep], short_served[keep]):.1f}%; served ratio: mean |difference| "
              f"{np.mean(np.abs(short_ratio[keep] - hour_ratio[keep])):.3f}; same verdict "
              f"{100 * np.mean(short_starved[keep] == hour_starved[keep]):.1f}%")
