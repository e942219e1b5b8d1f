"""The lower bounds every placement is measured against.

**``lower_bound_gpus``**. The cost model (:mod:`baselines.cost_model`) gives adapter ``i`` (load ``l_i`` tokens/s)
the costs ``c_kj(l_i)`` on a GPU of rank class ``k`` (its ``--max-lora-rank``), one per curve ``j`` of the class's
family, each concave, an adapter hotter than a GPU carries split evenly over the fewest GPUs that can. The bound
is the optimum of a small MILP: integer ``n_k`` GPUs of each class ``k``, a fraction ``x_ik >= 0`` of each
adapter's load on them (``sum_k x_ik = 1``, ``k`` at least the adapter's class), and, for every curve ``j``,
``sum_i x_ik c_kj(l_i) <= L n_k``, ``L`` the margin of the workload's arrivals (:data:`GPU_COST_LIMITS`: 1.05 for
Poisson, 1.07 for Gamma); it minimises ``sum_k n_k``.

*What it is a bound under.* It never exceeds the GPU count of a placement that passes verification
(:func:`adaptergym.placement.verify`: each GPU simulated alone on its even share of the traffic for 600 simulated
s, at least ``MIN_VERIFIED_REQUESTS`` requests, starved if it serves 10% or more short of what it is offered), on
the profile the capacity table was measured with (its fingerprint) and at the table's length distribution, for
constant rates (no rate schedule) arriving by Poisson or Gamma processes of a CV the table covers (1-4), with
``max_loras`` among ``MAX_LORAS_LEVELS`` and a CPU cache holding all of a GPU's adapters, *provided* every GPU that
passes verification holds adapters costing at most ``L`` at its class under every curve of the family. The
curves are fitted on the calibration mixes' edges under the workload's arrivals: Poisson's, or for Gamma arrivals
each mix's largest edge of Poisson's and those measured at CV 2, 3 and 4
(:meth:`baselines.edge_table.CapacityTable.edges_for`; bursts of one adapter's requests share its slot and batch
presence, so a GPU of many cold adapters serves up to 1.5-1.9x more, and a Poisson-fitted cost put a verified
one-GPU ``bursty`` placement at 1.081). Then a placement's GPUs of class ``k``, with ``x_ik`` its share of adapter
``i``'s load on them, satisfy the MILP's constraints, curve by curve (summed over those GPUs; concavity: a share
``x`` of a load costs at least ``x c(l)``; even splits: an adapter on ``m`` GPUs costs ``m c(l / m)``, more than
on fewer), so their number is at least the optimum. The proviso is measured, not proven: the cost model holds on
its calibration mixes for the 12 request draws each edge is the largest of (per arrival process), and ``L``
covers the draws verification makes on other seeds (:data:`GPU_COST_LIMITS`: the most a fresh draw's edge was seen
above the table's, for the arrival process); a Gamma CV between the measured ones is taken to lie within them.
``python -m baselines.bound_check`` tests it on every GPU of the placements the policies
verify on the scenarios' test seeds (``bursty``'s Gamma arrivals among them) and the README's workloads.
Without a measured table for the profile and lengths, or for arrivals it does not cover (a Gamma CV above 4 or
below 1, a burst at t=0), the bound falls back to the offered load over a one-adapter GPU's ``peak / 0.9`` (a
bound by the 90% rule alone, whatever the arrivals, far looser), with a warning naming the command that
measures one.

**``single_adapter_bound_gpus``**: the issue's independent yardstick: offered tokens/s over the twin's saturated
throughput of one GPU serving a single adapter of the smallest rank class (rank 8). A GPU passes the 90% rule
offered up to ``peak / 0.9``, so this is not strictly a bound on verified placements; it is the count they would
need if every GPU ran as fast as a one-adapter GPU at saturation.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from adaptergym.errors import ConfigError
from adaptergym.profile import TwinProfile
from adaptergym.server_capacity import rank_cover
from adaptergym.twin.config import VLLM_MAX_LORA_RANKS
from adaptergym.workload import ArrivalSpec, WorkloadSpec
from baselines.capacity import servable_model
from baselines.common import quiet_stdout
from baselines.cost_model import CostModel, cost_model

log = logging.getLogger(__name__)

#: HiGHS time limit of the bound's MILP, s (past it the bound is HiGHS's proven dual bound, still a bound).
BOUND_TIME_LIMIT_S = 5.0
#: The most a GPU that passes verification is taken to cost, by arrival kind. Each calibration edge is the largest of
#: 12 request draws (``baselines.capacity.EDGE_SEEDS``); verification draws others, and the largest edge of 24 fresh
#: draws lies up to 1.042x above the table's under Poisson arrivals (equal-256, rank class 16) and up to 1.070x under
#: Gamma arrivals (hot-4x0.5+cold-256, rank class 16, CV 4): `python examples/edge_spread.py`; a concave cost grows
#: at most in proportion to the load. (One margin of 1.10 served both while the edges were the largest of 4 draws,
#: the further ones only probed upward at the first one's level: against those edges a fresh Poisson draw lay up to
#: 1.079x above; before that it was 1.04, until a one-GPU probe verified below that bound on seed 1,000,032 of
#: zipf-large with the 1,800-s Llama profile.)
GPU_COST_LIMITS = {"poisson": 1.05, "gamma": 1.07}


def gpu_cost_limit(arrival: ArrivalSpec) -> float:
    """The margin ``L`` of a workload arriving by ``arrival`` (:data:`GPU_COST_LIMITS`; the bound falls back before
    asking for arrivals the table does not cover)."""
    return GPU_COST_LIMITS[arrival.kind]


def lower_bound_gpus(workload: WorkloadSpec, profile: TwinProfile) -> int:
    """The fewest GPUs any placement of ``workload`` passing verification can use (module doc: what it is a
    bound under)."""
    capacity = servable_model(profile, workload)
    loads = capacity.loads(workload)
    costs = cost_model(profile, workload.lengths, workload.arrival)
    if costs is None:
        log.warning("lower bound: no capacity table for %s at %s lengths and %s arrivals (CV %g); using offered / "
                    "(one-adapter peak / 0.9). Measure one with `python -m baselines.edge_table --profile %s`",
                    profile.name, workload.lengths.kind, workload.arrival.kind, workload.arrival.cv, profile.name)
        return max(1, math.ceil(loads.sum() / capacity.admissible_tok_s(VLLM_MAX_LORA_RANKS[0]) - 1e-9))
    return fewest_gpus(costs, [rank_cover(a.rank) for a in workload.adapters], loads, gpu_cost_limit(workload.arrival))


def fewest_gpus(costs: CostModel, covers: list[int], loads_tok_s: np.ndarray, limit: float) -> int:
    """The fewest GPUs, counted by rank class, whose summed cost holds every adapter, each GPU costing at most
    ``limit`` (module doc: the MILP); ``covers[i]`` is adapter ``i``'s rank class."""
    kinds = sorted(set(costs.curves) | set(covers))
    own = np.array(covers)
    adapter, per_curve = [], []  # the (adapter, class) pairs allowed, and each curve's cost of them
    for cover in kinds:
        fits = np.nonzero(own <= cover)[0]
        adapter.append(fits)
        per_curve.append(costs.curve(cover).split_each(loads_tok_s[fits]))
    pairs, n = sum(map(len, adapter)), len(kinds)
    # Rows: one per adapter (its shares sum to 1), then one per (class, curve): the class's GPUs cost enough.
    rows, columns, values, row = [np.concatenate(adapter)], [np.arange(pairs)], [np.ones(pairs)], len(own)
    first = 0
    for k, curve_costs in enumerate(per_curve):
        span = np.arange(first, first + curve_costs.shape[1])
        for curve_cost in curve_costs:
            rows += [np.full(len(span), row), [row]]
            columns += [span, [pairs + k]]
            values += [curve_cost, [-limit]]
            row += 1
        first += len(span)
    a = coo_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(columns))),
                   shape=(row, pairs + n)).tocsr()
    integer = np.r_[np.zeros(pairs), np.ones(n)]
    with quiet_stdout():
        result = milp(integer, integrality=integer, bounds=Bounds(0, np.inf),
                      constraints=LinearConstraint(a, np.r_[np.ones(len(own)), np.full(row - len(own), -np.inf)],
                                                   np.r_[np.ones(len(own)), np.zeros(row - len(own))]),
                      options={"time_limit": BOUND_TIME_LIMIT_S})
    bound = getattr(result, "mip_dual_bound", None)
    if result.status not in (0, 1) or bound is None or not np.isfinite(bound):
        raise ConfigError(f"lower bound: the MILP failed ({result.message})")
    return max(1, math.ceil(bound - 1e-6))


def single_adapter_bound_gpus(workload: WorkloadSpec, profile: TwinProfile) -> int:
    """Offered tokens/s over the saturated throughput of one GPU serving one rank-8 adapter, rounded up (module
    doc: the issue's independent yardstick)."""
    capacity = servable_model(profile, workload)
    return max(1, math.ceil(capacity.loads(workload).sum() / capacity.peak_tok_s(VLLM_MAX_LORA_RANKS[0]) - 1e-9))
