import time, cProfile, pstats, numpy as np
from adaptergym.dynamic import DynamicFleet
from adaptergym.scenarios import get_scenario
from baselines.online.packing import Packer
sc = get_scenario("diurnal-v0"); w = sc.workload(sc.train_seeds[0])
for scorer in ("surrogate","analytic"):
    f = DynamicFleet(w, seed=0, epoch_s=300.0, scorer=scorer)
    plan = Packer(f, 0.25).fresh_plan(f.true_rates())
    f.step(plan)
    pr = cProfile.Profile(); pr.enable()
    t=time.perf_counter(); n=0
    while not f.done:
        f.step(plan); n+=1
    pr.disable()
    print(scorer, "steps/s", n/(time.perf_counter()-t))
    pstats.Stats(pr).sort_stats("cumulative").print_stats(18)
