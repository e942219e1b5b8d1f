"""The shipped AdapterPlacement-v1 agent against the published greedy on zipf-large-v0's first 20 test seeds, every
placement judged two ways: placement verification (each GPU alone for 600 simulated s, the leaderboard's judge)
and a 120-s fleet run of the twin (the environments' scorer, the judge the agent trained with).

    python examples/placement_agent_vs_greedy.py [RUN] [SEEDS]      # about 2 minutes on an idle 2-core box
"""

import sys

import numpy as np

from adaptergym import load_profile
from adaptergym.placement import Placement, verify
from adaptergym.scenarios import get_scenario
from adaptergym.scoring import GpuPlan, TwinScorer
from adaptergym.server_capacity import rank_cover
from adaptergym.workload import WorkloadSpec
from agents.envs import make_env
from agents.evaluate import play
from agents.run import load_agent
from baselines import get_policy

run = sys.argv[1] if len(sys.argv) > 1 else "agents/checkpoints/placement-packer-ppo"
count = int(sys.argv[2]) if len(sys.argv) > 2 else 20
scenario, profile = get_scenario("zipf-large"), load_profile(None)
agent = load_agent(run)
env = make_env(agent.config.env, **{**agent.config.env_kwargs, "scorer": "twin"})
fleet_run = TwinScorer(profile, env.unwrapped.scorer.window_s)


def fleet_starved(workload: WorkloadSpec, placement: Placement, seed: int) -> int:
    """Starved GPUs of ``placement`` in the environments' 120-s fleet run (requests drawn with ``seed``)."""
    index = {a.id: i for i, a in enumerate(workload.adapters)}
    plans = [GpuPlan(tuple(index[a] for a in g.adapters), g.max_loras,
                     rank_cover(max(workload.adapters[index[a]].rank for a in g.adapters)))
             for g in placement.assignments]
    return int(fleet_run.score(workload, plans, seed).starved.sum())


rows = []
print("seed  agent: GPUs starved(fleet) starved(verified)  greedy: GPUs starved(verified) starved(fleet)")
for seed in scenario.test_seeds[:count]:
    workload = scenario.workload(seed)
    played = play(agent, env, seed)
    mine = env.unwrapped.placement()
    greedy = get_policy("greedy").place(workload, profile, seed=seed)
    row = (played.info["gpus_used"], played.info["starved_gpus"],
           verify(workload, mine, profile, seed=seed).starved_gpus, greedy.gpus,
           verify(workload, greedy, profile, seed=seed).starved_gpus, fleet_starved(workload, greedy, seed))
    rows.append(row)
    print(seed, *row, flush=True)
table = np.array(rows)
agent_gpus, greedy_gpus = table[:, 0].mean(), table[:, 3].mean()
print(f"mean GPUs: agent {agent_gpus:.2f}, greedy {greedy_gpus:.2f} (ratio {agent_gpus / greedy_gpus:.3f})")
print(f"placements with a starved GPU: agent {np.count_nonzero(table[:, 1])} (fleet run), "
      f"{np.count_nonzero(table[:, 2])} (verified); greedy {np.count_nonzero(table[:, 4])} (verified), "
      f"{np.count_nonzero(table[:, 5])} (fleet run)")
