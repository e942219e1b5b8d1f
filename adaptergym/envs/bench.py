"""``adaptergym bench envs``: environment speed, in fast mode and twin-scored."""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np

from adaptergym.bench import BENCHMARKS, Row
from adaptergym.profile import load_profile
from adaptergym.scoring import AnalyticScorer, GpuPlan, load_surrogate_scorer
from adaptergym.server_capacity import rank_cover, saturated_throughput
from adaptergym.workload import LengthSpec, powerlaw_workload

PLACEMENT, CACHING = "adaptergym/AdapterPlacement-v0", "adaptergym/AdapterCaching-v0"
FLEET = "adaptergym/AdapterFleet-v0"
#: The issue's target for AdapterFleet-v0 in fast mode, epoch steps per second.
FLEET_TARGET_STEPS_S = 500.0


def _episodes(env: gym.Env, episodes: int, options: dict | None, seed: int) -> tuple[int, list[float]]:
    """Run ``episodes`` with a uniformly random valid action; returns (steps, wall time of each episode, its
    reset included)."""
    rng = np.random.default_rng(seed)
    splits = np.cumsum(env.action_space.nvec)[:-1]
    steps, times = 0, []
    env.reset(seed=seed, options=options)
    for _ in range(episodes):
        start = time.perf_counter()
        _, info = env.reset(options=options)
        done = False
        while not done:
            parts = [np.flatnonzero(part) for part in np.split(info["action_mask"], splits)]
            _, _, done, _, info = env.step(np.array([part[rng.integers(part.size)] for part in parts]))
            steps += 1
        times.append(time.perf_counter() - start)
    return steps, times


@BENCHMARKS.register("envs")
def bench_envs() -> list[Row]:
    """AdapterPlacement-v0 with 100 adapters (Zipf rates, 60 req/s in all, ShareGPT lengths) on 8 GPUs, and
    AdapterCaching-v0 on its default scenario, driven by a random valid policy through ``gymnasium.make``
    (wrappers included, resets and end-of-episode scoring counted). Fast mode is the surrogate when one is
    trained for the profile, else the analytic scorer, whose capacity is compared with the twin's."""
    workload = powerlaw_workload(100, 60.0, alpha=1.0, rng=np.random.default_rng(0))
    pinned = {"workload": workload}
    fast = "surrogate" if load_surrogate_scorer(load_profile(None)) else "analytic"
    rows: list[Row] = []
    twin_env = gym.make(PLACEMENT, scorer="twin")
    steps, times = _episodes(twin_env, 5, pinned, seed=0)
    rows += [
        {"benchmark": "envs/placement-100x8", "metric": "twin-scored episode wall time (mean)",
         "value": float(np.mean(times)), "unit": "s", "target": "< 1"},
        {"benchmark": "envs/placement-100x8", "metric": "twin-scored episode wall time (max of 5)",
         "value": float(np.max(times)), "unit": "s", "target": "< 1"},
        {"benchmark": "envs/placement-100x8", "metric": "env steps / wall s (twin)",
         "value": steps / sum(times), "unit": "steps/s", "target": ""},
    ]
    steps, times = _episodes(gym.make(PLACEMENT, scorer=fast), 50, pinned, seed=0)
    rows.append({"benchmark": "envs/placement-100x8", "metric": f"env steps / wall s (fast mode, {fast})",
                 "value": steps / sum(times), "unit": "steps/s", "target": ">= 2000"})
    for scorer in ("twin", fast):
        steps, times = _episodes(gym.make(CACHING, scorer=scorer), 20, None, seed=0)
        rows.append({"benchmark": "envs/caching", "metric": f"episodes / wall s ({scorer})",
                     "value": steps / sum(times), "unit": "episodes/s", "target": ""})
    rows += _analytic_vs_twin()
    return rows


@BENCHMARKS.register("fleet-env")
def bench_fleet_env() -> list[Row]:
    """AdapterFleet-v0 through ``gymnasium.make`` (wrappers included), a random valid action per epoch: epoch
    steps per second in fast mode, resets (workload, arrival counts, the first epoch) counted, over 30 episodes
    of the three dynamic families (about 1,400 epochs); and one twin-scored episode of flash-crowd-v0 (2 h,
    5-minute epochs) at fill 0.5, hysteresis 0.25, slot fraction 0.5."""
    rows: list[Row] = []
    for scorer in ("analytic", "surrogate"):
        env = gym.make(FLEET, scorer=scorer)
        _episodes(env, 1, None, seed=1)  # warm-up: the surrogate trains, the reference capacity is measured
        cpu = time.process_time()
        steps, times = _episodes(env, 30, None, seed=0)
        cpu = time.process_time() - cpu
        rows += [{"benchmark": "envs/fleet", "metric": f"epoch steps / wall s (fast mode, {scorer}, resets "
                  f"included, {steps} steps)", "value": steps / sum(times), "unit": "steps/s",
                  "target": f">= {FLEET_TARGET_STEPS_S:g}"},
                 {"benchmark": "envs/fleet", "metric": f"epoch steps / CPU s of this process ({scorer}; wall on a "
                  "busy machine is lower)", "value": steps / cpu, "unit": "steps/s", "target": ""}]
    env = gym.make(FLEET, scorer="twin", scenario="flash-crowd-v0")
    start = time.perf_counter()
    env.reset(seed=0)
    done = False
    while not done:
        done = env.step(np.array([6, 2, 2]))[2]
    rows.append({"benchmark": "envs/fleet", "metric": "twin-scored episode (flash-crowd-v0, 24 epochs)",
                 "value": time.perf_counter() - start, "unit": "s", "target": ""})
    return rows


def _analytic_vs_twin() -> list[Row]:
    """The analytic scorer's capacity over the twin's saturated throughput, for a few GPU configurations."""
    profile = load_profile(None)
    analytic = AnalyticScorer(profile)
    rows: list[Row] = []
    for adapters, rank, slots in ((8, 16, 8), (8, 32, 8), (64, 16, 16), (100, 32, 96)):
        plan = GpuPlan(tuple(range(adapters)), slots, rank_cover(rank))
        estimate = analytic.capacity_tok_s(plan, np.full(adapters, rank), LengthSpec())
        twin = saturated_throughput(profile, LengthSpec(), adapters, rank, slots)
        rows.append({"benchmark": "envs/analytic-scorer", "metric":
                     f"capacity / twin saturated throughput ({adapters} adapters, rank {rank}, max_loras {slots})",
                     "value": estimate / twin, "unit": "ratio", "target": ""})
    return rows
