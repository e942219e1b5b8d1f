"""Train PPO (sb3-contrib's MaskablePPO, which follows ``action_masks()``) on AdapterPlacement-v0 in five lines.

    python examples/ppo_five_lines.py
"""

import gymnasium as gym
from sb3_contrib import MaskablePPO

import adaptergym  # noqa: F401  (importing adaptergym registers the environments)

env = gym.make("adaptergym/AdapterPlacement-v0", scenario="uniform-small", num_gpus=4)
model = MaskablePPO("MultiInputPolicy", env, n_steps=512, batch_size=128, seed=0, verbose=1).learn(total_timesteps=4096)
