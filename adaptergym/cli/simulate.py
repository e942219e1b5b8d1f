"""``adaptergym simulate``: one twin run of a workload on one replica."""

from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext
from dataclasses import asdict

from adaptergym.cli.base import Command, add_server_flags, print_json, print_table, server_flags


def progress_bar(enabled: bool, description: str):
    """A rich progress bar on stderr when interactive and wanted; yields an ``update(fraction)`` callback."""
    if not enabled or not sys.stderr.isatty():
        return nullcontext(None)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    class _Bar:
        def __enter__(self):
            self._progress = Progress(TextColumn(description), BarColumn(), TimeElapsedColumn(), transient=True)
            self._progress.__enter__()
            task = self._progress.add_task(description, total=1.0)
            return lambda fraction: self._progress.update(task, completed=fraction)

        def __exit__(self, *exc):
            return self._progress.__exit__(*exc)

    return _Bar()


class Simulate(Command):
    """Simulate one vLLM replica serving a workload; print its metrics (table, or JSON with --json).

    Server flags default to the profile's engine defaults; --max-loras defaults to one GPU slot per adapter
    of the workload and --max-cpu-loras to --max-loras (vLLM's rule). --max-lora-rank defaults to the
    smallest value vLLM accepts that covers the workload's largest rank.
    """

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--workload", required=True, help="workload JSON or trace CSV")
        parser.add_argument("--profile", default=None, help="profile name, model name or JSON path "
                            "(default: h100-64gb__llama-3.1-8b-instruct__vllm-0.8.5)")
        add_server_flags(parser)
        parser.add_argument("--duration", type=float, default=None, help="override the workload's duration_s")
        parser.add_argument("--seed", type=int, default=0, help="seed of the request draw")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def take_action(self, args: argparse.Namespace) -> int:
        from adaptergym import ServerConfig, WorkloadSpec, load_profile, simulate
        from adaptergym.simulation import draw_requests
        from adaptergym.twin.config import default_rank

        profile = load_profile(args.profile)
        workload = WorkloadSpec.from_json(args.workload)
        requests = draw_requests(workload, args.seed, args.duration)
        config = default_rank(ServerConfig(
            max_loras=args.max_loras or max(1, len(requests.adapter_ids)),
            **server_flags(args),
        ), requests.adapter_ranks).resolved(profile)
        with progress_bar(not (args.quiet or args.json), "simulating") as update:
            metrics = simulate(requests, profile, config, progress=update)
        if args.json:
            print_json({"profile": profile.name, "workload": workload.name, "seed": args.seed,
                        "config": asdict(config), **metrics.to_dict()})
            return 0
        rows = [(k, v) for k, v in metrics.to_dict(per_adapter=False).items()]
        print_table(f"{workload.name} on {profile.name} (max_loras={config.max_loras})", rows)
        return 0
