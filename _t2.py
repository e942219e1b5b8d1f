import time, numpy as np
from adaptergym.scenarios import get_scenario
from adaptergym.workload import rate_table
from adaptergym.forecast import make_forecaster, forecaster_names
print(forecaster_names())
for fam in ("flash-crowd-v0","diurnal-v0","drift-v0"):
    sc = get_scenario(fam)
    t=time.perf_counter(); w = sc.workload(sc.train_seeds[3]); t1=time.perf_counter()-t
    t=time.perf_counter(); tab = rate_table(w).epoch_rates(300.0); t2=time.perf_counter()-t
    print(fam, w.arrival, "workload", round(t1,4), "table", round(t2,4), tab.shape)
    for name in ("last","ewma","gbr") + (("holt-winters",) if sc.season_s else ()):
        f = make_forecaster(name, 300.0, sc.season_s)
        t=time.perf_counter()
        for k in range(tab.shape[0]):
            f.observe(np.random.default_rng(k).poisson(tab[k]*300)); p=f.predict(3)
        print("  ", name, round((time.perf_counter()-t)/tab.shape[0]*1000,3), "ms/epoch")
