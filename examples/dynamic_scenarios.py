"""What the time-varying scenarios look like: per test seed, the total offered rate over 5-minute epochs (mean,
trough, peak), the hottest adapter's peak, and the GPUs a fleet needs at the trough and the peak if one GPU
serves about 20 req/s of ShareGPT traffic (the default profile's comfortable load). Rates come from the
schedule (``rate_table``), not from sampled requests, so this takes a second or two.

    python examples/dynamic_scenarios.py [SEEDS]      # default: the first 3 test seeds
"""

import math
import sys

from adaptergym.scenarios import get_scenario
from adaptergym.workload import rate_table

GPU_REQ_S = 20.0
count = int(sys.argv[1]) if len(sys.argv) > 1 else 3
print("scenario        seed     adapters  hours  mean  trough  peak  hottest  GPUs trough-peak")
for name in ("diurnal-v0", "flash-crowd-v0", "drift-v0"):
    scenario = get_scenario(name)
    for seed in scenario.test_seeds[:count]:
        workload = scenario.workload(seed)
        rates = rate_table(workload).epoch_rates(300.0)
        total = rates.sum(axis=1)
        print(f"{name:15s} {seed:8d} {len(workload.adapters):8d} {workload.duration_s / 3600:6.0f} "
              f"{total.mean():5.1f} {total.min():7.1f} {total.max():5.1f} {rates.max():8.1f} "
              f"{math.ceil(total.min() / GPU_REQ_S):6d}-{math.ceil(total.max() / GPU_REQ_S)}")
