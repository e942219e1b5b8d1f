"""The whole loop with stable-baselines3 on AdapterCaching-v0: make, train, evaluate on held-out seeds, save, reload.

    python examples/train_ppo.py          # about a minute on one CPU core; writes ppo_caching.zip

Each episode is one decision for one GPU: how many of a workload's adapters to serve, and ``max_loras``. The
fast analytic scorer stands in for the Digital Twin while training; ``agents.train`` adds vectorised envs,
checkpoints and evaluation callbacks around the same calls.
"""

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO

import adaptergym  # noqa: F401  (importing adaptergym registers the environments)

ENV = dict(scenario="zipf-large", max_adapters=192, scorer="analytic")


def evaluate(model: PPO, seeds: range) -> float:
    """Mean reward over held-out workloads: one episode per test-split seed, deterministic actions."""
    env = gym.make("adaptergym/AdapterCaching-v0", split="test", **ENV)
    rewards = []
    for seed in seeds:
        obs, _ = env.reset(seed=seed, options={"scenario_seed": seed})
        action, _ = model.predict(obs, deterministic=True)
        rewards.append(env.step(action)[1])
    return float(np.mean(rewards))


torch.set_num_threads(1)  # a network this small trains fastest on one thread
train_env = gym.make("adaptergym/AdapterCaching-v0", split="train", **ENV)
model = PPO("MultiInputPolicy", train_env, n_steps=64, batch_size=64, learning_rate=1e-3, ent_coef=0.01, seed=0,
            policy_kwargs={"net_arch": {"pi": [24], "vf": [8]}}, device="cpu")
test_seeds = range(1_000_000, 1_000_050)
print(f"untrained: mean reward {evaluate(model, test_seeds):+.3f} on {len(test_seeds)} test seeds")
model.learn(total_timesteps=20_000)
print(f"trained:   mean reward {evaluate(model, test_seeds):+.3f}")
model.save("ppo_caching.zip")
reloaded = PPO.load("ppo_caching.zip", device="cpu")
print(f"reloaded:  mean reward {evaluate(reloaded, test_seeds):+.3f} (ppo_caching.zip)")
