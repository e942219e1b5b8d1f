"""The learning curve of a run: training episodes' mean reward, and held-out evaluations with 95% intervals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from agents.config import TrainConfig
from agents.run import CONFIG, CURVE, EVAL, LOGS
from agents.stats import mean_ci


def plot_learning_curve(run: Path, out: Path | None = None) -> Path:
    """Draw ``run``'s learning curve into ``out`` (default ``run/learning_curve.png``) and return its path.

    Training: ``rollout/ep_rew_mean`` of ``logs/progress.csv`` (the last 100 training episodes, sampled
    actions, training seeds). Held out: ``eval/evaluations.npz``, deterministic actions on the same test-split
    seeds at every evaluation, mean and 95% t-interval over those seeds.
    """
    config = TrainConfig.from_json(run / CONFIG)
    fig = Figure(figsize=(6.4, 4.0), dpi=100)  # no pyplot: no GUI backend, no global figure state
    ax = fig.subplots()
    progress = run / LOGS / "progress.csv"
    if progress.is_file():
        log = pd.read_csv(progress)
        if "rollout/ep_rew_mean" in log:
            log = log.dropna(subset=["rollout/ep_rew_mean"])
            ax.plot(log["time/total_timesteps"], log["rollout/ep_rew_mean"], color="0.6", lw=1,
                    label="training episodes (last 100, sampled actions)")
    evaluations = run / EVAL / "evaluations.npz"
    if evaluations.is_file():
        data = np.load(evaluations)
        summary = np.array([mean_ci(r) for r in data["results"]])
        if len(summary):
            episodes = data["results"].shape[1]
            ax.plot(data["timesteps"], summary[:, 0], "o-", color="C0",
                    label=f"held out: {episodes} test seeds (deterministic), 95% CI")
            ax.fill_between(data["timesteps"], summary[:, 1], summary[:, 2], color="C0", alpha=0.2)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode reward")
    ax.set_title(f"{config.algo} on {config.env.split('/')[-1]} ({config.scorer} scorer, seed {config.seed})",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = out or run / CURVE
    fig.savefig(path)
    return path
