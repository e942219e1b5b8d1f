"""The environments as agents see them: made from a config, vectorised for training, pinned to fixed seeds for
evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

import adaptergym  # noqa: F401  (registers the environments, also in SubprocVecEnv workers)
from adaptergym import load_profile
from adaptergym.errors import ConfigError
from agents.config import TrainConfig


def resolve_scorer(scorer: str, env_kwargs: dict[str, Any]) -> str:
    """``fast`` -> ``surrogate`` when one is trained for the env's profile, else ``analytic``; others unchanged."""
    if scorer != "fast":
        return scorer
    from adaptergym.surrogate import load_surrogate  # pandas and scikit-learn: only when asked

    return "surrogate" if load_surrogate(load_profile(env_kwargs.get("profile"))) is not None else "analytic"


def make_env(env_id: str, **kwargs: Any) -> gym.Env:
    """``gymnasium.make`` with a one-line error for arguments the environment does not take.

    Raises:
        ConfigError: an unknown keyword in ``kwargs`` (named).
    """
    try:
        return gym.make(env_id, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"env_kwargs: {exc}; see the class docstring of {env_id} for its arguments") from None


def training_envs(config: TrainConfig, scorer: str) -> VecEnv:
    """``config.n_envs`` environments on the training split, seeded ``config.seed``, ``seed + 1``, ..."""
    kwargs = {"env_id": config.env, **config.env_kwargs, "scorer": scorer, "split": "train"}
    cls = SubprocVecEnv if config.vec_env == "subproc" else DummyVecEnv
    return make_vec_env(make_env, n_envs=config.n_envs, seed=config.seed, vec_env_cls=cls, env_kwargs=kwargs)


class FixedSeeds(gym.Wrapper):
    """Plays ``seeds`` in order, one per reset (as both the episode seed and the scenario seed), so that every
    evaluation during training sees the same held-out workloads. ``rewind()`` starts over."""

    def __init__(self, env: gym.Env, seeds: Sequence[int]) -> None:
        super().__init__(env)
        self.seeds = list(seeds)
        self._next = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        episode_seed = self.seeds[self._next % len(self.seeds)]
        self._next += 1
        return self.env.reset(seed=episode_seed, options={"scenario_seed": episode_seed})

    def rewind(self) -> None:
        self._next = 0


def evaluation_env(config: TrainConfig, scorer: str, seeds: Sequence[int]) -> VecEnv:
    """One environment playing ``seeds`` in order, for SB3's ``EvalCallback`` (hence the ``Monitor``)."""
    kwargs = {**config.env_kwargs, "scorer": scorer}
    return DummyVecEnv([lambda: Monitor(FixedSeeds(make_env(config.env, **kwargs), seeds))])


class RewindSeeds(BaseCallback):
    """Run after each evaluation of an ``EvalCallback`` (``callback_after_eval``): the next evaluation starts
    from the first seed again (SB3 resets a finished episode's env once more, which would shift the cycle)."""

    def _on_step(self) -> bool:
        assert self.parent is not None
        self.parent.eval_env.env_method("rewind")  # type: ignore[attr-defined]
        return True
