"""Evaluate a trained agent, beside reference policies, on a scenario's held-out seeds: one row per (policy, seed)
and a summary with 95% confidence intervals over seeds.

    python -m agents.evaluate --checkpoint runs/AdapterCaching-v0-ppo-seed0/model.zip [--env ID]
        [--seeds test|train|A-B|A,B,...] [--episodes N] [--scorer twin] [--baselines random,vllm-default]
        [--rows rows.csv] [--json]

Each seed is one episode: ``reset(seed=s, options={"scenario_seed": s})``, so the workload and the scorer's
request draw are fixed by the seed and every policy sees the same episodes. Agents act deterministically. A
policy that follows ``action_masks()`` (MaskablePPO, the reference policies) taking a masked action is a bug,
and evaluation stops with an AssertionError.

On the placement environments a row also holds the workload's lower bound on GPUs (``baselines.bound.lower_bound_gpus``,
the bound ``adaptergym leaderboard`` divides every policy's GPUs by), and :func:`placement_rows` gives a placement
agent's rows in the leaderboard's format.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import pandas as pd

from adaptergym.envs import PLACEMENT_IDS
from adaptergym.errors import ConfigError
from adaptergym.scenarios import get_scenario
from agents.cli import Parser, key_value, run
from agents.config import CACHING, FLEET
from agents.envs import make_env
from agents.reference import FixedFillPolicy, FixedKnobsPolicy, RandomPolicy, VllmDefaultPolicy
from agents.run import agent_label, load_agent
from agents.stats import mean_ci

CACHING_COLUMNS = ("scenario", "seed", "policy", "reward", "served_share", "starved", "max_loras",
                   "served_adapters")
PLACEMENT_COLUMNS = ("scenario", "seed", "policy", "reward", "adapters", "gpus", "lower_bound_gpus", "ratio_to_bound",
                     "starved_gpus", "total_throughput", "p99_ttft_ms", "decision_time_s")
FLEET_COLUMNS = ("scenario", "seed", "policy", "reward", "gpu_hours", "starved_adapter_minutes", "slo_percent",
                 "p99_ttft_s", "loads", "migrations", "cold_starts", "decision_time_s")
#: The rows of ``adaptergym leaderboard`` (:func:`placement_rows`), in its column order.
LEADERBOARD_COLUMNS = ("policy", "suite", "scenario", "seed", "adapters", "gpus", "lower_bound_gpus",
                       "ratio_to_bound", "starved_gpus", "total_throughput", "p99_ttft_ms", "decision_time_s")
BASELINES = ("random", "vllm-default", "fixed-knobs", "fill-F")
#: Columns a summary averages over seeds, where the rows have them (``starved``: the share of starved episodes).
MEANS = ("starved", "served_share", "gpus", "lower_bound_gpus", "ratio_to_bound", "starved_gpus", "gpu_hours",
         "starved_adapter_minutes")


class Predictor(Protocol):
    """sb3-contrib's ``MaskablePPO.predict`` signature, which agents and reference policies all have."""

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = True,
                action_masks: np.ndarray | None = None) -> tuple[np.ndarray, Any]: ...


@dataclass(frozen=True, slots=True)
class Played:
    """One episode: its return, the last step's info (the outcome), the time the policy took to decide (its
    predictions, and on the placing environments the steps that only record a decision: every step but the
    scored last one; AdapterFleet-v0 serves an epoch at every step, which is not deciding), and how many of its
    actions were masked."""

    reward: float
    info: dict[str, Any]
    decision_time_s: float
    masked_actions: int


def play(policy: Predictor, env: gym.Env, seed: int) -> Played:
    """Run one episode of ``policy`` on the workload and request draw of ``seed``."""
    obs, info = env.reset(seed=seed, options={"scenario_seed": seed})
    splits = np.cumsum(env.action_space.nvec)[:-1]  # type: ignore[attr-defined]
    records_only = env.spec is None or env.spec.id != FLEET
    total, thinking, masked = 0.0, 0.0, 0
    while True:
        mask = env.get_wrapper_attr("action_masks")()
        start = time.perf_counter()
        action, _ = policy.predict(obs, deterministic=True, action_masks=mask)
        thinking += time.perf_counter() - start
        masked += not all(part[a] for part, a in zip(np.split(mask, splits), action, strict=True))
        start = time.perf_counter()
        obs, reward, terminated, truncated, info = env.step(np.asarray(action, dtype=np.int64))
        total += float(reward)
        if terminated or truncated:
            return Played(total, info, thinking, masked)
        if records_only:
            thinking += time.perf_counter() - start


