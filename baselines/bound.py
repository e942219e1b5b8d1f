"""The lower bounds every placement is measured against.

**``lower_bound_gpus``**: ``ceil`` of the workload's summed adapter costs under the cost model
(:mod:`baselines.cost_model`): adapter ``i`` (load ``l_i`` tokens/s, rank class ``k_i``) costs ``c_{k_i}(l_i)``,
split over the fewest GPUs that can carry it. It is a bound on the GPU count of every placement that passes
verification (:func:`adaptergym.placement.verify`: each GPU simulated alone on its even share of the traffic for
600 simulated s, at least ``MIN_VERIFIED_REQUESTS`` requests, starved if it serves 10% or more short of what it
is offered) on the profile and at the workload's length distribution, with Poisson arrivals or burstier ones,
any ``max_loras`` level, and a CPU cache holding all of a GPU's adapters; *provided* the cost model holds: that
every GPU verification passes holds adapters costing at most 1 in all. Then a placement of ``G`` GPUs has
summed cost at most ``G``; each adapter's copies cost at least its own cost (the GPU's rank class is at least
the adapter's, costs grow with the rank, and splitting an adapter costs more: concavity); so ``G`` is at least
the workload's summed cost. The proviso is measured, not proven: the model is fitted so that it holds on its
calibration mixes for 4 request draws each, and ``python -m baselines.bound_check`` tests it on every GPU of
the best placements the policies verify on the scenarios' test seeds and the README's workloads. Without a
measured table for the profile and lengths, the bound falls back to the offered load over a one-adapter GPU's
``peak / 0.9`` (a bound by the 90% rule alone, far looser), with a warning naming the command that measures one.

**``single_adapter_bound_gpus``**: the issue's independent yardstick: offered tokens/s over the twin's saturated
throughput of one GPU serving a single adapter of the smallest rank class (rank 8). A GPU passes the 90% rule
offered up to ``peak / 0.9``, so this is not strictly a bound on verified placements; it is the count they would
need if every GPU ran as fast as a one-adapter GPU at saturation.
"""

from __future__ import annotations

import logging
import math

from adaptergym.profile import TwinProfile
from adaptergym.twin.config import VLLM_MAX_LORA_RANKS
from adaptergym.workload import WorkloadSpec
from baselines.capacity import servable_model
from baselines.cost_model import cost_model

log = logging.getLogger(__name__)


def lower_bound_gpus(workload: WorkloadSpec, profile: TwinProfile) -> int:
    """The fewest GPUs any placement of ``workload`` passing verification can use (module doc: what it is a
    bound under)."""
    capacity = servable_model(profile, workload)
    loads = capacity.loads(workload)
    costs = cost_model(profile, workload.lengths)
    if costs is None:
        log.warning("lower bound: no capacity table for %s at %s lengths; using offered / (one-adapter peak / "
                    "0.9). Measure one with `python -m baselines.edge_table --profile %s`", profile.name,
                    workload.lengths.kind, profile.name)
        return max(1, math.ceil(loads.sum() / capacity.admissible_tok_s(VLLM_MAX_LORA_RANKS[0]) - 1e-9))
    return max(1, math.ceil(costs.adapter_costs(workload, loads).sum() - 1e-9))


def single_adapter_bound_gpus(workload: WorkloadSpec, profile: TwinProfile) -> int:
    """Offered tokens/s over the saturated throughput of one GPU serving one rank-8 adapter, rounded up (module
    doc: the issue's independent yardstick)."""
    capacity = servable_model(profile, workload)
    return max(1, math.ceil(capacity.loads(workload).sum() / capacity.peak_tok_s(VLLM_MAX_LORA_RANKS[0]) - 1e-9))
