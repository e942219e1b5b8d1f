"""How much of static-peak's GPU-hours could the re-planners save with a perfect forecast and free changes?

The ideal tracker (``baselines.online.ideal``) packs each epoch's true rates with the greedy packing alone. The
re-planners pack with :meth:`baselines.online.policies.Replanner.pack`, which also gives a packing more room
while the surrogate's judge calls it short, and they must cover the epochs a new replica spends starting. This
prints, per test seed of a family: static-peak's GPUs, the re-planners' packing of the busiest epoch's true rates,
and the GPU-hours of packing each epoch's true rates that way, alone and with the look-ahead the ideal tracker
takes (the epochs a replica holding the packing of every adapter's peak spends starting), against static-peak's.

    python examples/replanner_reach.py [FAMILY] [SEEDS]   # default diurnal-v0 3; about 10 s a seed
"""

import sys

import numpy as np

from adaptergym import load_profile
from adaptergym.dynamic import DynamicFleet
from adaptergym.scenarios import get_scenario
from baselines.online import get_online_policy
from baselines.online.leaderboard import EPOCH_S
from baselines.online.packing import plan_of

family = sys.argv[1] if len(sys.argv) > 1 else "diurnal-v0"
seeds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
scenario, profile = get_scenario(family), load_profile(None)
totals = np.zeros(2)
for seed in list(scenario.test_seeds)[:seeds]:
    fleet = DynamicFleet(scenario.workload(seed), profile, seed=seed, epoch_s=EPOCH_S, scorer="surrogate",
                         counts_only=True)
    hours = np.diff(fleet.traffic.edges) / 3600.0
    table = fleet.rate_table()
    static = get_online_policy("static-peak")
    static.reset(fleet)
    oracle = get_online_policy("oracle")
    oracle.reset(fleet)
    lead = oracle.lead_epochs(fleet, plan_of(oracle.pack(fleet, table.max(axis=0), oracle.headroom)))
    instant = np.array([len(oracle.pack(fleet, rates, oracle.headroom)) for rates in table])
    ahead = np.array([len(oracle.pack(fleet, table[e: e + lead].max(axis=0), oracle.headroom))
                      for e in range(len(table))])
    peak_gpus, busiest = len(static.plan(fleet)), int(np.argmax(table.sum(axis=1)))
    peak_hours = peak_gpus * hours.sum()
    totals += peak_hours, np.maximum(instant, ahead) @ hours
    print(f"{family} seed {seed}: static-peak {peak_gpus} GPUs ({peak_hours:.2f} GPU-h); the busiest epoch's "
          f"rates packed: {instant[busiest]} GPUs; every epoch packed: {instant @ hours:.2f} GPU-h "
          f"({1 - instant @ hours / peak_hours:.0%} fewer), with a {lead}-epoch look-ahead "
          f"{np.maximum(instant, ahead) @ hours:.2f} ({1 - np.maximum(instant, ahead) @ hours / peak_hours:.0%} fewer)")
print(f"over the seeds: {1 - totals[1] / totals[0]:.0%} fewer GPU-hours than static-peak with the look-ahead")
