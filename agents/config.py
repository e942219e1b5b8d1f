"""Training configurations: one frozen dataclass, with defaults chosen per (environment, algorithm).

A run's configuration is saved as ``config.json`` beside its model, so a checkpoint can be evaluated, wrapped as a
policy or trained again without remembering the flags. Every field is a ``python -m agents.train`` flag
(``n_envs`` -> ``--n-envs``), so the names below are also the names errors use.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sb3_contrib import MaskablePPO
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.base_class import BaseAlgorithm

from adaptergym.envs import ENV_IDS
from adaptergym.errors import ConfigError

CACHING, PLACEMENT, FLEET, PACKING = ENV_IDS
#: The algorithms agents train, by name (DQN is missing: it needs a Discrete action space, and every
#: environment's actions are MultiDiscrete).
ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "maskable_ppo": MaskablePPO, "a2c": A2C}
ALGOS = tuple(ALGORITHMS)
#: Algorithms that follow the environment's ``action_masks()``.
MASKED_ALGOS = ("maskable_ppo",)
VEC_ENVS = ("dummy", "subproc")
LR_SCHEDULES = ("constant", "linear")


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Everything one training run needs. Hyperparameters an algorithm does not take (``batch_size`` and
    ``n_epochs`` for A2C) are ignored by it."""

    env: str = field(default=CACHING, metadata={"help": f"environment id: {', '.join(ENV_IDS)}"})
    algo: str = field(default="ppo", metadata={"help": f"algorithm: {', '.join(ALGOS)}"})
    steps: int = field(default=100_000, metadata={"help": "environment steps to train for (all envs together)"})
    seed: int = field(default=0, metadata={"help": "seed of the model, the training envs and their workloads"})
    scorer: str = field(default="fast", metadata={
        "help": "env scorer while training: fast (the surrogate when one is trained for the profile, else "
                "analytic), surrogate, analytic or twin"})
    env_kwargs: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "other environment arguments, KEY=VALUE (VALUE read as JSON if it parses), repeatable"})
    n_envs: int = field(default=4, metadata={"help": "environments stepped together"})
    vec_env: str = field(default="dummy", metadata={
        "help": "dummy (one process; best for fast scorers) or subproc (one process per env; for the twin)"})
    learning_rate: float = field(default=3e-4, metadata={"help": "optimizer step size (at the start)"})
    lr_schedule: str = field(default="constant", metadata={
        "help": "constant, or linear: decay the step size to 0 over the run, so the last updates barely move "
                "the final model"})
    n_steps: int = field(default=256, metadata={"help": "steps per env between updates"})
    batch_size: int = field(default=256, metadata={"help": "minibatch size (PPO)"})
    n_epochs: int = field(default=10, metadata={"help": "passes over each rollout (PPO)"})
    gamma: float = field(default=0.99, metadata={"help": "discount factor"})
    gae_lambda: float = field(default=0.95, metadata={"help": "GAE lambda"})
    ent_coef: float = field(default=0.0, metadata={"help": "entropy bonus"})
    net_arch_pi: tuple[int, ...] = field(default=(64, 64), metadata={"help": "policy network layer widths, e.g. 64,64"})
    net_arch_vf: tuple[int, ...] = field(default=(64, 64), metadata={"help": "value network layer widths"})
    eval_freq: int = field(default=10_000, metadata={"help": "evaluate on held-out seeds every this many steps"})
    eval_episodes: int = field(default=20, metadata={"help": "held-out (test-split) seeds in each evaluation"})
    checkpoint_freq: int = field(default=50_000, metadata={"help": "save a checkpoint every this many steps"})
    torch_threads: int = field(default=1, metadata={
        "help": "torch CPU threads (these networks are small: more threads mostly wait on each other)"})

    def __post_init__(self) -> None:
        if self.env not in ENV_IDS:
            raise ConfigError(f"env: {self.env!r} is not one of {', '.join(ENV_IDS)}")
        if self.algo not in ALGOS:
            raise ConfigError(f"algo: {self.algo!r} is not one of {', '.join(ALGOS)} (no DQN: it needs a Discrete "
                              "action space, and every environment's actions are MultiDiscrete)")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"lr_schedule: {self.lr_schedule!r} is not one of {', '.join(LR_SCHEDULES)}")
        if self.vec_env not in VEC_ENVS:
            raise ConfigError(f"vec_env: {self.vec_env!r} is not one of {', '.join(VEC_ENVS)}")
        for name in ("steps", "n_envs", "n_steps", "batch_size", "n_epochs", "eval_freq", "eval_episodes",
                     "checkpoint_freq", "torch_threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: {getattr(self, name)} must be >= 1")
        if self.learning_rate <= 0 or self.ent_coef < 0:
            raise ConfigError("learning_rate must be > 0 and ent_coef >= 0")
        if not (0 <= self.gamma <= 1 and 0 <= self.gae_lambda <= 1):
            raise ConfigError(f"gamma ({self.gamma}) and gae_lambda ({self.gae_lambda}) must be in [0, 1]")
        if not self.net_arch_pi or not self.net_arch_vf or min(self.net_arch_pi + self.net_arch_vf) < 1:
            raise ConfigError("net_arch_pi and net_arch_vf: give at least one layer width, each >= 1, e.g. 64,64")
        if self.algo != "a2c" and self.n_steps * self.n_envs < 2:
            raise ConfigError(f"n_steps x n_envs ({self.n_steps} x {self.n_envs}) must be >= 2 for PPO")

    @property
    def masked(self) -> bool:
        """Whether the algorithm follows the environment's ``action_masks()``."""
        return self.algo in MASKED_ALGOS

    def to_json(self, path: Path) -> None:
        """Write the configuration as JSON (``config.json`` of a run)."""
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")

    @classmethod
    def from_json(cls, path: Path) -> TrainConfig:
        """Read a run's ``config.json``.

        Raises:
            ConfigError: unreadable JSON or unknown fields (the message names the file).
        """
        try:
            data = json.loads(path.read_text())
            data["net_arch_pi"], data["net_arch_vf"] = tuple(data["net_arch_pi"]), tuple(data["net_arch_vf"])
            return cls(**data)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"{path}: not a training config written by agents.train ({exc})") from None


