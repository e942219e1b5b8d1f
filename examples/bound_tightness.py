"""How far the capacity model's two per-GPU capacities lie apart: ``admissible_tok_s`` (the saturated peak / 0.9,
what the packing policies start from) and ``edge_tok_s`` (the largest offered load the twin serves without
starving a GPU of equal-rate adapters under placement verification: what the lower bound uses).

The peak is measured with a deep queue, where the scheduler keeps batching adapters already in a slot; at the
edge of starvation the queue is short and every adapter must be cycled through the slots, so a GPU holding
many adapters admits much less than peak / 0.9. The default profile's edges ship (``baselines.edge_table``);
peaks take a few seconds to measure.

    python examples/bound_tightness.py [RANK]      # default: 16
"""

import sys

from adaptergym import load_profile
from adaptergym.workload import LengthSpec
from baselines.capacity import COUNTS, capacity_model

rank = int(sys.argv[1]) if len(sys.argv) > 1 else 16
model = capacity_model(load_profile(None), LengthSpec())
print(f"rank {rank}, ShareGPT lengths")
print(f"{'adapters':>8} {'peak/0.9 tok/s':>15} {'edge tok/s':>11} {'edge / (peak/0.9)':>18}")
for count in COUNTS:
    admissible, edge = model.admissible_tok_s(rank, count), model.edge_tok_s(rank, count)
    print(f"{count:>8} {admissible:>15,.0f} {edge:>11,.0f} {edge / admissible:>18.2f}", flush=True)
