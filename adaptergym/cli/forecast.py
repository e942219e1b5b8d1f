"""``adaptergym forecast``: per-adapter load forecasters scored against a scenario's (or a workload's) true rates."""

from __future__ import annotations

import argparse

from adaptergym.cli.base import Command, print_json, print_table
from adaptergym.cli.progress import stage_progress


class Forecast(Command):
    """Walk each forecaster forward epoch by epoch over workloads; print its error against the true rates.

    Each epoch, a forecaster sees the arrivals of the epochs before and forecasts every adapter's rate; the truth
    is the epoch's mean rate from the workload's schedule (a trace: its observed rate). Errors pool every
    (workload, epoch, adapter) from --from-epoch on: MAPE (true zeros left out), the standard SMAPE
    100*mean(2|y-ŷ|/(|y|+|ŷ|)) (pairs both zero left out) and WAPE 100*sum|y-ŷ|/sum y, which weighs adapters by
    load. holt-winters needs a season: the scenario's (diurnal: its 2-h day) or --season; without one it is
    skipped by --forecaster all. Requests are drawn with seed 0, as `adaptergym simulate` does.
    """

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--scenario", help="scenario name, e.g. diurnal-v0 (its test seeds are scored)")
        source.add_argument("--workload", help="one workload JSON or trace CSV")
        parser.add_argument("--epoch", type=float, default=300.0, help="decision epoch, s (default 300)")
        parser.add_argument("--forecaster", default="all", help="forecaster name, or all (default)")
        parser.add_argument("--seeds", default="3", help="N (the first N test seeds, default 3) or test (all 100)")
        parser.add_argument("--season", type=float, default=None,
                            help="season length, s, for holt-winters and gbr (default: the scenario's, if any)")
        parser.add_argument("--from-epoch", type=int, default=1,
                            help="first epoch scored (default 1; e.g. 48 on diurnal-v0 scores the third day)")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def take_action(self, args: argparse.Namespace) -> int:
        from adaptergym.errors import ConfigError
        from adaptergym.forecast import FORECASTERS, forecaster_names
        from adaptergym.forecast.backtest import backtest
        from adaptergym.scenarios import get_scenario, parse_seeds
        from adaptergym.workload import WorkloadSpec

        if args.scenario:
            scenario = get_scenario(args.scenario)
            seeds = parse_seeds(args.seeds, scenario)
            workloads = [scenario.workload(s) for s in seeds]
            source, season = scenario.name, args.season or scenario.season_s
        else:
            workloads = [WorkloadSpec.from_json(args.workload)]
            seeds, source, season = [], workloads[0].name, args.season
        if args.forecaster == "all":
            names = [n for n in forecaster_names() if season is not None or n != "holt-winters"]
        else:
            FORECASTERS.get(args.forecaster)
            names = [args.forecaster]
        if args.from_epoch < 0:
            raise ConfigError(f"from-epoch: {args.from_epoch} must be >= 0")
        with stage_progress(not (args.quiet or args.json)) as update:
            table = backtest(workloads, names, args.epoch, season, args.from_epoch, progress=update)
        if any(row["points"] == 0 for row in table.values()):
            raise ConfigError(f"from-epoch: {args.from_epoch} leaves no whole epoch of {args.epoch:g} s to score")
        if args.json:
            print_json({"source": source, "seeds": seeds, "epoch_s": args.epoch, "season_s": season,
                        "from_epoch": args.from_epoch, "forecasters": table})
            return 0
        rows = [{"forecaster": name, "MAPE %": row["mape"], "SMAPE %": row["smape"], "WAPE %": row["wape"],
                 "points": row["points"], "seconds": row["seconds"]} for name, row in table.items()]
        where = f"{len(seeds)} test seed(s)" if seeds else "one workload"
        print_table(f"forecast error: {source}, {where}, {args.epoch:g}-s epochs from epoch {args.from_epoch}", rows)
        if season is None and args.forecaster == "all":
            print("holt-winters skipped: no season known (give --season S)")
        return 0
