"""The leaderboard: every placement policy (and trained placement agents) on a scenario suite's test seeds.

Rows have the columns of :data:`agents.evaluate.LEADERBOARD_COLUMNS` (repeated here as :data:`COLUMNS` so that
building policy rows does not import stable-baselines3; ``tests/test_baselines.py`` checks both agree). A policy
row is :func:`baselines.evaluation.place_and_verify`: the placement verified GPU by GPU over 600 simulated seconds;
an agent row is :func:`agents.evaluate.placement_rows`: its episode scored by the environment's 120-s fleet twin
run. A policy that refuses a workload (``exact`` above 40 adapters) leaves no row; :func:`run` reports it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from adaptergym.cli.base import format_value
from adaptergym.errors import AdapterGymError
from adaptergym.profile import TwinProfile
from adaptergym.scenarios import get_scenario, parse_seeds
from baselines import get_policy
from baselines.evaluation import place_and_verify

COLUMNS = ("policy", "suite", "scenario", "seed", "adapters", "gpus", "lower_bound_gpus", "ratio_to_bound",
           "starved_gpus", "total_throughput", "p99_ttft_ms", "decision_time_s")
#: Summary columns: (header, column of the rows, how rows are combined).
SUMMARY = (("workloads", "seed", "count"), ("mean GPUs", "gpus", "mean"),
           ("mean lower bound", "lower_bound_gpus", "mean"), ("mean GPUs / bound", "ratio_to_bound", "mean"),
           ("mean starved GPUs", "starved_gpus", "mean"),
           ("starvation-free", "starved_gpus", lambda s: f"{int((s == 0).sum())}/{len(s)}"),
           ("mean throughput (tok/s)", "total_throughput", "mean"), ("mean p99 TTFT (ms)", "p99_ttft_ms", "mean"),
           ("mean decision time (s)", "decision_time_s", "mean"))


@dataclass
class Board:
    """Leaderboard rows, and the (policy, scenario, seed) jobs a policy refused with the reason."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[str, str, int, str]] = field(default_factory=list)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(COLUMNS))

    def summary(self) -> pd.DataFrame:
        """One line per policy, in the order they ran: means over its rows (:data:`SUMMARY`)."""
        frame = self.frame()
        groups = frame.groupby("policy", sort=False)
        return pd.DataFrame({header: groups[column].agg(how) for header, column, how in SUMMARY}).reset_index()

    def markdown(self) -> str:
        """The summary as a Markdown table, followed by the refusals."""
        summary = self.summary()
        lines = ["| " + " | ".join(summary.columns) + " |", "|" + "---|" * len(summary.columns)]
        for values in summary.itertuples(index=False):
            lines.append("| " + " | ".join(format_value(v, large=",.0f", small=".2f") for v in values) + " |")
        if self.skipped:
            lines += ["", *(f"- {line}" for line in skipped_lines(self.skipped))]
        return "\n".join(lines)


def skipped_lines(skipped: Sequence[tuple[str, str, int, str]]) -> list[str]:
    """One line per (entry, scenario, reason) of ``skipped`` jobs ((entry, scenario, seed, reason) each) that could
    not run, naming its seeds: both leaderboards word what they could not run this way."""
    seeds: dict[tuple[str, str, str], list[int]] = {}
    for entry, scenario, seed, why in skipped:
        seeds.setdefault((entry, scenario, why), []).append(seed)
    return [f"{entry} could not run on {scenario} (seed{'s' if len(s) > 1 else ''} {', '.join(map(str, s))}): {why}"
            for (entry, scenario, why), s in seeds.items()]


def seeds_of(text: str, scenario_names: Sequence[str]) -> list[int]:
    """``test`` (all 100 test seeds) or ``N`` (the first N) of the suite's test split."""
    return parse_seeds(text, get_scenario(scenario_names[0]))


def run(suite: str, seeds: Sequence[int], policies: Sequence[str], agents: Sequence[Path], profile: TwinProfile,
        progress: Callable[[str, int, int], None] | None = None) -> Board:
    """Every policy and agent on every (scenario of ``suite``, seed); ``progress(stage, done, total)`` per job."""
    scenarios = [get_scenario(s.strip()) for s in suite.split(",")]
    board = Board()
    total = len(scenarios) * len(seeds) * len(policies) + len(agents)
    done = 0
    for scenario in scenarios:
        for seed in seeds:
            workload = scenario.workload(seed)
            for name in policies:
                if progress:
                    progress("leaderboard", done, total)
                try:
                    outcome = place_and_verify(get_policy(name), workload, profile, seed=seed)
                except AdapterGymError as exc:
                    board.skipped.append((name, scenario.name, seed, str(exc).split(";")[0]))
                else:
                    board.rows.append({"policy": name, "suite": suite, "scenario": scenario.name, "seed": seed,
                                       "adapters": len(workload.adapters), **outcome.row()})
                done += 1
    for checkpoint in agents:
        if progress:
            progress("leaderboard", done, total)
        from agents.evaluate import placement_rows

        board.rows += placement_rows(checkpoint, suite, seeds)
        done += 1
    if progress:
        progress("leaderboard", done, total)
    return board


def shipped_agents(root: Path, envs: Sequence[str]) -> list[Path]:
    """Run folders under ``root`` whose agent was trained on one of ``envs`` (environment ids)."""
    import json

    return sorted(p.parent for p in root.glob("*/config.json") if json.loads(p.read_text()).get("env") in envs)


def plot(board: Board, out: Path) -> None:
    """GPUs / lower bound against p99 TTFT, one point per policy (its means) with every workload faint behind it,
    and the Pareto front of the means (fewer GPUs and lower latency are both better; starving policies hollow)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = board.frame()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    means = []
    for k, (name, group) in enumerate(frame.groupby("policy", sort=False)):
        color = f"C{k % 10}"
        ax.scatter(group["ratio_to_bound"], group["p99_ttft_ms"] / 1000, color=color, alpha=0.25, s=12)
        x, y = group["ratio_to_bound"].mean(), group["p99_ttft_ms"].mean() / 1000
        clean = bool((group["starved_gpus"] == 0).all())
        ax.scatter([x], [y], color=color if clean else "none", edgecolors=color, s=80, label=name, zorder=3)
        means.append((x, y, clean))
    front = sorted((x, y) for x, y, clean in means if clean)
    pareto = [p for p in front if not any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in front)]
    if pareto:
        ax.plot(*zip(*pareto, strict=True), color="0.4", linestyle="--", linewidth=1, label="Pareto front (means)")
    ax.set_xlabel("GPUs / lower bound")
    ax.set_ylabel("p99 TTFT (s)")
    ax.set_yscale("log")
    ax.set_title(f"{frame['suite'].iloc[0]}: {frame['seed'].nunique()} test seed(s); hollow = some placement starves")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
