"""A random agent on AdapterPlacement-v0: it picks uniformly among the valid actions that ``action_masks()``
allows, and the Digital Twin scores each finished placement.

    python examples/random_agent.py
"""

import gymnasium as gym
import numpy as np

import adaptergym  # noqa: F401  (importing adaptergym registers the environments)

env = gym.make("adaptergym/AdapterPlacement-v0", scenario="zipf-large", num_gpus=8, scorer="twin", render_mode="ansi")
env.action_space.seed(0)
for episode in range(3):
    obs, info = env.reset(seed=episode)
    workload_seed, total, done = info["workload_seed"], 0.0, False
    while not done:
        gpus, levels = np.split(info["action_mask"].astype(np.int8), [env.action_space.nvec[0]])
        action = env.action_space.sample(mask=(gpus, levels))
        obs, reward, terminated, truncated, info = env.step(action)
        total += reward
        done = terminated or truncated
    print(env.render())
    print(f"episode {episode}: workload seed {workload_seed}, return {total:.3f}, "
          f"{info['gpus_used']} GPUs used, {info['starved_gpus']} starved, scored by {info['scorer']}\n")
env.close()