def row(env: gym.Env, name: str, seed: int, played: Played) -> dict[str, Any]:
    """The row of one episode (columns :data:`CACHING_COLUMNS`, :data:`PLACEMENT_COLUMNS` or
    :data:`FLEET_COLUMNS`)."""
    info, scenario = played.info, env.unwrapped.scenario.name  # type: ignore[attr-defined]
    if env.spec is not None and env.spec.id == FLEET:
        totals = info["episode"]
        slo, p99 = totals["slo_share"], totals["p99_ttft_ms"]
        return {"scenario": scenario, "seed": seed, "policy": name, "reward": played.reward,
                "gpu_hours": totals["gpu_hours"], "starved_adapter_minutes": totals["starved_adapter_minutes"],
                "slo_percent": _nan_if_none(None if slo is None else 100.0 * slo),
                "p99_ttft_s": _nan_if_none(None if p99 is None else p99 / 1000.0), "loads": totals["loads"],
                "migrations": totals["migrations"], "cold_starts": totals["cold_starts"],
                "decision_time_s": played.decision_time_s}
    if env.spec is not None and env.spec.id == CACHING:
        # The reward before its starvation penalty: served share of the candidates' load (ratio x share).
        served_share = info["score"] + (1.0 if info["starved"] else 0.0)
        return {"scenario": scenario, "seed": seed, "policy": name, "reward": played.reward,
                "served_share": served_share, "starved": bool(info["starved"]), "max_loras": int(info["max_loras"]),
                "served_adapters": int(info["num_served"])}
    from baselines.bound import lower_bound_gpus

    gpus = int(info["gpus_used"])
    bound = lower_bound_gpus(env.unwrapped.scenario.workload(seed), env.unwrapped.profile)  # type: ignore[attr-defined]
    return {"scenario": scenario, "seed": seed, "policy": name, "reward": played.reward,
            "adapters": int(info["gpu_adapters"].sum()), "gpus": gpus, "lower_bound_gpus": bound,
            "ratio_to_bound": gpus / bound, "starved_gpus": int(info["starved_gpus"]),
            "total_throughput": float(info["served_tok_s"]), "p99_ttft_ms": _nan_if_none(info["p99_ttft_ms"]),
            "decision_time_s": played.decision_time_s}


def _nan_if_none(value: float | None) -> float:
    """A table cell from an ``info`` value that is None when undefined (pandas averages skip NaN)."""
    return math.nan if value is None else float(value)


def evaluate(policy: Predictor, name: str, env: gym.Env, seeds: Sequence[int], *,
             follows_masks: bool) -> list[dict[str, Any]]:
    """One row per seed for ``policy``; with ``follows_masks``, assert that it never took a masked action."""
    rows = []
    for seed in seeds:
        played = play(policy, env, int(seed))
        if follows_masks and played.masked_actions:
            raise AssertionError(f"{name} took {played.masked_actions} masked action(s) on seed {seed}")
        rows.append(row(env, name, int(seed), played))
    return rows


