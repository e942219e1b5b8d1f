"""``adaptergym bench advise``: how long ``advise`` takes on the README's example workloads."""

from __future__ import annotations

import time
from pathlib import Path

from adaptergym.bench import BENCHMARKS, Row

#: The README's example workloads (a source checkout's ``examples/workloads``; absent from an installed wheel).
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "workloads"


@BENCHMARKS.register("advise")
def bench_advise() -> list[Row]:
    """``advise`` on every example workload and objective, default profile and trials: wall and CPU seconds
    (the issue asks under 30 s), twin runs, and the recommendation's verdict."""
    from adaptergym.advise import OBJECTIVES, advise
    from adaptergym.workload import WorkloadSpec

    rows: list[Row] = []
    for path in sorted(EXAMPLES.glob("*.json")):
        workload = WorkloadSpec.from_json(path)
        for objective in OBJECTIVES:
            wall, cpu = time.perf_counter(), time.process_time()
            advice = advise(workload, objective=objective)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            name = f"advise/{path.stem}/{objective}"
            verdict = "does not fit one GPU" if not advice.fits_one_gpu else (
                "starved" if advice.best.metrics.starved else "serves")
            rows += [{"benchmark": name, "metric": "wall time", "value": wall, "unit": "s", "target": "< 30"},
                     {"benchmark": name, "metric": "CPU time", "value": cpu, "unit": "s", "target": ""},
                     {"benchmark": name, "metric": "twin runs", "value": advice.twin_runs, "unit": "",
                      "target": ""},
                     {"benchmark": name, "metric": "verdict", "value": verdict, "unit": "", "target": ""}]
    return rows
