"""``adaptergym replay``: an online placement policy running a fleet over a time-varying workload, epoch by epoch."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adaptergym.cli.base import Command, print_json, print_table
from adaptergym.cli.progress import stage_progress


class Replay(Command):
    """Run an online policy over a workload's epochs and print what the fleet cost and served.

    Before each epoch the policy decides the plan (which replicas, which adapters on each, their max_loras and
    max_lora_rank); the fleet pays vLLM's costs for every change (runtime adapter loads, restarts and cold starts
    at the profile's start-up time, draining removals) and serves the epoch's requests. Printed: GPU-hours,
    starved adapter-minutes (an adapter served 10% short of its load with a backlog, or held by no serving
    replica), the share of requests whose first token came within --slo-ttft-ms, p99 TTFT, loads, migrations,
    restarts. Policies: static-mean, static-peak, periodic (--forecaster), oracle, reactive (baselines.online).
    The surrogate and analytic scorers (fast mode) model no latency.
    """

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from adaptergym.dynamic import DEFAULT_SLO_TTFT_MS, SCORERS

        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--workload", help="workload JSON (with a rate schedule, or constant rates) or trace CSV")
        source.add_argument("--scenario", help="a scenario name (e.g. flash-crowd-v0): its workload of --seed")
        parser.add_argument("--policy", required=True, help="online policy name (static-mean, static-peak, periodic, "
                            "oracle, reactive)")
        parser.add_argument("--forecaster", default=None,
                            help="periodic's forecaster (adaptergym forecast lists them; default ewma)")
        parser.add_argument("--epoch", type=float, default=300.0, help="decision epoch, s (default 300)")
        parser.add_argument("--seed", type=int, default=None,
                            help="request draw seed (default 0); with --scenario also the workload's seed "
                                 "(default its first test seed)")
        parser.add_argument("--profile", default=None, help="profile name, model name or JSON path")
        parser.add_argument("--scorer", default="twin", choices=SCORERS, help="twin (default) or fast mode")
        parser.add_argument("--router", default="even", choices=("even", "least-loaded"),
                            help="how requests of an adapter on several replicas are split (default even)")
        parser.add_argument("--slo-ttft-ms", type=float, default=DEFAULT_SLO_TTFT_MS,
                            help=f"TTFT objective, ms (default {DEFAULT_SLO_TTFT_MS:g})")
        parser.add_argument("--headroom", type=float, default=None,
                            help="packing headroom of the policy (default 0.25: GPUs filled to 80%% of the "
                                 "surrogate's starvation edge)")
        parser.add_argument("--season", type=float, default=None,
                            help="daily cycle, s, for holt-winters (default: the scenario's, if any)")
        parser.add_argument("--json", action="store_true", help="print one JSON object (totals and every epoch)")
        parser.add_argument("--plot", type=Path, default=None, help="write the timeline (load, GPUs, p99 TTFT) PNG")

    def take_action(self, args: argparse.Namespace) -> int:
        from adaptergym.dynamic import DynamicFleet
        from adaptergym.errors import ConfigError
        from adaptergym.forecast import FORECASTERS
        from adaptergym.scenarios import get_scenario
        from baselines.online import ONLINE_POLICIES, get_online_policy
        from baselines.online.replay import plot_timeline, replay

        ONLINE_POLICIES.get(args.policy)
        options: dict = {}
        if args.headroom is not None:
            if not 0 <= args.headroom <= 4:
                raise ConfigError(f"--headroom: {args.headroom} must be between 0 and 4 (0.25: 25% room)")
            options["headroom"] = args.headroom
        if args.forecaster is not None:
            if args.policy != "periodic":
                raise ConfigError(f"--forecaster: only the periodic policy forecasts, not {args.policy!r}")
            FORECASTERS.get(args.forecaster)
            options["forecaster"] = args.forecaster
        season = args.season
        if args.scenario:
            scenario = get_scenario(args.scenario)
            seed = scenario.test_seeds[0] if args.seed is None else args.seed
            workload = scenario.workload(seed)
            season = season or scenario.season_s
        else:
            workload, seed = args.workload, args.seed or 0
        fleet = DynamicFleet(workload, args.profile, seed=seed, epoch_s=args.epoch, scorer=args.scorer,
                             router=args.router, slo_ttft_ms=args.slo_ttft_ms, season_s=season)
        policy = get_online_policy(args.policy, **options)
        with stage_progress(not (args.quiet or args.json)) as update:
            run = replay(policy, fleet, (lambda done, total: update("epochs", done, total)) if update else None)
        label = f"{policy.name}" + (f" ({policy.forecaster})" if args.policy == "periodic" else "")
        if args.plot:
            source = workload.name if args.scenario else Path(workload).name
            plot_timeline(run, args.plot, f"{label} on {source}")
        if args.json:
            print_json({**run.to_dict(), "label": label, "seed": seed, "epoch_s": args.epoch,
                        "slo_ttft_ms": args.slo_ttft_ms, "profile": fleet.profile.name})
            return 0
        s = run.summary
        rows = [("GPU-hours", s.gpu_hours), ("mean GPUs", s.mean_gpus),
                ("starved adapter-minutes", s.starved_adapter_minutes),
                (f"requests with TTFT <= {args.slo_ttft_ms:g} ms (%)",
                 None if s.slo_share is None else 100.0 * s.slo_share), ("p99 TTFT (ms)", s.p99_ttft_ms),
                ("adapter loads", s.loads), ("migrations", s.migrations), ("restarts", s.restarts),
                ("cold starts", s.cold_starts), ("removals", s.removals), ("requests", s.requests),
                ("finished / refused / unfinished", f"{s.finished} / {s.refused} / {s.unfinished}"
                 if s.finished is not None else "-"),
                ("decision time per epoch, mean (s)", sum(run.decision_s) / len(run.decision_s)),
                ("simulation time (s)", run.simulation_s)]
        print_table(f"replay: {label}, {s.epochs} epochs of {args.epoch:g} s, {s.scorer} scorer", rows)
        if s.slo_share is None:
            print(f"the {s.scorer} scorer models no latency: TTFT figures need --scorer twin", file=sys.stdout)
        return 0