def placement_rows(checkpoint: Path, suite: str, seeds: Sequence[int]) -> list[dict[str, Any]]:
    """A trained placement agent's (AdapterPlacement-v0 or -v1) leaderboard rows (:data:`LEADERBOARD_COLUMNS`): one
    per (scenario of ``suite``, seed), each episode scored by the Digital Twin (``scorer="twin"``), the agent acting
    deterministically and checked never to take a masked action.

    Args:
        checkpoint: a run folder written by ``python -m agents.train`` (or its model .zip); the policy is named
            ``agent:<run folder name>``.
        suite: one scenario name, or several comma-separated (``"zipf-large,bursty"``).
        seeds: test-split seeds of those scenarios (training seeds are refused: the agent may have seen them).

    Raises:
        ConfigError: a checkpoint not trained on a placement environment, or a seed outside a scenario's test
            split.
        UnknownScenario: a name in ``suite`` that is not a scenario.
    """
    agent = load_agent(checkpoint)
    if agent.config.env not in PLACEMENT_IDS:
        raise ConfigError(f"checkpoint: {checkpoint} was trained on {agent.config.env}, not on "
                          f"{' or '.join(PLACEMENT_IDS)}")
    name = agent_label(agent.checkpoint)
    rows = []
    for scenario in (get_scenario(s.strip()) for s in suite.split(",")):
        outside = [s for s in seeds if s not in scenario.test_seeds]
        if outside:
            raise ConfigError(f"seeds: {outside[:3]} are not test seeds of {scenario.name} "
                              f"({scenario.test_seeds.start}-{scenario.test_seeds.stop - 1})")
        env = make_env(agent.config.env, **{**agent.config.env_kwargs, "scenario": scenario.name, "scorer": "twin"})
        try:
            played = evaluate(agent, name, env, seeds, follows_masks=agent.config.masked)
        finally:
            env.close()
        rows += [{column: {**r, "suite": suite}[column] for column in LEADERBOARD_COLUMNS} for r in played]
    return rows


def summarize(rows: list[dict[str, Any]], agent: str) -> list[dict[str, Any]]:
    """Per policy: episodes, mean reward with its 95% t-interval, and the agent's paired margin over it (agent
    minus policy, seed by seed, with its 95% t-interval)."""
    frame = pd.DataFrame(rows)
    mine = frame[frame.policy == agent].set_index("seed")["reward"]
    summary = []
    for name, group in frame.groupby("policy", sort=False):
        mean, low, high = mean_ci(group["reward"])
        entry: dict[str, Any] = {"policy": name, "episodes": len(group), "reward": mean, "reward_low": low,
                                 "reward_high": high}
        if name != agent:
            margin = mine - group.set_index("seed")["reward"].reindex(mine.index)
            entry["margin"], entry["margin_low"], entry["margin_high"] = mean_ci(margin.dropna())
        for column in MEANS:
            if column in group:
                entry[column] = float(group[column].mean())
        summary.append(entry)
    return summary


