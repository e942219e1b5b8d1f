"""RL agents (stable-baselines3 and sb3-contrib) for adaptergym's environments: train, evaluate, use as policies.

    python -m agents.train --env adaptergym/AdapterCaching-v0 --algo ppo --steps 60000 --out runs/caching
    python -m agents.evaluate --checkpoint runs/caching --scorer twin

| module | holds |
|--------|-------|
| :mod:`agents.config` | ``TrainConfig`` and the defaults per (environment, algorithm) |
| :mod:`agents.envs` | training and evaluation environments (vectorised; fixed held-out seeds) |
| :mod:`agents.train` | ``train(config, out)`` and the ``agents.train`` command |
| :mod:`agents.run` | a run's folder, and ``load_agent(checkpoint)`` |
| :mod:`agents.evaluate` | rows per (policy, seed) with t-intervals, ``agents.evaluate``, leaderboard rows |
| :mod:`agents.reference` | random, vLLM-default, fixed-knobs and fixed-fill policies to compare with |
| :mod:`agents.online` | an AdapterFleet-v0 agent as an online policy (the dynamic leaderboard, ``replay``) |
| :mod:`agents.curve` | the learning-curve figure |
| :mod:`agents.stats` | confidence intervals over seeds |
| :mod:`agents.cli` | one-line errors for both commands |

``agents/checkpoints/`` ships trained runs (model, config and learning curve; see the README's Agents section
for the commands that reproduce them).
"""