#: Defaults that differ from the dataclass's, per environment, then per (environment, algorithm).
_ENV_DEFAULTS: dict[str, dict[str, Any]] = {
    # One-step episodes (a contextual bandit): short rollouts, a fast learning rate decaying to 0 (at a constant
    # 1e-3 the held-out mean moved by up to 0.08 between evaluations, 0.55 -> 0.48 -> 0.56; decaying, it stays
    # within 0.001 after 20,000 steps: eval/evaluations.npz of the two runs), some entropy so the count is not
    # fixed too early, and a small network (1,541 inputs) so the saved model stays under 1 MB.
    CACHING: {"steps": 60_000, "n_steps": 64, "batch_size": 64, "learning_rate": 1e-3, "lr_schedule": "linear",
              "ent_coef": 0.01, "net_arch_pi": (24,), "net_arch_vf": (8,), "eval_freq": 10_000,
              "eval_episodes": 100},
    # Episodes of 64-192 placements scored only at the end: no discounting, rollouts of a few episodes.
    PLACEMENT: {"steps": 200_000, "n_steps": 256, "batch_size": 256, "gamma": 1.0, "ent_coef": 0.01,
                "eval_freq": 20_000, "eval_episodes": 20},
    # Episodes of 23-71 epochs whose every step costs: rollouts of a few episodes per env, a discount that sees
    # a start-up (2-3 epochs) ahead, a little entropy so the fill is not fixed too early, held-out evaluations
    # on 12 test seeds (the three families mixed) with the fast scorer.
    FLEET: {"steps": 80_000, "n_steps": 256, "batch_size": 256, "gamma": 0.97, "ent_coef": 0.01,
            "eval_freq": 15_000, "eval_episodes": 12, "checkpoint_freq": 50_000},
    # Episodes of 2-4 GPUs scored by the twin itself (the surrogate that drives the packer cannot also judge it), in
    # two worker processes; short rollouts and a fast learning rate decaying to 0, as the twin makes every episode
    # cost; a starved placement costs 6x v0's penalty, a GPU saved 1/8 of the pool (at 4x the agent packed past
    # the twin's edge on 1 of 40 training workloads, at 6x on none of 80).
    PACKING: {"steps": 12_000, "scorer": "twin", "n_envs": 2, "vec_env": "subproc", "n_steps": 64, "batch_size": 64,
              "learning_rate": 1e-3, "lr_schedule": "linear", "gamma": 1.0, "ent_coef": 0.01,
              "env_kwargs": {"starvation_penalty": 6.0}, "eval_freq": 3_000, "eval_episodes": 20,
              "checkpoint_freq": 4_000},
}
_ALGO_DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    # A2C updates after every rollout with no minibatches: shorter rollouts, its usual RMSprop step size.
    (CACHING, "a2c"): {"n_steps": 16, "learning_rate": 7e-4},
    (PLACEMENT, "a2c"): {"n_steps": 32, "learning_rate": 7e-4},
}


def default_config(env: str = CACHING, algo: str = "ppo", **overrides: Any) -> TrainConfig:
    """The configuration of ``algo`` on ``env`` with its tuned defaults, then ``overrides``.

    Raises:
        ConfigError: unknown field in ``overrides`` (named), or an invalid value.
    """
    unknown = set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise ConfigError(f"unknown training option(s) {sorted(unknown)}; known: "
                          f"{', '.join(f.name for f in dataclasses.fields(TrainConfig))}")
    values = {**_ENV_DEFAULTS.get(env, {}), **_ALGO_DEFAULTS.get((env, algo), {}), **overrides}
    return TrainConfig(env=env, algo=algo, **values)
