"""The project's own speed benchmarks (``adaptergym bench``): twin, and whatever other parts register.

Each benchmark is a function returning rows ``{"benchmark", "metric", "value", "unit", "target"}``; other
modules add theirs with ``@BENCHMARKS.register(name)`` (looked up lazily through ``BENCHMARK_MODULES``).
"""

from __future__ import annotations

import importlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from adaptergym.registry import Registry

if TYPE_CHECKING:
    from adaptergym.workload import WorkloadSpec

Row = dict[str, object]
BENCHMARKS: Registry[list[Row]] = Registry("benchmark")

#: Modules that register benchmarks when imported (kept lazy so `bench twin` does not import torch).
BENCHMARK_MODULES = ("adaptergym.bench", "adaptergym.envs.bench", "adaptergym.surrogate.bench", "baselines.bench",
                     "adaptergym.advise.bench", "baselines.online.bench")


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _timed(fn: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


#: The saturated reference hour as the README's command runs it (workload file, then server flags).
SATURATED_COMMAND = ("simulate", "--workload", "{workload}", "--max-loras", "64", "--json")


def _best_of(repeats: int, fn: Callable[[], object]) -> tuple[object, float]:
    """Result and the least wall time of ``repeats`` calls (the least is the least disturbed on a shared box)."""
    timings = [_timed(fn) for _ in range(repeats)]
    return timings[-1][0], min(t for _, t in timings)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _process_s(workload: WorkloadSpec, repeats: int) -> tuple[float, float]:
    """Least wall time and least CPU time (user + system) of a whole ``adaptergym simulate --json`` process of
    ``workload``, start-up included. On a box shared with other work the CPU time is what the wall time would
    be on an idle one."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "workload.json"
        path.write_text(json.dumps(workload.to_dict()))
        command = [sys.executable, "-m", "adaptergym", *(a.format(workload=path) for a in SATURATED_COMMAND)]
        wall, cpu = [], []
        for _ in range(repeats):
            before = _children_cpu_s()
            wall.append(_timed(lambda: subprocess.run(command, check=True, capture_output=True))[1])
            cpu.append(_children_cpu_s() - before)
        return min(wall), min(cpu)


@BENCHMARKS.register("twin")
def bench_twin() -> list[Row]:
    """One simulated hour of a saturated GPU: Llama profile, 384 adapters, rates 1.6/0.8/0.4 req/s cycled,
    ranks 8/16/32 cycled, ShareGPT lengths, max_loras 64 (the issue's reference scenario, also
    ``examples/workloads/saturated_384_adapters.json``); and a paper-like unsaturated hour (128 adapters, rates
    0.1/0.05/0.025, max_loras 128). Engine times are the least of three runs, as is the whole
    ``adaptergym simulate --json`` process of the saturated hour."""
    from adaptergym import ServerConfig, load_profile
    from adaptergym.metrics import summarize
    from adaptergym.simulation import draw_requests
    from adaptergym.twin import run_replica
    from adaptergym.twin.config import default_rank
    from adaptergym.twin.engine import ReplicaEngine
    from adaptergym.workload import cycled_workload

    profile = load_profile(None)
    rows: list[Row] = [{"benchmark": "twin", "metric": "engine", "value": ReplicaEngine.__name__, "unit": "",
                        "target": "CompiledEngine"}]
    saturated = cycled_workload(384, [1.6, 0.8, 0.4], [8, 16, 32])
    cases = [
        ("saturated-384", saturated, ServerConfig(max_loras=64)),
        ("paper-128", cycled_workload(128, [0.1, 0.05, 0.025], [8, 16]), ServerConfig(max_loras=128)),
    ]
    for name, workload, config in cases:
        sat = name.startswith("sat")
        requests, draw_s = _timed(lambda w=workload: draw_requests(w, seed=0))
        cfg = default_rank(config, requests.adapter_ranks).resolved(profile)
        record, run_s = _best_of(3, lambda r=requests, c=cfg: run_replica(profile, c, r))
        metrics, summarize_s = _timed(lambda r=record: summarize(r))
        rows += [
            {"benchmark": f"twin/{name}", "metric": "simulated s per wall s", "value": 3600.0 / run_s,
             "unit": "x real time", "target": ">= 5000 (1 h in <= 0.7 s)" if sat else ""},
            {"benchmark": f"twin/{name}", "metric": "wall time (engine)", "value": run_s, "unit": "s",
             "target": "<= 0.7" if sat else ""},
            {"benchmark": f"twin/{name}", "metric": "wall time (request draw)", "value": draw_s, "unit": "s",
             "target": ""},
            {"benchmark": f"twin/{name}", "metric": "wall time (summarize)", "value": summarize_s, "unit": "s",
             "target": ""},
            {"benchmark": f"twin/{name}", "metric": "engine steps / wall s", "value": metrics.steps / run_s,
             "unit": "steps/s", "target": ""},
            {"benchmark": f"twin/{name}", "metric": "requests arrived", "value": metrics.arrived_requests,
             "unit": "", "target": ""},
        ]
    rows.append({"benchmark": "twin", "metric": "peak RSS of this process", "value": _peak_rss_mb(), "unit": "MB",
                 "target": "< 500"})
    process_s, process_cpu_s = _process_s(saturated, 3)
    rows += [
        {"benchmark": "twin/saturated-384", "metric": "wall time (whole `simulate --json` process)",
         "value": process_s, "unit": "s", "target": "<= 1.2"},
        {"benchmark": "twin/saturated-384", "metric": "CPU time (whole `simulate --json` process)",
         "value": process_cpu_s, "unit": "s", "target": "<= 1.2 (its wall time on an idle box)"},
        {"benchmark": "twin/saturated-384", "metric": "simulated s per wall s (whole process)",
         "value": 3600.0 / process_s, "unit": "x real time", "target": ">= 3000"},
    ]
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
