"""Short seeded AdapterFleet-v0 episodes (and one online-policy replay), fingerprinted before fast mode was sped up,
so that any change to what fast mode computes shows (``tests/test_fleet_fingerprints.py``).

A fingerprint is exact: a hash of every observation (float32 bytes), reward (``float.hex``), ``info`` (JSON of
its values, floats by ``repr``) and each epoch's per-adapter figures (offered rates and tokens, served tokens,
starvation), plus the rewards and the episode's totals in clear, to show where a mismatch starts.

Regenerate ``tests/data/fleet_fingerprints.json`` only on purpose (when what fast mode computes is meant to
change): ``python -m tests.fleet_cases``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import adaptergym  # noqa: F401  (registers the environments)
from adaptergym.dynamic import DynamicFleet, EpochResult
from adaptergym.scenarios import get_scenario

FLEET_FINGERPRINTS = Path(__file__).parent / "data" / "fleet_fingerprints.json"
FLEET = "adaptergym/AdapterFleet-v0"


def _plain(value: Any) -> Any:
    """JSON-able form of numpy values in ``info``."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot fingerprint {type(value).__name__}")


def _add_result(digest: Any, result: EpochResult) -> None:
    for array in (result.offered_rates, result.offered_tok_s, result.served_tok_s, result.starved):
        digest.update(np.ascontiguousarray(array).tobytes())


def _env_case(scorer: str, scenario: str, seeds: tuple[int, ...], action_seed: int, **kwargs: Any) -> Callable:
    """Episodes of the environment at reset seeds ``seeds``, each step an action drawn uniformly from the whole
    action space (masked fills included, so their replacement is covered too)."""
    def run() -> dict:
        env = gym.make(FLEET, scorer=scorer, scenario=scenario, **kwargs)
        rng = np.random.default_rng(action_seed)
        nvec = env.action_space.nvec
        digest, rewards, episodes = hashlib.sha256(), [], []
        for seed in seeds:
            obs, info = env.reset(seed=seed)
            done = False
            while True:
                for key in sorted(obs):
                    digest.update(obs[key].tobytes())
                digest.update(json.dumps(info, sort_keys=True, default=_plain).encode())
                _add_result(digest, env.unwrapped.fleet.results[-1])
                if done:
                    break
                obs, reward, done, _, info = env.step(rng.integers(0, nvec))
                digest.update(float(reward).hex().encode())
                rewards.append(reward)
            episodes.append(info["episode"])
        env.close()
        return {"hash": digest.hexdigest(), "rewards": rewards, "episodes": episodes}
    return run


def _replay_case(policy: str, scorer: str, scenario: str, seed: int) -> Callable:
    """An online baseline over one test workload of ``scenario`` in fast mode."""
    def run() -> dict:
        from baselines.online import get_online_policy
        from baselines.online.replay import replay

        family = get_scenario(scenario)
        workload = family.workload(family.seeds("test")[seed])
        run = replay(get_online_policy(policy), DynamicFleet(workload, seed=seed, scorer=scorer,
                                                             season_s=family.season_s, counts_only=True))
        digest = hashlib.sha256()
        for result in run.results:
            digest.update(json.dumps(result.info(), sort_keys=True).encode())
            _add_result(digest, result)
        return {"hash": digest.hexdigest(), "episodes": [run.summary.to_dict()]}
    return run


def cases() -> dict[str, Callable[[], dict]]:
    """name -> a function running the case and returning its fingerprint."""
    return {
        "surrogate-diurnal": _env_case("surrogate", "diurnal-v0", (3,), action_seed=0),
        "surrogate-flash-crowd": _env_case("surrogate", "flash-crowd-v0", (4, 5), action_seed=1),
        "surrogate-drift-gbr": _env_case("surrogate", "drift-v0", (6,), action_seed=2, forecaster="gbr"),
        "analytic-families": _env_case("analytic", "diurnal-v0,flash-crowd-v0,drift-v0", (7, 8), action_seed=3),
        "twin-flash-crowd": _env_case("twin", "flash-crowd-v0", (9,), action_seed=4),
        "periodic-surrogate-flash-crowd": _replay_case("periodic", "surrogate", "flash-crowd-v0", seed=0),
    }


if __name__ == "__main__":
    FLEET_FINGERPRINTS.write_text(json.dumps({name: run() for name, run in cases().items()}, indent=1) + "\n")
    print(f"wrote {FLEET_FINGERPRINTS}")
