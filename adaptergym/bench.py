"""The project's own speed benchmarks (``adaptergym bench``): twin, and whatever other parts register.

Each benchmark is a function returning rows ``{"benchmark", "metric", "value", "unit", "target"}``; other
modules add theirs with ``@BENCHMARKS.register(name)`` (looked up lazily through ``BENCHMARK_MODULES``).
"""

from __future__ import annotations

import importlib
import resource
import sys
import time
from collections.abc import Callable

from adaptergym.registry import Registry

Row = dict[str, object]
BENCHMARKS: Registry[list[Row]] = Registry("benchmark")

#: Modules that register benchmarks when imported (kept lazy so `bench twin` does not import torch).
BENCHMARK_MODULES = ("adaptergym.bench", "adaptergym.envs.bench", "adaptergym.surrogate.bench", "baselines.bench",
                     "adaptergym.advise.bench")


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _timed(fn: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


@BENCHMARKS.register("twin")
def bench_twin() -> list[Row]:
    """One simulated hour of a saturated GPU: Llama profile, 384 adapters, rates 1.6/0.8/0.4 req/s cycled,
    ranks 8/16/32 cycled, ShareGPT lengths, max_loras 64 (the issue's reference scenario); and a paper-like
    unsaturated hour (128 adapters, rates 0.1/0.05/0.025, max_loras 128)."""
    from adaptergym import ServerConfig, load_profile
    from adaptergym.metrics import summarize
    from adaptergym.simulation import draw_requests
    from adaptergym.twin import run_replica
    from adaptergym.twin.config import default_rank
    from adaptergym.workload import cycled_workload

    profile = load_profile(None)
    rows: list[Row] = []
    cases = [
        ("saturated-384", cycled_workload(384, [1.6, 0.8, 0.4], [8, 16, 32]), ServerConfig(max_loras=64)),
        ("paper-128", cycled_workload(128, [0.1, 0.05, 0.025], [8, 16]), ServerConfig(max_loras=128)),
    ]
    for name, workload, config in cases:
        requests, draw_s = _timed(lambda w=workload: draw_requests(w, seed=0))
        cfg = default_rank(config, requests.adapter_ranks).resolved(profile)
        record, run_s = _timed(lambda r=requests, c=cfg: run_replica(profile, c, r))
        metrics = summarize(record)
        rows += [
            {"benchmark": f"twin/{name}", "metric": "simulated s per wall s", "value": 3600.0 / run_s,
             "unit": "x real time", "target": ">= 1800 (1 h in < 2 s)" if name.startswith("sat") else ""},
            {"benchmark": f"twin/{name}", "metric": "wall time (engine)", "value": run_s, "unit": "s",
             "target": "< 2" if name.startswith("sat") else ""},
            {"benchmark": f"twin/{name}", "metric": "wall time (request draw)", "value": draw_s, "unit": "s",
             "target": ""},
            {"benchmark": f"twin/{name}", "metric": "engine steps / wall s", "value": metrics.steps / run_s,
             "unit": "steps/s", "target": ""},
            {"benchmark": f"twin/{name}", "metric": "requests arrived", "value": metrics.arrived_requests,
             "unit": "", "target": ""},
        ]
    rows.append({"benchmark": "twin", "metric": "peak RSS of this process", "value": _peak_rss_mb(), "unit": "MB",
                 "target": "< 500"})
    return rows


@BENCHMARKS.register("workload")
def bench_workload() -> list[Row]:
    """Drawing the requests of a time-varying workload: the first test workload of each dynamic scenario (hours
    of traffic, 64-192 adapters), by inverting each adapter's cumulative rate; and the same adapters at constant
    rates for comparison."""
    import numpy as np

    from adaptergym.scenarios import get_scenario
    from adaptergym.workload import sample_requests

    rows: list[Row] = []
    for name in ("diurnal-v0", "flash-crowd-v0", "drift-v0"):
        scenario = get_scenario(name)
        workload = scenario.workload(scenario.test_seeds[0])
        for label, w in ((name, workload), (f"{name} constant", workload.with_schedule(()))):
            requests, draw_s = _timed(lambda w=w: sample_requests(w, np.random.default_rng(0)))
            hours = w.duration_s / 3600
            rows += [
                {"benchmark": f"workload/{label}", "metric": "wall time (request draw)", "value": draw_s, "unit": "s",
                 "target": ""},
                {"benchmark": f"workload/{label}", "metric": "requests drawn", "value": len(requests),
                 "unit": f"in {hours:g} h, {len(w.adapters)} adapters", "target": ""},
            ]
    return rows


def run_benchmarks(names: list[str] | None = None) -> list[Row]:
    for module in BENCHMARK_MODULES:
        importlib.import_module(module)
    rows: list[Row] = []
    for name in names or BENCHMARKS.names():
        rows += BENCHMARKS.get(name)()
    return rows
