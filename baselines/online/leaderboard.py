"""The dynamic leaderboard: every online policy on the test seeds of the dynamic scenario families.

One row per (family, seed, entry), an entry being a policy (``periodic`` once per forecaster) or a trained
AdapterFleet-v0 agent (``agents.online.AgentPolicy``, labelled ``agent:<run folder>``); each row is an episode
replayed by :func:`baselines.online.replay.replay` with 5-minute epochs. :func:`checks` states the
issue's claims on the result: static-on-mean starves in flash crowds; periodic re-plan with the best forecaster
(the one with the fewest starved adapter-minutes, then the fewest GPU-hours) uses at least 20% fewer GPU-hours
than static-on-peak with no more starved adapter-minutes (both means over the seeds, compared as they are: no
tolerance); the oracle (the same policy on the true rates) beside it, and the ideal tracker
(:mod:`baselines.online.ideal`: the packing of each epoch's true rates, changes free) as the saving physically
available.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from adaptergym.cli.base import format_value
from adaptergym.dynamic import DynamicFleet
from adaptergym.errors import AdapterGymError
from adaptergym.forecast import forecaster_names
from adaptergym.profile import TwinProfile
from adaptergym.scenarios import get_scenario
from baselines.leaderboard import skipped_lines
from baselines.online import get_online_policy
from baselines.online.ideal import ideal_tracker
from baselines.online.replay import replay

FAMILIES = ("diurnal-v0", "flash-crowd-v0", "drift-v0")
POLICIES = ("static-mean", "static-peak", "periodic", "oracle", "reactive")
STATIC = ("static-mean", "static-peak")
EPOCH_S = 300.0
#: Summary columns: (header, column of the rows).
SUMMARY = (("GPU-hours", "gpu_hours"), ("mean GPUs", "mean_gpus"), ("starved adapter-min", "starved_adapter_minutes"),
           ("TTFT SLO met %", "slo_percent"), ("p99 TTFT (s)", "p99_ttft_s"), ("loads", "loads"),
           ("migrations", "migrations"), ("restarts", "restarts"), ("cold starts", "cold_starts"),
           ("decision (s/epoch)", "decision_s"))


@dataclass(frozen=True, slots=True)
class Entry:
    """A leaderboard entry: a policy, for ``periodic`` its forecaster, and a packing headroom (None: the
    policy's default); or (``checkpoint``) a trained agent."""

    policy: str
    forecaster: str | None = None
    headroom: float | None = None
    checkpoint: Path | None = None

    @property
    def label(self) -> str:
        if self.checkpoint is not None:
            from agents.run import agent_label  # stable-baselines3: only when an agent is on the board

            return agent_label(self.checkpoint)
        return f"periodic ({self.forecaster})" if self.forecaster else self.policy

    def build(self) -> Any:
        if self.checkpoint is not None:
            from agents.online import AgentPolicy

            return AgentPolicy(self.checkpoint)
        options = {"forecaster": self.forecaster} if self.forecaster else {}
        if self.headroom is not None:
            options["headroom"] = self.headroom
        return get_online_policy(self.policy, **options)


def entries(policies: Sequence[str] = POLICIES, forecasters: Sequence[str] | None = None,
            agents: Sequence[Path] = (), headroom: float | None = None) -> list[Entry]:
    """The entries of ``policies``, ``periodic`` once per forecaster (default: every registered one), then one
    per agent run folder of ``agents``; ``headroom`` applies to the adaptive policies, the static references
    keep their default."""
    out = []
    for policy in policies:
        adaptive = None if policy in STATIC else headroom
        if policy == "periodic":
            out += [Entry(policy, f, adaptive) for f in (forecaster_names() if forecasters is None else forecasters)]
        else:
            out.append(Entry(policy, None, adaptive))
    return out + [Entry("agent", checkpoint=Path(c)) for c in agents]


@dataclass
class DynamicBoard:
    """Rows of the dynamic leaderboard, the ideal tracker of each (family, seed), and the (entry, family, seed)
    jobs that could not run, with the reason."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    ideal: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[str, str, int, str]] = field(default_factory=list)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def summary(self) -> pd.DataFrame:
        """Means over seeds per (family, entry), in the order they ran."""
        frame = self.frame()
        groups = frame.groupby(["family", "policy"], sort=False)
        table = pd.DataFrame({header: groups[column].mean() for header, column in SUMMARY})
        table.insert(0, "seeds", groups["seed"].count())
        return table.reset_index()

    def markdown(self) -> str:
        """The summary as one Markdown table per family, then the checks and the skipped jobs."""
        lines = []
        summary = self.summary()
        for family, table in summary.groupby("family", sort=False):
            table = table.drop(columns="family")
            lines += [f"\n**{family}** ({int(table['seeds'].max())} test seed(s))\n",
                      "| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
            lines += ["| " + " | ".join(format_value(v, large=",.0f", small=".2f") for v in values) + " |"
                      for values in table.itertuples(index=False)]
        lines.append("")
        lines += [f"- {line}" for line in [*checks(self), *self.skipped_lines()]]
        return "\n".join(lines)

    def skipped_lines(self) -> list[str]:
        """One line per (entry, family, reason) that could not run, naming its seeds."""
        return skipped_lines(self.skipped)


def run(families: Sequence[str], seeds: Sequence[int], board_entries: Sequence[Entry], profile: TwinProfile,
        scorer: str = "twin", progress: Callable[[str, int, int], None] | None = None) -> DynamicBoard:
    """Every entry on every (family, seed); ``progress(stage, done, total)`` per episode."""
    board = DynamicBoard()
    total, done = len(families) * len(seeds) * len(board_entries), 0
    for family in families:
        scenario = get_scenario(family)
        for seed in seeds:
            workload = scenario.workload(seed)
            tracker = ideal_tracker(DynamicFleet(workload, profile, seed=seed, epoch_s=EPOCH_S, scorer="surrogate",
                                                 counts_only=True))
            board.ideal.append({"family": scenario.name, "seed": seed, "gpu_hours": tracker.gpu_hours,
                                "lead_gpu_hours": tracker.lead_gpu_hours, "lead": tracker.lead})
            for entry in board_entries:
                if progress:
                    progress("episodes", done, total)
                try:
                    fleet = DynamicFleet(workload, profile, seed=seed, epoch_s=EPOCH_S, scorer=scorer,
                                         season_s=scenario.season_s)
                    episode = replay(entry.build(), fleet)
                except AdapterGymError as exc:
                    board.skipped.append((entry.label, scenario.name, seed, str(exc).split(";")[0]))
                else:
                    s = episode.summary
                    board.rows.append({
                        "family": scenario.name, "seed": seed, "policy": entry.label,
                        "adapters": len(fleet.adapter_ids),
                        "gpu_hours": s.gpu_hours, "mean_gpus": s.mean_gpus,
                        "starved_adapter_minutes": s.starved_adapter_minutes,
                        "slo_percent": None if s.slo_share is None else 100.0 * s.slo_share,
                        "p99_ttft_s": None if s.p99_ttft_ms is None else s.p99_ttft_ms / 1000.0,
                        "loads": s.loads, "migrations": s.migrations, "restarts": s.restarts,
                        "cold_starts": s.cold_starts, "removals": s.removals,
                        "decision_s": sum(episode.decision_s) / len(episode.decision_s),
                        "simulation_s": episode.simulation_s, "scorer": s.scorer})
                done += 1
    if progress:
        progress("episodes", done, total)
    return board


def checks(board: DynamicBoard) -> list[str]:
    """The issue's claims, family by family, each stated with its figures and whether it holds (module doc)."""
    summary = board.summary()
    ideal = pd.DataFrame(board.ideal)
    lines = []
    for family, table in summary.groupby("family", sort=False):
        by = table.set_index("policy")
        if {"static-mean", "static-peak"} - set(by.index):
            continue
        mean, peak = by.loc["static-mean"], by.loc["static-peak"]
        lines.append(f"{family}: static-mean starves {mean['starved adapter-min']:,.0f} adapter-min "
                     f"({mean['GPU-hours']:.2f} GPU-h); static-peak {peak['starved adapter-min']:,.0f} "
                     f"({peak['GPU-hours']:.2f} GPU-h)")
        if len(ideal):
            mine = ideal[ideal["family"] == family]
            instant, lead = mine["gpu_hours"].mean(), mine["lead_gpu_hours"].mean()
            low, high = mine["lead"].min(), mine["lead"].max()
            epochs = f"{low}" if low == high else f"{low}-{high}"
            lines.append(f"{family}: ideal tracker (the packing of each epoch's true rates, changes free) "
                         f"{_change(1.0 - instant / peak['GPU-hours'])} GPU-hours than static-peak ({instant:.2f}); "
                         f"with the start-up lead ({epochs} epochs) "
                         f"{_change(1.0 - lead / peak['GPU-hours'])} ({lead:.2f}): the saving available")
        periodic = by[by.index.str.startswith("periodic")]
        if not len(periodic):
            continue
        best = periodic.sort_values(["starved adapter-min", "GPU-hours"]).iloc[0]
        saving = 100.0 * (1.0 - best["GPU-hours"] / peak["GPU-hours"])
        holds = saving >= 20.0 and best["starved adapter-min"] <= peak["starved adapter-min"]
        oracle = ""
        if "oracle" in by.index:
            o = by.loc["oracle"]
            oracle = (f"; oracle (same policy, true rates) {_change(1.0 - o['GPU-hours'] / peak['GPU-hours'])} "
                      f"GPU-hours ({o['GPU-hours']:.2f}), {o['starved adapter-min']:,.0f} starved adapter-min")
        lines.append(f"{family}: best {best.name} uses {_change(saving / 100.0)} GPU-hours than static-peak "
                     f"({best['GPU-hours']:.2f} vs {peak['GPU-hours']:.2f}) with {best['starved adapter-min']:,.0f} "
                     f"starved adapter-min vs {peak['starved adapter-min']:,.0f} (means over {int(best['seeds'])} "
                     f"seed(s); holds when >= 20% fewer and no more, no tolerance): "
                     f"{'holds' if holds else 'does NOT hold'}{oracle}")
    return lines


def plot(board: DynamicBoard, out: Path) -> None:
    """Per family, each entry's mean GPU-hours against its mean starved adapter-minutes (both lower is better)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = board.summary()
    families = list(dict.fromkeys(summary["family"]))
    fig, axes = plt.subplots(1, len(families), figsize=(5 * len(families), 4.2), squeeze=False)
    labels = list(dict.fromkeys(summary["policy"]))
    for ax, family in zip(axes[0], families, strict=True):
        table = summary[summary["family"] == family]
        for _, row in table.iterrows():
            k = labels.index(row["policy"])
            ax.scatter(row["GPU-hours"], row["starved adapter-min"] + 1.0, color=f"C{k % 10}",
                       marker="os^Dv<>ph*"[k % 10], s=60, label=row["policy"])
        ax.set_yscale("log")
        ax.set_xlabel("GPU-hours (mean over seeds)")
        ax.set_ylabel("starved adapter-minutes + 1")
        ax.set_title(family)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def _change(saving: float) -> str:
    """A relative saving in words: ``0.25`` is "25% fewer", ``-0.13`` "13% more"."""
    return f"{100.0 * abs(saving):.0f}% {'fewer' if saving >= 0 else 'more'}"
