"""``adaptergym leaderboard``: every placement policy and shipped placement agent on a scenario suite's test seeds."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from adaptergym.cli.base import Command, print_table
from adaptergym.cli.progress import stage_progress
from adaptergym.envs import PLACEMENT_IDS

#: Where shipped agents live (run folders of ``python -m agents.train``).
AGENTS_DIR = Path(__file__).resolve().parents[2] / "agents" / "checkpoints"


def agent_folders(text: str | None, envs: Sequence[str]) -> list[Path]:
    """``--agents``: the run folders named (comma-separated), none for ``none``, or by default the runs shipped
    under agents/checkpoints/ that were trained on one of ``envs``.

    Raises:
        ConfigError: a folder that does not exist.
    """
    from adaptergym.errors import ConfigError
    from baselines.leaderboard import shipped_agents

    if text is None:
        return shipped_agents(AGENTS_DIR, envs)
    if text == "none":
        return []
    agents = [Path(a.strip()) for a in text.split(",") if a.strip()]
    missing = [str(a) for a in agents if not a.exists()]
    if missing:
        raise ConfigError(f"agents: {missing[0]!r} does not exist")
    return agents


class Leaderboard(Command):
    """Run every placement policy (and shipped placement agents) on a suite's test seeds; print the summary.

    Per policy: GPUs used, ratio to the lower bound (baselines.bound.lower_bound_gpus), starved GPUs, total
    throughput, p99 TTFT and decision time, averaged over workloads. Policies are verified GPU by GPU (600
    simulated s, as `adaptergym place`); agents are scored by their environment's 120-s fleet twin run. The
    default (uniform-small, 3 test seeds, all policies and agents) took under 10 minutes on 2 shared cores;
    zipf-large is much slower per seed (optuna's trials and round-robin's search take minutes there).

    --suite dynamic runs the online policies of baselines.online instead (static-mean, static-peak, periodic once
    per forecaster, oracle, reactive) and the AdapterFleet-v0 agents shipped under agents/checkpoints/ (or those
    of --agents) over whole episodes of the dynamic families diurnal-v0, flash-crowd-v0 and drift-v0 with
    5-minute epochs: GPU-hours, starved adapter-minutes, TTFT SLO share, p99 TTFT, loads, migrations, restarts
    and decision time per family, then whether the issue's claims hold on them.
    """

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--suite", default="uniform-small",
                            help="scenario name, or several comma-separated (default: uniform-small)")
        parser.add_argument("--seeds", default="3", help="N (the first N test seeds, default 3) or test (all 100)")
        parser.add_argument("--policies", default=None, help="comma-separated policies (default: all registered)")
        parser.add_argument("--agents", default=None,
                            help="comma-separated agent run folders; none for no agent (default: the agents "
                                 "shipped under agents/checkpoints/: placement agents, or with --suite dynamic "
                                 "AdapterFleet-v0 agents)")
        parser.add_argument("--profile", default=None, help="profile name, model name or JSON path (default: the "
                            "shipped default)")
        parser.add_argument("--out", type=Path, default=None, help="write every row to this CSV")
        parser.add_argument("--plot", type=Path, default=None, help="write the GPUs-vs-p99-TTFT plot to this PNG")
        parser.add_argument("--markdown", action="store_true", help="print the summary as a Markdown table")
        parser.add_argument("--forecasters", default=None,
                            help="--suite dynamic: comma-separated forecasters for periodic (default: all)")
        parser.add_argument("--scorer", default="twin",
                            help="--suite dynamic: twin (default), or surrogate/analytic (fast mode, no latency)")
        parser.add_argument("--headroom", type=float, default=None,
                            help="--suite dynamic: the adaptive policies' packing headroom (default 0.25: GPUs "
                                 "filled to 80%% of the surrogate's edge); the static references keep theirs")

    def take_action(self, args: argparse.Namespace) -> int:
        if args.suite == "dynamic":
            return self.dynamic(args)
        from adaptergym import load_profile
        from adaptergym.errors import ConfigError
        from adaptergym.scenarios import get_scenario
        from baselines import POLICIES, policy_names
        from baselines.leaderboard import plot, run, seeds_of, skipped_lines

        names = [s.strip() for s in args.suite.split(",")]
        for name in names:
            get_scenario(name)
        seeds = seeds_of(args.seeds, names)
        policies = policy_names() if args.policies is None else [p.strip() for p in args.policies.split(",") if p]
        for policy in policies:
            POLICIES.get(policy)
        agents = agent_folders(args.agents, PLACEMENT_IDS)
        if not policies and not agents:
            raise ConfigError("policies: nothing to run (no policy and no agent)")
        profile = load_profile(args.profile)
        with stage_progress(not args.quiet) as update:
            board = run(args.suite, seeds, policies, agents, profile, update)
        if not board.rows:
            raise ConfigError(f"policies: every policy refused every workload ({board.skipped[0][3]})")
        if not write_outputs(board, args, plot):
            print_table(f"leaderboard: {args.suite}, {len(seeds)} test seed(s), {profile.name}",
                        board.summary().to_dict("records"))
            for line in skipped_lines(board.skipped):
                print(line)
        return 0

    def dynamic(self, args: argparse.Namespace) -> int:
        """``--suite dynamic``: the online policies on the dynamic families (class doc)."""
        from adaptergym import load_profile
        from adaptergym.dynamic import SCORERS
        from adaptergym.errors import ConfigError
        from adaptergym.forecast import FORECASTERS
        from adaptergym.scenarios import get_scenario, parse_seeds
        from baselines.online import ONLINE_POLICIES
        from baselines.online.leaderboard import FAMILIES, POLICIES, entries, plot, run

        agents = agent_folders(args.agents, ("adaptergym/AdapterFleet-v0",))
        if args.scorer not in SCORERS:
            raise ConfigError(f"scorer: {args.scorer!r} is not one of {', '.join(SCORERS)}")
        if args.headroom is not None and not 0 <= args.headroom <= 4:
            raise ConfigError(f"headroom: {args.headroom} must be between 0 and 4 (0.25: 25% room)")
        seeds = parse_seeds(args.seeds, get_scenario(FAMILIES[0]))
        policies = POLICIES if args.policies is None else [p.strip() for p in args.policies.split(",") if p.strip()]
        for policy in policies:
            ONLINE_POLICIES.get(policy)
        forecasters = None if args.forecasters is None else [f.strip() for f in args.forecasters.split(",")]
        for name in forecasters or ():
            FORECASTERS.get(name)
        profile = load_profile(args.profile)
        with stage_progress(not args.quiet) as update:
            board = run(FAMILIES, seeds, entries(policies, forecasters, agents, args.headroom), profile, args.scorer,
                        update)
        if not board.rows:
            raise ConfigError(f"policies: no episode could run ({board.skipped[0][3]})")
        if write_outputs(board, args, plot):
            return 0
        summary = board.summary()
        for family, table in summary.groupby("family", sort=False):
            print_table(f"dynamic leaderboard: {family}, {len(seeds)} test seed(s), {args.scorer} scorer",
                        table.drop(columns="family").to_dict("records"))
        from baselines.online.leaderboard import checks

        for line in [*checks(board), *board.skipped_lines()]:
            print(line)
        return 0


def write_outputs(board: Any, args: argparse.Namespace, plot: Callable[[Any, Path], None]) -> bool:
    """Write ``board``'s rows (``--out``) and plot (``--plot``); print its Markdown when ``--markdown`` asks
    (then True: nothing else to print)."""
    if args.out:
        board.frame().to_csv(args.out, index=False)
    if args.plot:
        plot(board, args.plot)
    if args.markdown:
        print(board.markdown())
    return bool(args.markdown)
