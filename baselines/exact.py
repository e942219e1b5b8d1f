"""The exact policy: a MILP over the capacity model, proven optimal under it, at the largest fill the twin verifies.

**Capacity model** (:mod:`baselines.capacity`). A GPU whose ``max_lora_rank`` covers rank ``r`` and that holds
``c`` adapters serves at most ``peak(r, c)`` tokens/s (the twin's saturated throughput with ``c`` equal-rate
adapters at its best slot level, read at the grid count at or below ``c``), and is starvation-free only if it
is offered at most ``A(r, c) = peak(r, c) / 0.9`` tokens/s (the papers' rule: served >= 90% of offered). GPU
*types* ``t = (k, b)``: rank class ``k`` (the vLLM ``max_lora_rank`` values covering the workload's adapters)
and count bucket ``b`` (adapters from grid count ``g_b`` up to the next grid count, exclusive; capacity
``A(k, g_b)``). Offered loads are expected ones: rate x mean prompt + output tokens of the workload's length
distribution.

**Exact** (:class:`ExactPolicy`). Bin packing of adapter copies (an adapter hotter than ``fill x A(r, 1)`` gets
``ceil`` as many copies, each its even share, on distinct GPUs): each GPU takes one type, holds at most as many
adapters as its bucket and the slots that start at its rank allow (every adapter gets a slot: ``max_loras`` =
its adapter count), and is offered at most ``fill x A_t``; solved to optimality with ``scipy.optimize.milp``
(HiGHS). ``fill`` starts at 1 (``A_t`` is at least the edge, so no placement the twin verifies packs tighter)
and steps down by 0.05 until the twin verifies the placement. Binary variables grow as adapters x
GPUs, so it refuses workloads of more than ``max_adapters`` adapters.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import lil_matrix

from adaptergym.errors import ConfigError
from adaptergym.placement import Placement
from adaptergym.profile import TwinProfile
from adaptergym.server_capacity import rank_cover
from adaptergym.workload import WorkloadSpec
from baselines import POLICIES
from baselines.capacity import COUNTS, CapacityModel, servable_model
from baselines.common import (
    Copy,
    Verifier,
    check_objective,
    copies_needed,
    first_fit_decreasing,
    make_copies,
    quiet_stdout,
    slots_for,
    to_placement,
)

log = logging.getLogger(__name__)

#: Fill levels the exact policy tries, from the capacity model's admissible load down.
FILLS = tuple(np.round(np.arange(1.0, 0.24, -0.05), 2))


def gpu_types(covers: list[int], adapters: int,
              capacity: Callable[[int, int], float]) -> list[tuple[int, int, int, float]]:
    """GPU types for a workload of ``adapters`` adapters: ``(class index, cover, most adapters, capacity
    tokens/s)`` per rank class and count bucket (module doc); ``capacity(cover, grid count)``."""
    grid = [g for g in COUNTS if g <= max(adapters, 1)]
    tops = [nxt - 1 for nxt in grid[1:]] + [max(adapters, 1)]
    return [(k, cover, top, capacity(cover, low))
            for k, cover in enumerate(covers) for low, top in zip(grid, tops, strict=True)]


def _constraints(rows: list[tuple[dict[int, float], float, float]], n_vars: int) -> LinearConstraint:
    """One sparse constraint block from ``(coefficients, low, high)`` rows."""
    a = lil_matrix((len(rows), n_vars))
    for r, (coefs, _, _) in enumerate(rows):
        for v, coef in coefs.items():
            a[r, v] = coef
    return LinearConstraint(a.tocsr(), np.array([r[1] for r in rows]), np.array([r[2] for r in rows]))


@dataclass
class ExactPolicy:
    """Optimal bin packing under the capacity model (module doc), at the largest fill the twin verifies.

    Args:
        objective: ``"gpus"`` only (the model knows no latency).
        max_adapters: refuse larger workloads (variables grow as adapters x GPUs).
        time_limit_s: HiGHS time limit per solve; a solve that hits it is used if feasible and recorded as
            not proven optimal in ``proven_optimal``.
        verify_s: simulated seconds of each verification.
    """

    objective: str = "gpus"
    max_adapters: int = 40
    time_limit_s: float = 30.0
    verify_s: float = 600.0
    name: str = "exact"
    proven_optimal: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        check_objective(self.name, self.objective, ("gpus",))

    def place(self, workload: WorkloadSpec, profile: TwinProfile, *, seed: int = 0) -> Placement:
        if len(workload.adapters) > self.max_adapters:
            raise ConfigError(f"exact: {len(workload.adapters)} adapters > max_adapters {self.max_adapters}; the "
                              "MILP grows as adapters x GPUs (use lower_bound_gpus for a bound, or another policy)")
        model = servable_model(profile, workload)
        verifier = Verifier(workload, profile, seed, self.verify_s)
        for fill in FILLS:
            copies = make_copies(workload, model, copies_needed(workload, model, fill))
            groups, optimal = solve_packing(copies, model, fill, self.time_limit_s)
            placement = to_placement(groups, [slots_for(model, g) for g in groups])
            if verifier.ok(placement):
                self.proven_optimal = optimal
                return placement
            log.info("exact: fill %.2f gives %d GPUs with starvation; trying a lower fill", fill, placement.gpus)
        raise ConfigError(f"exact: no fill down to {FILLS[-1]} verifies without starvation")


def solve_packing(copies: list[Copy], model: CapacityModel, fill: float,
                  time_limit_s: float) -> tuple[list[list[Copy]], bool]:
    """The fewest GPUs holding ``copies`` under the capacity model at ``fill`` (module doc); returns the
    groups and whether HiGHS proved them optimal."""
    start = first_fit_decreasing(copies, lambda cover, count: fill * model.admissible_tok_s(cover, count), model)
    n, g_max = len(copies), len(start)
    covers = sorted({rank_cover(c.rank) for c in copies})
    types = gpu_types(covers, len({c.index for c in copies}), model.admissible_tok_s)
    m = len(types)
    cls_of = [covers.index(rank_cover(c.rank)) for c in copies]
    nx = n * g_max

    def x(i: int, g: int) -> int:
        return i * g_max + g

    def y(g: int, t: int) -> int:
        return nx + g * m + t

    rows: list[tuple[dict[int, float], float, float]] = []
    for i in range(n):  # every copy on exactly one GPU
        rows.append(({x(i, g): 1.0 for g in range(g_max)}, 1.0, 1.0))
    by_adapter: dict[int, list[int]] = defaultdict(list)
    for i, c in enumerate(copies):
        by_adapter[c.index].append(i)
    for g in range(g_max):
        for members in by_adapter.values():  # copies of one adapter on distinct GPUs
            if len(members) > 1:
                rows.append(({x(i, g): 1.0 for i in members}, -np.inf, 1.0))
        load = {x(i, g): c.load_tok_s for i, c in enumerate(copies)}
        load.update({y(g, t): -fill * admissible for t, (*_, admissible) in enumerate(types)})
        rows.append((load, -np.inf, 0.0))
        slots = {x(i, g): 1.0 for i in range(n)}
        slots.update({y(g, t): -float(min(top, model.max_slots[cover])) for t, (_, cover, top, _) in enumerate(types)})
        rows.append((slots, -np.inf, 0.0))
        for i in range(n):  # a copy needs a GPU whose class covers its rank
            cover_row = {x(i, g): 1.0}
            cover_row.update({y(g, t): -1.0 for t, (k, *_) in enumerate(types) if k >= cls_of[i]})
            rows.append((cover_row, -np.inf, 0.0))
        rows.append(({y(g, t): 1.0 for t in range(m)}, -np.inf, 1.0))  # one type per GPU
        if g + 1 < g_max:  # symmetry: GPUs are opened in order
            rows.append(({**{y(g, t): 1.0 for t in range(m)}, **{y(g + 1, t): -1.0 for t in range(m)}}, 0.0, np.inf))
    n_vars = nx + g_max * m
    cost = np.r_[np.zeros(nx), np.ones(g_max * m)]
    with quiet_stdout():
        result = milp(cost, constraints=_constraints(rows, n_vars), integrality=np.ones(n_vars),
                      bounds=Bounds(0, 1), options={"time_limit": time_limit_s})
    if result.x is None:
        return start, False
    chosen = result.x[:nx].reshape(n, g_max) > 0.5
    groups = [[copies[i] for i in np.flatnonzero(chosen[:, g])] for g in range(g_max)]
    groups = [g for g in groups if g]
    if len(groups) > len(start):
        return start, False
    return groups, result.status == 0


POLICIES.register("exact")(ExactPolicy)
