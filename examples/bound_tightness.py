"""How tight the lower bound's per-GPU capacity is: ``admissible_tok_s`` (the saturated peak / 0.9) against
the largest offered load at which the twin, judged like ``adaptergym.placement.verify`` (600 s, the papers'
90% rule), still serves a GPU of equal-rate adapters without starving it.

The peak is measured with a deep queue, where the scheduler can keep batching adapters already in a slot; at
the edge of starvation the queue is short and every adapter must be cycled through the slots, so a GPU
holding many adapters admits much less than peak / 0.9. The bound (``baselines.exact.lower_bound_gpus``)
uses the peak and so stays a valid but loose bound. Bisection over the offered load, best of the capacity
model's ``max_loras`` levels; ShareGPT lengths, rank 16. About 20 seconds on one core.

    python examples/bound_tightness.py [COUNT ...]      # adapter counts, default: 1 8 32 64
"""

import sys

from adaptergym import ServerConfig, load_profile
from adaptergym.metrics import summarize
from adaptergym.placement import VERIFY_DURATION_S
from adaptergym.simulation import draw_requests
from adaptergym.twin import run_replica
from adaptergym.workload import AdapterSpec, LengthSpec, WorkloadSpec
from baselines.capacity import FEWER_SLOTS_FROM, capacity_model

RANK = 16
BISECTION_STEPS = 6


def served_share(profile, lengths, tokens_per_request, count, max_loras, load_tok_s):
    """Served / offered tokens of one GPU holding ``count`` equal-rate adapters offered ``load_tok_s``."""
    rate = load_tok_s / tokens_per_request / count
    spec = WorkloadSpec(tuple(AdapterSpec(f"a{i}", RANK, rate) for i in range(count)), lengths,
                        duration_s=VERIFY_DURATION_S)
    config = ServerConfig(max_loras=max_loras, max_cpu_loras=count, max_lora_rank=RANK).resolved(profile)
    metrics = summarize(run_replica(profile, config, draw_requests(spec, 0, VERIFY_DURATION_S)))
    return metrics.total_throughput / metrics.offered_throughput


def main(counts: list[int]) -> None:
    profile = load_profile(None)
    lengths = LengthSpec(kind="sharegpt")
    model = capacity_model(profile, lengths)
    print(f"{'adapters':>8} {'peak/0.9 tok/s':>15} {'edge tok/s':>11} {'edge / (peak/0.9)':>18}")
    for count in counts:
        admissible = model.admissible_tok_s(RANK, count)
        levels = {count, count // 2, count // 4} - {0} if count >= FEWER_SLOTS_FROM else {count}
        low, high = 0.3 * admissible, admissible
        for _ in range(BISECTION_STEPS):
            mid = (low + high) / 2
            share = max(served_share(profile, lengths, model.tokens_per_request, count, level, mid)
                        for level in sorted(levels))
            low, high = (mid, high) if share >= 0.9 else (low, mid)
        print(f"{count:>8} {admissible:>15,.0f} {low:>11,.0f} {low / admissible:>18.2f}", flush=True)


if __name__ == "__main__":
    main([int(x) for x in sys.argv[1:]] or [1, 8, 32, 64])
