"""``adaptergym place``: one policy's placement of a workload, verified by the twin."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from adaptergym.cli.base import Command, print_json, print_table


class Place(Command):
    """Place a workload's adapters on GPUs with a policy; verify every GPU in the twin (table, or JSON with --json).

    Each GPU is judged alone on its share of the traffic (a replicated adapter's rate split evenly), as
    `adaptergym simulate` runs it; --export DIR writes each GPU's workload and the simulate command that
    reproduces its verdict. Policies: greedy, local-search, optuna, exact, round-robin, first-fit-decreasing,
    rank-aware, random (`exact` takes workloads of up to 40 adapters).
    """

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--workload", required=True, help="workload JSON (adapters with rates)")
        parser.add_argument("--policy", required=True, help="placement policy name")
        parser.add_argument("--objective", default="gpus",
                            help="gpus (fewest GPUs without starvation, default) or latency (lowest p99 TTFT)")
        parser.add_argument("--profile", default=None, help="profile name, model name or JSON path "
                            "(default: h100-64gb__llama-3.1-8b-instruct__vllm-0.8.5)")
        parser.add_argument("--seed", type=int, default=0, help="seed of the policy and of the verification runs")
        parser.add_argument("--export", type=Path, default=None, metavar="DIR",
                            help="write gpu<k>.json per GPU and commands.txt with its simulate command")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def take_action(self, args: argparse.Namespace) -> int:
        from adaptergym import WorkloadSpec, load_profile
        from adaptergym.placement import gpu_workload
        from baselines import get_policy
        from baselines.evaluation import place_and_verify

        profile = load_profile(args.profile)
        workload = WorkloadSpec.from_json(args.workload)
        outcome = place_and_verify(get_policy(args.policy, objective=args.objective), workload, profile,
                                   seed=args.seed)
        if args.export:
            args.export.mkdir(parents=True, exist_ok=True)
            copies = outcome.placement.copies()
            commands = []
            for verdict in outcome.verification.gpus:
                path = args.export / f"gpu{verdict.assignment.gpu}.json"
                path.write_text(json.dumps(gpu_workload(workload, verdict.assignment, copies).to_dict(), indent=1))
                commands.append(verdict.simulate_command(str(path)))
            (args.export / "commands.txt").write_text("\n".join(commands) + "\n")
        if args.json:
            print_json(outcome.to_dict())
            return 0
        rows = [{"gpu": v.assignment.gpu, "adapters": len(v.assignment.adapters), "max_loras": v.config.max_loras,
                 "max_lora_rank": v.config.max_lora_rank, "offered tok/s": v.metrics.offered_throughput,
                 "served tok/s": v.metrics.total_throughput, "p99 TTFT ms": v.metrics.p99_ttft_ms,
                 "starved": "yes" if v.starved else "no"} for v in outcome.verification.gpus]
        print_table(f"{args.policy} ({args.objective}) on {workload.name}, {profile.name}", rows)
        verified = outcome.verification
        print_table("placement", [("GPUs", outcome.placement.gpus), ("lower bound (GPUs)", outcome.lower_bound_gpus),
                                  ("starved GPUs", verified.starved_gpus),
                                  ("total throughput (tok/s)", verified.total_throughput),
                                  ("p99 TTFT (ms)", verified.p99_ttft_ms),
                                  ("decision time (s)", outcome.decision_time_s)])
        return 0
