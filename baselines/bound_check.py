"""Does the lower bound hold, and how close do the policies come to it? One command checks it on the first test seeds
of every scenario with constant rates, the README's workloads and a grid of large Zipf workloads:

    python -m baselines.bound_check [--seeds 100] [--scenarios all] [--workloads readme,grid]
                                    [--policies greedy,local-search] [--workers 2] [--out rows.csv]

Per workload: each policy's placement, verified (:func:`baselines.evaluation.place_and_verify`); the fewest GPUs
of a verified one; ``lower_bound_gpus`` and ``single_adapter_bound_gpus``; the highest cost-model cost of any
verified GPU (the bound's proviso: at most ``gpu_cost_limit``, under every curve of the cost model); and a *probe*
below the bound: local-search's search on ``bound - 1`` GPUs (its packings of that count, repaired by the twin),
which must not verify on fewer GPUs than the bound. It prints
every violation and a summary of the ratios.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from adaptergym.errors import AdapterGymError
from adaptergym.profile import TwinProfile, load_profile
from adaptergym.scenarios import get_scenario, scenario_names
from adaptergym.workload import WorkloadSpec, powerlaw_workload
from baselines import get_policy
from baselines.bound import gpu_cost_limit, lower_bound_gpus, single_adapter_bound_gpus
from baselines.capacity import servable_model
from baselines.cost_model import cost_model
from baselines.evaluation import place_and_verify

#: The issue's grid of large Zipf workloads (adapters, alphas, req/s), drawn with rank/order seed 1.
GRID = ((300, 600, 1000), (0.7, 0.9, 1.2), (40.0, 150.0, 240.0))


def readme_workloads() -> dict[str, WorkloadSpec]:
    """The workloads the README reports placements of, by name."""
    def zipf(n: int, rate: float, alpha: float = 1.0, seed: int = 0) -> WorkloadSpec:
        return powerlaw_workload(n, rate, alpha=alpha, rng=np.random.default_rng(seed), duration_s=600.0)

    return {"readme/zipf-300-40": zipf(300, 40.0), "readme/zipf-300-120": zipf(300, 120.0),
            "readme/zipf-300-240": zipf(300, 240.0), "readme/bench-1000-150": zipf(1000, 150.0),
            "readme/issue-600-150-a0.9": zipf(600, 150.0, 0.9), "readme/test-12-45": zipf(12, 45.0, seed=3)}


def grid_workloads() -> dict[str, WorkloadSpec]:
    """:data:`GRID`: Zipf workloads of 300-1,000 adapters, ranks 8/16/32, shuffled with seed 1."""
    return {f"grid/zipf-{n}-{rate:g}-a{alpha:g}": powerlaw_workload(n, rate, alpha=alpha, rng=np.random.default_rng(1),
                                                                    duration_s=600.0)
            for n in GRID[0] for alpha in GRID[1] for rate in GRID[2]}


def check_workload(job: tuple[str, int, WorkloadSpec, TwinProfile, tuple[str, ...]]) -> dict[str, Any]:
    """One row of the check (module doc)."""
    name, seed, workload, profile, policies = job
    capacity = servable_model(profile, workload)
    bound = lower_bound_gpus(workload, profile)
    costs = cost_model(profile, workload.lengths, workload.arrival)
    row: dict[str, Any] = {"workload": name, "seed": seed, "adapters": len(workload.adapters),
                           "offered_tok_s": float(capacity.loads(workload).sum()), "lower_bound_gpus": bound,
                           "single_adapter_bound_gpus": single_adapter_bound_gpus(workload, profile),
                           "gpu_cost_limit": gpu_cost_limit(workload.arrival) if costs is not None else math.nan}
    verified, highest = [], 0.0
    for policy in policies:
        try:
            outcome = place_and_verify(get_policy(policy), workload, profile, seed=seed)
        except AdapterGymError:
            row |= {f"{policy}_gpus": math.nan, f"{policy}_starved": math.nan, f"{policy}_time_s": math.nan}
            continue
        starved = outcome.verification.starved_gpus
        row |= {f"{policy}_gpus": outcome.placement.gpus, f"{policy}_starved": starved,
                f"{policy}_time_s": outcome.decision_time_s}
        if costs is not None:
            passed = [c for c, g in zip(costs.placement_costs(workload, outcome.placement, capacity.tokens_per_request),
                                        outcome.verification.gpus, strict=True) if not g.starved]
            highest = max([highest, *passed])
        if starved == 0:
            verified.append(outcome.placement.gpus)
    probe = get_policy("local-search").place_on(workload, profile, bound - 1, seed=seed) if bound > 1 else None
    return row | {"best_gpus": min(verified, default=math.nan), "highest_gpu_cost": highest,
                  "probe_gpus": math.nan if probe is None else probe.gpus}


def static_scenarios() -> list[str]:
    """The scenarios whose rates do not change over a run (the time-varying families carry a rate schedule, which
    a static placement's bound does not describe)."""
    return [name for name in scenario_names()
            if not get_scenario(name).workload(get_scenario(name).test_seeds[0]).schedule]


def jobs(scenarios: list[str], seeds: int, workloads: dict[str, WorkloadSpec], profile: TwinProfile,
         policies: tuple[str, ...]) -> list[tuple[str, int, WorkloadSpec, TwinProfile, tuple[str, ...]]]:
    out = [(name, 0, w, profile, policies) for name, w in workloads.items()]
    for scenario in map(get_scenario, scenarios):
        out += [(scenario.name, seed, scenario.workload(seed), profile, policies)
                for seed in scenario.test_seeds[:seeds]]
    return out


def run(work: list, workers: int, progress: Callable[[int, int], None] | None = None) -> Iterator[dict[str, Any]]:
    """Rows in job order, from a pool of ``workers`` processes."""
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for k, row in enumerate(pool.map(check_workload, work), 1):
            if progress:
                progress(k, len(work))
            yield row


def summary(frame: pd.DataFrame, policies: tuple[str, ...]) -> str:
    """Violations and ratios of a check's rows, as text."""
    lines = []
    below = frame[frame["best_gpus"] < frame["lower_bound_gpus"]]
    probes = frame[frame["probe_gpus"] < frame["lower_bound_gpus"]]
    costly = frame[frame["highest_gpu_cost"] > frame["gpu_cost_limit"]]
    lines.append(f"{len(frame)} workloads; verified placements below the bound: {len(below)}; probes one GPU below "
                 f"the bound that verified: {len(probes)}; workloads with a verified GPU costing more than their "
                 f"arrivals' margin: {len(costly)} (highest {frame['highest_gpu_cost'].max():.3f})")
    for _, r in pd.concat([below, probes, costly]).drop_duplicates(["workload", "seed"]).iterrows():
        lines.append(f"  violation: {r['workload']} seed {r['seed']}: bound {r['lower_bound_gpus']}, best "
                     f"{r['best_gpus']}, probe {r['probe_gpus']}, highest GPU cost {r['highest_gpu_cost']:.3f}")
    for source, part in frame.groupby(frame["workload"].str.split("/").str[0], sort=False):
        for policy in policies:
            ok = part[part[f"{policy}_starved"] == 0]
            ratio = ok[f"{policy}_gpus"] / ok["lower_bound_gpus"]
            single = ok[f"{policy}_gpus"] / ok["single_adapter_bound_gpus"]
            lines.append(f"{source:>20} {policy:>14}: {len(ok)}/{len(part)} verified, GPUs / bound mean "
                         f"{ratio.mean():.3f} max {ratio.max():.2f} (<= 1.15: {(ratio <= 1.15 + 1e-9).mean():.0%}), "
                         f"GPUs / single-adapter bound mean {single.mean():.3f} max {single.max():.2f} (<= 1.25: "
                         f"{(single <= 1.25 + 1e-9).mean():.0%}), mean decision {ok[f'{policy}_time_s'].mean():.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m baselines.bound_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=100, help="first N test seeds of each scenario (default 100)")
    parser.add_argument("--scenarios", default="all",
                        help="comma-separated scenarios, all (every one without a rate schedule), or none")
    parser.add_argument("--workloads", default="readme,grid", help="readme, grid, both (default) or none")
    parser.add_argument("--policies", default="greedy,local-search", help="comma-separated policies")
    parser.add_argument("--profile", default=None, help="profile name, model name or JSON path (default profile)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all CPUs)")
    parser.add_argument("--out", default=None, help="write every row to this CSV")
    args = parser.parse_args(argv)
    try:
        check(args)
    except AdapterGymError as exc:
        raise SystemExit(f"{parser.prog}: {exc}") from None


def check(args: argparse.Namespace) -> None:
    """Run the check the command line asks for and print its summary."""
    from adaptergym.cli.progress import stage_progress

    scenarios = {"all": static_scenarios(), "none": []}.get(args.scenarios, args.scenarios.split(","))
    workloads: dict[str, WorkloadSpec] = {}
    if "readme" in args.workloads:
        workloads |= readme_workloads()
    if "grid" in args.workloads:
        workloads |= grid_workloads()
    policies = tuple(p.strip() for p in args.policies.split(","))
    work = jobs(scenarios, args.seeds, workloads, load_profile(args.profile), policies)
    rows = []
    with stage_progress(True) as update:
        for row in run(work, args.workers, (lambda k, n: update("workloads", k, n)) if update else None):
            rows.append(row)
            if args.out:  # rewritten as rows come, so an interrupted check keeps what it measured
                pd.DataFrame(rows).to_csv(args.out, index=False)
    print(summary(pd.DataFrame(rows), policies))


if __name__ == "__main__":
    main()
