"""``adaptergym validate``: replay real vLLM runs through the twin and report its error."""

from __future__ import annotations

import argparse
import math

from adaptergym.cli.base import Command, print_json, print_table


class Validate(Command):
    """Replay every ok and refused-start row of a real-runs CSV through the twin; print MAPE and SMAPE per model
    and metric (total throughput, mean ITL, mean TPOT, mean TTFT), start-up-outcome accuracy, and the published
    twin's errors on the same rows where anchor_twin_vs_real.csv covers them. Rows that cannot be replayed are
    listed with their line number. Hour-long runs are judged from part of the hour (adaptergym.long_runs);
    --full simulates every one to its end.
    """

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--runs", required=True, help="real-runs CSV (columns of shared/data/real_runs.csv)")
        parser.add_argument("--profile", default="auto", help="profile name/path, or 'auto': each row's model's")
        parser.add_argument("--group", default=None, help="regex on dataset_group: only these rows")
        parser.add_argument("--anchor", default=None, help="published twin's predictions "
                            "(default: anchor_twin_vs_real.csv beside --runs, when present)")
        parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
        parser.add_argument("--seed", type=int, default=0, help="seed of the replayed request streams")
        parser.add_argument("--full", action="store_true", help="simulate every hour-long run to its end "
                            "(default: judge it from part of the hour, see docs/validation.md)")
        parser.add_argument("--plot", default=None, help="PNG of predicted vs measured per metric")
        parser.add_argument("--rows", default=None, help="CSV of every replayed row, measured and predicted")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def take_action(self, args: argparse.Namespace) -> int:
        from adaptergym.cli.progress import stage_progress
        from adaptergym.validation import validate

        with stage_progress(not (args.quiet or args.json)) as progress:
            report = validate(args.runs, args.profile, seed=args.seed, workers=args.workers, anchor=args.anchor,
                              group=args.group, full=args.full,
                              progress=(lambda d, n: progress("replaying", d, n)) if progress else None)
        if args.plot:
            report.plot(args.plot)
        if args.rows:
            report.rows().to_csv(args.rows, index=False)
        if args.json:
            print_json(report.to_dict())
            return 0
        table = [{"model": model, "metric": metric, "n": e["n"], "MAPE %": e["mape"], "SMAPE %": e["smape"]}
                 for model, metrics in report.models.items() for metric, e in metrics.items()]
        print_table("twin vs real runs", table)
        anchor = report.anchor_table()
        if anchor:
            rows = [{"model": model, "metric": metric, "n": e["n"], "ours MAPE %": e["ours_mape"],
                     "published MAPE %": e["published_mape"], "ours SMAPE %": e["ours_smape"],
                     "published SMAPE %": e["published_smape"]}
                    for model, metrics in anchor.items() for metric, e in metrics.items()]
            print_table("same rows as the published twin", rows)
        accuracy = report.startup_accuracy
        print(f"start-up outcome: {'-' if math.isnan(accuracy) else f'{100 * accuracy:.1f}%'} correct over "
              f"{len(report.predictions)} rows" + "".join(
                  f"\n  line {p.line}: measured {p.measured_status}, predicted {p.predicted_status}"
                  for p in report.startup_misses()))
        if report.problems:
            print(f"skipped {len(report.problems)} row(s):")
            for problem in report.problems:
                print(f"  {problem}")
        return 0
