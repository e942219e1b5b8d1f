"""``adaptergym surrogate train|report``: fit the tree surrogates on a twin sweep and say how good they are."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from adaptergym.cli.base import Command, print_json, print_table


class SurrogateCommand(Command):
    """Train the surrogate (shallow decision trees and gradient boosting) on a twin sweep, or report its accuracy.

    train: fit on every row and print the shallow trees' rules. report: accuracy on held-out workloads (25% of
    the sweep's workloads, never seen in training) against two baselines, how well it picks max_loras, its
    error against real vLLM runs (--runs, e.g. ../shared/data/real_runs.csv) and its prediction latency.
    Data: --data CSV from `adaptergym sweep`, default the dataset shipped for --profile.
    """

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("action", choices=("train", "report"), help="train: fit and print rules; report: accuracy")
        parser.add_argument("--profile", default=None, help="profile name (default: the data's, else the default)")
        parser.add_argument("--data", default=None, help="sweep CSV (default: the shipped dataset of --profile)")
        parser.add_argument("--runs", default=None, help="real-runs CSV to compare throughput with (report)")
        parser.add_argument("--twin-workers", type=int, default=0, help="with --runs: also run the twin on each "
                            "real run's configuration in this many processes (splits the error; about a minute)")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def take_action(self, args: argparse.Namespace) -> int:
        import pandas as pd

        from adaptergym.errors import ConfigError, DataError
        from adaptergym.profile import load_profile
        from adaptergym.surrogate import Surrogate, regenerate_command, shipped_dataset
        from adaptergym.surrogate.evaluation import holdout_report, prediction_latency, real_runs_report
        from adaptergym.surrogate.model import dataset_features
        from adaptergym.sweep import read_rows

        if args.data:
            if not Path(args.data).is_file():
                raise DataError(f"--data: {args.data!r} does not exist; write one with `adaptergym sweep`")
            data = read_rows(Path(args.data))
            names = data["profile"].dropna().unique()
            profile = load_profile(args.profile or (names[0] if len(names) == 1 else None))
        else:
            profile = load_profile(args.profile)
            path = shipped_dataset(profile.name)
            if not path.is_file():
                raise ConfigError(f"--data: no dataset ships for profile {profile.name!r}; pass --data CSV or "
                                  f"generate it with `{regenerate_command(profile.name)}`")
            data = read_rows(path)
        if args.action == "train":
            start = time.perf_counter()
            model = Surrogate.fit(data, profile)
            out = {**model.describe(), "fit_s": time.perf_counter() - start, "rules": model.rules()}
            if args.json:
                print_json(out)
            else:
                print(out["rules"])
                print(f"{profile.name}: trained on {model.training_rows} rows in {out['fit_s']:.2f} s")
            return 0
        report = {"profile": profile.name, "holdout": holdout_report(data, profile)}
        model = Surrogate.fit(data, profile)
        if args.runs:
            if not Path(args.runs).is_file():
                raise DataError(f"--runs: {args.runs!r} does not exist")
            report["real_runs"] = real_runs_report(model, pd.read_csv(args.runs), args.twin_workers)
        rows = dataset_features(data[data["startup"] == "ok"])
        report["latency"] = prediction_latency(model, rows)
        if args.json:
            print_json(report)
            return 0
        holdout = report["holdout"]
        print_table(f"held-out twin workloads ({holdout['test_rows']} rows; trained on {holdout['train_rows']})",
                    [{"model": k, **v} for k, v in holdout["models"].items()])
        print_table("max_loras choice on held-out workloads", [{"model": k, **v}
                                                               for k, v in holdout["slot_choice"].items()])
        real = report.get("real_runs")
        if real and real.get("runs"):
            print_table(f"real vLLM runs of {real['model']} ({real['runs']} runs, {real['starved_runs']} starved)",
                        [{"model": k, **v} for k, v in real["models"].items()])
            if "twin_vs_real_smape" in real:
                print(f"on those runs: twin vs real throughput SMAPE {real['twin_vs_real_smape']:.1f}%; surrogate vs "
                      "twin " + ", ".join(f"{k} {v:.1f}%" for k, v in real["surrogate_vs_twin_smape"].items()))
        print_table("prediction latency", [{"model": k, **v} for k, v in report["latency"].items()])
        return 0