def markdown(summary: list[dict[str, Any]], agent: str) -> str:
    """The summary as a Markdown table (means; starved is the share of starved episodes)."""
    extra = [c for c in MEANS if c in summary[0]]
    header = ["policy", "episodes", "mean reward [95% CI]", f"{agent} minus policy [95% CI]"]
    header += [f"mean {c}" for c in extra]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in summary:
        margin = (f"{s['margin']:+.3f} [{s['margin_low']:+.3f}, {s['margin_high']:+.3f}]" if "margin" in s else "")
        values = " | ".join(f"{s[c]:.3f}" for c in extra)
        lines.append(f"| {s['policy']} | {s['episodes']} | {s['reward']:.3f} [{s['reward_low']:.3f}, "
                     f"{s['reward_high']:.3f}] | {margin} | {values} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- command line
def parse_seeds(text: str, env: gym.Env, episodes: int | None) -> list[int]:
    """``test`` / ``train`` (the scenario's split), ``A-B`` (inclusive) or ``A,B,...``; the first ``episodes``."""
    scenario = env.unwrapped.scenario  # type: ignore[attr-defined]
    try:
        if text in ("test", "train"):
            seeds = list(scenario.seeds(text)[: episodes or 100])
        elif "-" in text.strip("-"):
            low, high = (int(x) for x in text.split("-"))
            seeds = list(range(low, high + 1))
        else:
            seeds = [int(x) for x in text.split(",")]
    except ValueError:
        raise ConfigError(f"seeds: {text!r} is not test, train, A-B or A,B,... (integers)") from None
    if not seeds:
        raise ConfigError(f"seeds: {text!r} holds no seed")
    return seeds[:episodes] if episodes else seeds


def reference_policy(name: str, env: gym.Env) -> Predictor:
    """The reference policy ``name`` of :data:`BASELINES` on ``env`` (``fill-F``: e.g. ``fill-0.9``).

    Raises:
        ConfigError: an unknown name, or one the environment does not support.
    """
    if name == "random":
        return RandomPolicy(env.action_space.nvec, seed=0)  # type: ignore[attr-defined]
    if name == "vllm-default":
        return VllmDefaultPolicy(env)
    if name == "fixed-knobs":
        return FixedKnobsPolicy(env)
    try:
        fill = float(name.removeprefix("fill-")) if name.startswith("fill-") else None
    except ValueError:
        fill = None
    if fill is None:
        raise ConfigError(f"baselines: {name!r} not among {', '.join(BASELINES)}")
    return FixedFillPolicy(env, fill)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m agents.evaluate", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a run folder, its model.zip or a checkpoint .zip")
    parser.add_argument("--env", default=None, help="environment id (default: the one the agent trained on)")
    parser.add_argument("--seeds", default="test", help="test (default), train, A-B or A,B,...")
    parser.add_argument("--episodes", type=int, default=None, help="evaluate on the first N seeds only")
    parser.add_argument("--scorer", default=None,
                        help="env scorer (default: the one it trained with); twin for the Digital Twin itself")
    parser.add_argument("--env-kwarg", dest="env_kwargs", type=key_value, action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override an environment argument (VALUE read as JSON if it parses), repeatable")
    parser.add_argument("--baselines", default=None,
                        help=f"reference policies, comma-separated: {', '.join(BASELINES)} (fill-F on "
                             "AdapterPlacement-v1: every GPU at fill F, e.g. fill-0.9; default: random and "
                             "vllm-default on AdapterCaching-v0, random and fixed-knobs on AdapterFleet-v0, random "
                             "on the placement environments)")
    parser.add_argument("--name", default=None, help="the agent's name in the rows (default: its algorithm)")
    parser.add_argument("--rows", type=Path, default=None, help="write every row to this CSV")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON instead of Markdown")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return parser


def _main(args: argparse.Namespace) -> int:
    agent = load_agent(args.checkpoint)
    env_id = args.env or agent.config.env
    if env_id != agent.config.env:
        raise ConfigError(f"env: the agent was trained on {agent.config.env}, not {env_id}")
    if args.episodes is not None and args.episodes < 1:
        raise ConfigError(f"episodes: {args.episodes} must be >= 1")
    overrides = dict(args.env_kwargs)
    env = make_env(env_id, **{**agent.config.env_kwargs, **overrides, "scorer": args.scorer or agent.config.scorer})
    if env.observation_space != agent.model.observation_space:
        shapes = [{k: s.shape for k, s in space.spaces.items()}  # type: ignore[attr-defined]
                  for space in (env.observation_space, agent.model.observation_space)]
        raise ConfigError(f"env_kwargs: this environment's observation shapes {shapes[0]} differ from the agent's "
                          f"{shapes[1]}; keep the sizes it trained with")
    seeds = parse_seeds(args.seeds, env, args.episodes)
    defaults = {CACHING: ["random", "vllm-default"], FLEET: ["random", "fixed-knobs"]}
    names = args.baselines.split(",") if args.baselines is not None else defaults.get(env_id, ["random"])
    policies = [(n, reference_policy(n, env)) for n in names if n]
    name = args.name or agent.config.algo
    rows = evaluate(agent, name, env, seeds, follows_masks=agent.config.masked)
    for baseline, policy in policies:
        rows += evaluate(policy, baseline, env, seeds, follows_masks=True)
    env.close()
    if args.rows:
        pd.DataFrame(rows).to_csv(args.rows, index=False)
    summary = summarize(rows, name)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        scorer = env.unwrapped.scorer  # type: ignore[attr-defined]
        scenarios = ", ".join(dict.fromkeys(r["scenario"] for r in rows))
        print(f"{env_id}, scenario {scenarios}, {len(seeds)} seeds ({args.seeds}), scorer "
              f"{getattr(scorer, 'name', scorer)}:\n")  # the placing envs hold a scorer, AdapterFleet-v0 its name
        print(markdown(summary, name))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m agents.evaluate``; returns the exit code (0 ok, 1 bad input, 2 bad flag)."""
    return run(_main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
