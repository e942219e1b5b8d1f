"""A training run on disk, and a trained agent loaded back from its final model or any checkpoint.

A run's folder (``python -m agents.train --out OUT``)::

    OUT/config.json              the TrainConfig, with the scorer it trained with
    OUT/model.zip                the final model
    OUT/checkpoints/model_*.zip  snapshots every ``checkpoint_freq`` steps
    OUT/logs/                    progress.csv, and TensorBoard events when tensorboard is installed
    OUT/eval/evaluations.npz     the held-out evaluations during training (SB3's EvalCallback format)
    OUT/learning_curve.png
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm

from adaptergym.errors import ConfigError
from agents.config import ALGORITHMS, TrainConfig

CONFIG = "config.json"
MODEL = "model.zip"
CHECKPOINTS = "checkpoints"
LOGS = "logs"
EVAL = "eval"
CURVE = "learning_curve.png"


def find_config(checkpoint: Path) -> Path:
    """The ``config.json`` of the run a model belongs to: beside it (the final model) or one folder up (a
    checkpoint)."""
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        if (folder / CONFIG).is_file():
            return folder / CONFIG
    raise ConfigError(f"checkpoint: no {CONFIG} beside {checkpoint} or in its parent folder; give a model from a "
                      "folder written by python -m agents.train")


@dataclass(frozen=True, slots=True)
class TrainedAgent:
    """A trained model with the configuration it was trained with. ``predict`` has the signature of
    sb3-contrib's ``MaskablePPO.predict`` whatever the algorithm (models that ignore masks ignore them)."""

    model: BaseAlgorithm
    config: TrainConfig
    checkpoint: Path

    def predict(self, observation: dict[str, np.ndarray], state: Any = None, episode_start: Any = None,
                deterministic: bool = True, action_masks: np.ndarray | None = None) -> tuple[np.ndarray, Any]:
        if self.config.masked:
            return self.model.predict(observation, state, episode_start, deterministic,  # type: ignore[call-arg]
                                      action_masks=action_masks)
        return self.model.predict(observation, state, episode_start, deterministic)


def load_agent(checkpoint: str | Path) -> TrainedAgent:
    """Load a run's final model (``OUT`` or ``OUT/model.zip``) or one of its checkpoints, on the CPU.

    Raises:
        ConfigError: no such file, no ``config.json`` for it, or not a model of the configured algorithm.
    """
    path = Path(checkpoint)
    if path.is_dir():
        path = path / MODEL
    if not path.is_file():
        raise ConfigError(f"checkpoint: {path} is not a file; give a run folder or a model .zip written by "
                          "python -m agents.train")
    config = TrainConfig.from_json(find_config(path))
    try:
        model = ALGORITHMS[config.algo].load(path, device="cpu")
    except (zipfile.BadZipFile, KeyError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"checkpoint: {path} is not a {config.algo} model ({exc})") from None
    return TrainedAgent(model, config, path)


def agent_label(checkpoint: str | Path) -> str:
    """How leaderboards name an agent: ``agent:<run folder>`` for a run's final model (the folder or its
    ``model.zip``), ``agent:<run folder>/<stem>`` for one of its checkpoints.

    Raises:
        ConfigError: no ``config.json`` for it (:func:`find_config`).
    """
    path = Path(checkpoint)
    path = path / MODEL if path.is_dir() else path
    run = find_config(path).parent
    return f"agent:{run.name}" if path == run / MODEL else f"agent:{run.name}/{path.stem}"
