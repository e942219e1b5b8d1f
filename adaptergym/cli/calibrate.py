"""``adaptergym calibrate``: fit a profile to real vLLM runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adaptergym.cli.base import Command, print_json


class Calibrate(Command):
    """Fit a twin profile for one model from a real-runs CSV (and the micro-benchmarks beside it).

    Memory from kv_capacity.csv, decode/prefill step time from raw_estimator_runs/, scheduler overhead from
    raw_scheduler_overhead/, load times from anchor_twin_constants.json (each used when present in the CSV's
    folder or --data-dir), then a final fit of the step model against the end-to-end runs outside --holdout.
    Those micro-benchmarks measured vLLM: a profile of another framework (S-LoRA runs) keeps its --base's
    memory, loading and engine settings and fits the step terms its base sets.
    """

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from adaptergym.calibration import DEFAULT_HOLDOUT, GUESSED

        parser.add_argument("--runs", required=True, help="real-runs CSV (columns of shared/data/real_runs.csv)")
        parser.add_argument("--model", required=True, help="value of the CSV's model column to fit")
        parser.add_argument("--framework", default=None, help="serving framework of the rows to fit "
                            "(default: the one the model's rows ran on)")
        parser.add_argument("--out", default=None, help="profile JSON to write (default: twin_params/<name>.json)")
        parser.add_argument("--base", default=None, help="profile for terms the data cannot fit "
                            "(default: the model's shipped profile, else the default profile)")
        parser.add_argument("--data-dir", default=None, help="folder of the micro-benchmarks (default: the CSV's)")
        parser.add_argument("--holdout", default=DEFAULT_HOLDOUT,
                            help="regex on dataset_group: rows never used in the fit; '' uses every row "
                            f"(default {DEFAULT_HOLDOUT!r})")
        parser.add_argument("--rounds", type=int, default=3, help="end-to-end refit rounds")
        parser.add_argument("--sim-seconds", type=float, default=600.0,
                            help="simulated seconds per training run in the end-to-end fit")
        parser.add_argument("--base-prior", type=float, default=GUESSED,
                            help="how firmly the step terms no micro-benchmark measures stay at --base's values in "
                            "the end-to-end fit (1: as firmly as the whole training set pins a 100%% deviation; "
                            f"0: the training runs alone set them; default {GUESSED})")
        parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
        parser.add_argument("--json", action="store_true", help="print the fit report as JSON")

    def take_action(self, args: argparse.Namespace) -> int:
        from adaptergym.calibration import calibrate
        from adaptergym.cli.progress import stage_progress

        with stage_progress(not (args.quiet or args.json)) as progress:
            profile, report = calibrate(args.runs, args.model, base=args.base, data_dir=args.data_dir,
                                        holdout=args.holdout, rounds=args.rounds, duration_s=args.sim_seconds,
                                        workers=args.workers, framework=args.framework, base_prior=args.base_prior,
                                        progress=progress)
        out = Path(args.out) if args.out else Path("twin_params") / f"{profile.name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        profile.to_json(out)
        if args.json:
            print_json({"profile": str(out), **report})
        else:
            fit = report["terms"]["step_time"]
            print(f"wrote {out}: {report['train_rows']} training rows; train mean-ITL MAPE "
                  f"{fit['train_itl_mape']:.1f}%, throughput MAPE {fit['train_throughput_mape']:.1f}%",
                  file=sys.stdout)
        return 0
