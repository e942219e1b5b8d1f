"""``adaptergym bench``: the project's speed benchmarks."""

from __future__ import annotations

import argparse

from adaptergym.cli.base import Command, print_json, print_table


class Bench(Command):
    """Run the speed benchmarks (twin, surrogate, placement, env steps) and print what they measure."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
        parser.add_argument("--json", action="store_true", help="print JSON rows")

    def take_action(self, args: argparse.Namespace) -> int:
        from adaptergym.bench import run_benchmarks

        rows = run_benchmarks(args.names or None)
        if args.json:
            print_json(rows)
        else:
            print_table("adaptergym bench", rows, ["benchmark", "metric", "value", "unit", "target"])
        return 0
