"""Does spilling while replicas start pay? ``periodic`` with and without ``spill`` on a family's train seeds.

Spill (:meth:`baselines.online.packing.Packer.spill`): while a change starts replicas, a starved replica's hottest
adapters are copied onto serving replicas with a free LoRA slot. This replays each forecaster on the first train
seeds of a family (twin-scored, 5-minute epochs) both ways and prints the mean GPU-hours and starved
adapter-minutes, per seed too: the figures the README quotes.

    python examples/spill_ablation.py [FAMILY] [SEEDS] [FORECASTERS]   # default flash-crowd-v0 6 gbr,last
"""

import sys

import numpy as np

from adaptergym import load_profile
from adaptergym.dynamic import DynamicFleet
from adaptergym.scenarios import get_scenario
from baselines.online import get_online_policy
from baselines.online.leaderboard import EPOCH_S
from baselines.online.replay import replay

family = sys.argv[1] if len(sys.argv) > 1 else "flash-crowd-v0"
seeds = int(sys.argv[2]) if len(sys.argv) > 2 else 6
forecasters = sys.argv[3].split(",") if len(sys.argv) > 3 else ["gbr", "last"]
scenario, profile = get_scenario(family), load_profile(None)
for forecaster in forecasters:
    for spill in (False, True):
        totals = []
        for seed in list(scenario.seeds("train"))[:seeds]:
            fleet = DynamicFleet(scenario.workload(seed), profile, seed=seed, epoch_s=EPOCH_S,
                                 season_s=scenario.season_s)
            summary = replay(get_online_policy("periodic", forecaster=forecaster, spill=spill), fleet).summary
            totals.append((summary.gpu_hours, summary.starved_adapter_minutes))
        hours, starved = np.array(totals).T
        print(f"{family} periodic ({forecaster}) spill={spill}: {hours.mean():.2f} GPU-h, {starved.mean():.0f} "
              f"starved adapter-min (per seed {', '.join(f'{s:.0f}' for s in starved)})", flush=True)
