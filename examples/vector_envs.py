"""Four AdapterCaching-v0 environments in parallel processes (``gymnasium.make_vec``), each episode one decision:
serve the candidates that fit in about one GPU's worth of load, with as many slots as served adapters allow.

    python examples/vector_envs.py
"""

import gymnasium as gym
import numpy as np

import adaptergym  # noqa: F401  (importing adaptergym registers the environments)
from adaptergym.server_capacity import MAX_LORAS_LEVELS


def heuristic(obs: dict[str, np.ndarray], masks: np.ndarray) -> np.ndarray:
    """Per env: the largest k whose cumulative load stays under 0.9 GPUs, and the most slots that are valid."""
    table = obs["adapters"].reshape(len(masks), -1, 4)  # (envs, candidates, features)
    present, cumulative = table[:, :, 0] > 0, table[:, :, 3]
    count = np.maximum((present & (cumulative <= 0.9)).sum(axis=1), 1)
    valid_levels = masks[:, table.shape[1]:].sum(axis=1)
    level = np.minimum(np.searchsorted(MAX_LORAS_LEVELS, count), valid_levels - 1)
    return np.stack([count - 1, level], axis=1)


if __name__ == "__main__":
    envs = gym.make_vec("adaptergym/AdapterCaching-v0", num_envs=4, vectorization_mode="async", scorer="twin")
    obs, info = envs.reset(seed=[0, 1, 2, 3])
    scores = []
    autoreset = np.zeros(4, bool)
    for _ in range(6):
        masks = np.stack(envs.call("action_masks"))
        obs, reward, terminated, truncated, info = envs.step(heuristic(obs, masks))
        # Gymnasium's next-step autoreset: a sub-env that just ended resets on this call and its reward is 0.
        scores += reward[~autoreset].tolist()
        autoreset = terminated | truncated
    print(f"{len(scores)} episodes, mean reward {np.mean(scores):.3f}, starved {int(np.sum(np.array(scores) < 0))}")
    envs.close()
