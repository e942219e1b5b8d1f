"""Reference policies agents are compared with in ``agents.evaluate``, with the predict signature of
sb3-contrib's ``MaskablePPO`` (``predict(obs, state, episode_start, deterministic, action_masks)``)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from adaptergym.envs import ENV_IDS
from adaptergym.envs.fleet_control import FILLS, START_ACTION
from adaptergym.errors import ConfigError

#: vLLM's default ``--max-loras``.
VLLM_DEFAULT_MAX_LORAS = 1


class RandomPolicy:
    """Uniform among the valid choices of each action component (the environment's ``action_masks()``).

    Args:
        nvec: the MultiDiscrete action space's sizes, as the mask concatenates them.
        seed: seed of its own generator (evaluations over the same seeds in the same order repeat exactly).
    """

    def __init__(self, nvec: np.ndarray, seed: int = 0) -> None:
        self.splits = np.cumsum(nvec)[:-1]
        self.rng = np.random.default_rng(seed)

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = True,
                action_masks: np.ndarray | None = None) -> tuple[np.ndarray, None]:
        if action_masks is None:
            raise ValueError("RandomPolicy needs the environment's action_masks()")
        return np.array([self.rng.choice(np.flatnonzero(m)) for m in np.split(action_masks, self.splits)]), None


class VllmDefaultPolicy:
    """AdapterCaching-v0 as vLLM runs out of the box: serve every offered adapter, ``max_loras`` = vLLM's
    default (1)."""

    def __init__(self, env: gym.Env) -> None:
        base = env.unwrapped
        if env.spec is None or env.spec.id != ENV_IDS[0]:
            raise ConfigError(f"policy 'vllm-default' is defined for {ENV_IDS[0]} only")
        levels = [int(x) for x in base.levels]  # type: ignore[attr-defined]
        if VLLM_DEFAULT_MAX_LORAS not in levels:
            raise ConfigError(f"max_loras_levels: {levels} lack vLLM's default max_loras {VLLM_DEFAULT_MAX_LORAS}")
        self.max_adapters = int(base.max_adapters)  # type: ignore[attr-defined]
        self.level = levels.index(VLLM_DEFAULT_MAX_LORAS)

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = True,
                action_masks: np.ndarray | None = None) -> tuple[np.ndarray, None]:
        if action_masks is None:
            raise ValueError("VllmDefaultPolicy needs the environment's action_masks() (they count the candidates)")
        return np.array([int(action_masks[: self.max_adapters].sum()) - 1, self.level]), None


class FixedKnobsPolicy:
    """AdapterFleet-v0 with the same knobs every epoch: by default those every episode starts with (fill 0.5,
    hysteresis 0.25, slot fraction 0.5), a sensible operator's setting. A fill masked for the load (it would need
    more than ``max_replicas``) is raised to the smallest valid one, as the environment itself would."""

    def __init__(self, env: gym.Env, action: tuple[int, int, int] = START_ACTION) -> None:
        if env.spec is None or env.spec.id != ENV_IDS[2]:
            raise ConfigError(f"policy 'fixed-knobs' is defined for {ENV_IDS[2]} only")
        self.action = np.array(action)

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = True,
                action_masks: np.ndarray | None = None) -> tuple[np.ndarray, None]:
        action = self.action.copy()
        if action_masks is not None and not action_masks[action[0]]:
            action[0] = int(np.argmax(action_masks[: len(FILLS)]))
        return action, None


class FixedFillPolicy:
    """AdapterPlacement-v1 with one action for every GPU: fill ``fill`` of the surrogate's capacity, ``max_loras``
    one per adapter (slot fraction 1). Fill 1 is the published greedy's packing to the surrogate's edge without
    its twin repair; below 1 it leaves that much headroom.

    Raises:
        ConfigError: not AdapterPlacement-v1, or a fill (or slot fraction 1) its action space does not offer.
    """

    def __init__(self, env: gym.Env, fill: float) -> None:
        base = env.unwrapped
        if env.spec is None or env.spec.id != ENV_IDS[3]:
            raise ConfigError(f"policy 'fill-{fill:g}' is defined for {ENV_IDS[3]} only")
        fills, fractions = list(base.fills), list(base.slot_fractions)  # type: ignore[attr-defined]
        if fill not in fills or 1.0 not in fractions:
            raise ConfigError(f"policy 'fill-{fill:g}': the environment's fills are {fills} and slot fractions "
                              f"{fractions}; pick a fill among them (slot fraction 1 must be offered)")
        self.action = np.array([fills.index(fill), fractions.index(1.0)])

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = True,
                action_masks: np.ndarray | None = None) -> tuple[np.ndarray, None]:
        return self.action.copy(), None
