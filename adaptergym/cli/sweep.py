"""``adaptergym sweep``: generate a twin dataset (one-GPU workloads x max_loras levels) for the surrogate."""

from __future__ import annotations

import argparse
import logging

from adaptergym.cli.base import Command, print_json

log = logging.getLogger(__name__)


class Sweep(Command):
    """Run a twin dataset sweep into a resumable CSV (a restarted sweep runs only the points missing).

    Each point is a one-GPU workload (rates cycled from the papers' rate set or a power law, a rank pattern,
    ShareGPT or fixed lengths) at one max_loras level, labelled by a short twin run (--window seconds):
    start-up outcome, offered and served tokens/s, starvation (the papers' 10% rule), TTFT and ITL. The same
    --seed gives the same dataset on any executor. --ship writes the dataset shipped with the package for
    --profile (the one adaptergym.surrogate trains on), with the shipped seed, points and window.
    """

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--profile", default=None, help="profile name, model name or JSON path "
                            "(default: h100-64gb__llama-3.1-8b-instruct__vllm-0.8.5)")
        parser.add_argument("--points", type=int, default=None, help="twin runs in the dataset")
        parser.add_argument("--out", default=None, help="output CSV (.csv, or .csv.gz written at the end)")
        parser.add_argument("--ship", action="store_true", help="write the shipped dataset of --profile")
        parser.add_argument("--executor", default="local", choices=("local", "ray"), help="where points run")
        parser.add_argument("--workers", type=int, default=None, help="local processes (default: all CPUs)")
        parser.add_argument("--ray-address", default=None, help="ray.init(address=...) for --executor ray")
        parser.add_argument("--seed", type=int, default=0, help="sweep seed (points and request draws)")
        parser.add_argument("--window", type=float, default=300.0, help="simulated seconds per point")
        parser.add_argument("--json", action="store_true", help="print a JSON summary")

    def take_action(self, args: argparse.Namespace) -> int:
        from adaptergym.errors import ConfigError
        from adaptergym.profile import load_profile
        from adaptergym.sweep import SweepSettings, profile_fingerprint, read_rows, run_sweep
        from adaptergym.sweep.runner import work_path

        profile = load_profile(args.profile)
        points, out, seed, window = args.points, args.out, args.seed, args.window
        if args.ship:
            from adaptergym.surrogate.shipped import SHIPPED_POINTS, SHIPPED_SEED, SHIPPED_WINDOW_S, shipped_dataset

            points, out, seed, window = points or SHIPPED_POINTS, shipped_dataset(profile.name), SHIPPED_SEED, \
                SHIPPED_WINDOW_S
            for path in (out, work_path(out)):
                if path.exists() and set(read_rows(path)["profile_fingerprint"]) != {profile_fingerprint(profile)}:
                    log.info("%s: generated with another version of the profile; starting over", path)
                    path.unlink()
        elif points is None or out is None:
            raise ConfigError("--points and --out: both are needed (or --ship for the shipped dataset)")
        result = run_sweep(SweepSettings(profile, seed, window), points, out, executor=args.executor,
                           workers=args.workers, ray_address=args.ray_address,
                           progress=not (args.quiet or args.json))
        summary = {"out": str(result.path), "points": result.points, "already_done": result.already_done,
                   "ran": result.ran, "profile": profile.name, "seed": seed, "window_s": window}
        if args.json:
            print_json(summary)
        else:
            print(f"{result.path}: {result.points} points ({result.already_done} already done, {result.ran} run)")
        return 0
