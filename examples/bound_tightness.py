"""How tight the lower bound's cost model is: for each calibration mix of one rank class, its starvation edge (the
least load placement verification starves it at, over every max_loras level, the largest of 12 request draws), what
the cost model charges it there, by its main curve and by the family of curves (at most 1 by construction; 1 is
exact, 0.9 means the bound credits that GPU with 11% more than it serves), and the saturated peak / 0.9 of a GPU of
as many equal-rate adapters (what the packing policies start from, and what a bound on the peak would credit);
last, the mix's edge under Gamma arrivals (the largest at CV 2, 3 and 4) over its Poisson edge.

    python examples/bound_tightness.py [RANK]      # default: 16; reads the shipped table, instant
"""

import sys

from adaptergym import load_profile
from adaptergym.server_capacity import rank_cover
from adaptergym.workload import LengthSpec
from baselines.capacity import capacity_model
from baselines.cost_model import cost_model
from baselines.edge_table import calibration_mixes, shipped_table

rank = int(sys.argv[1]) if len(sys.argv) > 1 else 16
profile, lengths = load_profile(None), LengthSpec()
capacity, costs, mixes = capacity_model(profile, lengths), cost_model(profile, lengths), calibration_mixes()
table = shipped_table(profile, lengths)
edges, gamma = table.mixes[rank_cover(rank)], table.gamma_mixes[rank_cover(rank)]
print(f"rank class {rank_cover(rank)}, ShareGPT lengths")
print(f"{'mix':>20} {'edge tok/s':>11} {'max_loras':>9} {'main curve':>10} {'family':>6} {'peak/0.9 tok/s':>15} "
      f"{'Gamma edge':>10}")
for name, edge in edges.items():
    per_curve = costs.curve(rank_cover(rank)).each(mixes[name] * edge.load_tok_s).sum(axis=1)
    peak = capacity.admissible_tok_s(rank, len(mixes[name]))
    print(f"{name:>20} {edge.load_tok_s:>11,.0f} {edge.max_loras:>9} {per_curve[0]:>10.2f} {per_curve.max():>6.2f} "
          f"{peak:>15,.0f} {gamma[name].load_tok_s / edge.load_tok_s:>9.2f}x")
