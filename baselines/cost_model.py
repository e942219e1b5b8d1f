"""The lower bound's cost model: the share of a GPU each adapter takes, by its load, so that a GPU that passes
placement verification holds adapters costing at most 1 in all (1.04 in the bound, which allows for other request
draws: :data:`baselines.bound.GPU_COST_LIMIT`).

**Why a per-adapter cost.** What a GPU can serve falls with the adapters it holds: every distinct adapter in a
batch adds step time, and an adapter without a slot waits for one to be loaded. An adapter counts only while it
has requests in the batch, which a cold one rarely has, so a GPU whose load sits in a few adapters serves more
than one whose load is spread evenly (a GPU of 256 Zipf-1.5 rank-8 adapters passes verification at about 14,000
tokens/s, one of 256 equal-rate adapters at about 7,000). The model gives an adapter offered ``l`` tokens/s on a
GPU of ``max_lora_rank`` ``k`` the cost ``c_k(l)``, concave and non-decreasing with ``c_k(0) = 0`` (its tokens,
plus its presence in batches, which grows ever more slowly with its rate), and says: a GPU passes verification
only if its adapters' costs sum to at most 1. For a fixed load and adapter count the sum is largest when the
load is spread evenly, so equal-rate GPUs are where the model is tightest.

**Fit** (:func:`fit_cost_curve`). ``c_k`` is piecewise linear on a log-spaced grid of loads. It is the solution
of a linear program: maximise the summed cost of the calibration mixes
(:func:`baselines.edge_table.calibration_mixes`: equal-rate GPUs of 1-1,024 adapters, Zipf mixes, a few hot
adapters beside many cold ones) at their starvation edges, subject to each of them costing at most 1 there,
concavity and monotonicity. A mix's edge is the least load found to starve it at every ``max_loras`` level and
for every request draw measured (:func:`baselines.capacity.measure_mix_edge`), so every load the twin verified for
it costs less than 1. The costs at the edges come out at 0.65-1.00 (median 0.96 for rank classes 8-32, 0.88 for
128): an additive cost cannot follow the twin exactly, and it errs low where a GPU holds few hot adapters
(``python examples/bound_tightness.py``). An adapter hotter than any GPU was seen to carry
(:attr:`CostCurve.max_load_tok_s`) must be split over ``m`` GPUs; ``m c(l / m)`` grows with ``m`` (concavity),
so it costs ``m c(l / m)`` with the fewest ``m``.

The model is fitted, not derived: it holds on the mixes measured, and ``python -m baselines.bound_check``
tests it on the GPUs of every placement the policies verify (:mod:`baselines.bound`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog

from adaptergym.envs.common import rank_cover
from adaptergym.placement import Placement
from adaptergym.profile import TwinProfile
from adaptergym.workload import LengthSpec, WorkloadSpec
from baselines.edge_table import MixEdge, calibration_mixes, shipped_table

#: Knots of a cost curve (log-spaced between the least and the largest adapter load of the calibration mixes).
KNOTS = 64


@dataclass(frozen=True)
class CostCurve:
    """``c_k`` of one rank class (module doc): piecewise linear through ``(knots_tok_s, cost)``.

    Attributes:
        knots_tok_s: adapter loads, tokens/s, increasing from 0.
        cost: the cost at each knot (0 at load 0).
        max_load_tok_s: the largest edge of any calibration mix: no GPU of the class was seen to carry more.
    """

    knots_tok_s: np.ndarray
    cost: np.ndarray
    max_load_tok_s: float

    def __call__(self, loads_tok_s: np.ndarray) -> np.ndarray:
        """The cost of adapters offered ``loads_tok_s`` on one GPU each (none above ``max_load_tok_s``)."""
        return np.interp(loads_tok_s, self.knots_tok_s, self.cost)

    def split_cost(self, loads_tok_s: np.ndarray) -> np.ndarray:
        """The least cost of serving each load: on the fewest GPUs that can carry it, split evenly (module doc)."""
        loads = np.asarray(loads_tok_s, float)
        copies = np.maximum(1.0, np.ceil(loads / self.max_load_tok_s - 1e-12))
        return copies * self(loads / copies)


def edge_loads(edges: dict[str, MixEdge]) -> list[np.ndarray]:
    """The adapters' loads (tokens/s) of each calibration mix at its edge."""
    mixes = calibration_mixes()
    return [mixes[name] * edge.load_tok_s for name, edge in edges.items()]


def fit_cost_curve(mix_loads: list[np.ndarray]) -> CostCurve:
    """The cost curve of one rank class from the adapters' loads of its calibration mixes at their edges (module
    doc: the linear program)."""
    every = np.concatenate(mix_loads)
    knots = np.r_[0.0, np.unique(np.geomspace(every.min(), every.max(), KNOTS))]
    weights = np.array([_interpolation_weights(knots, mix) for mix in mix_loads])  # mix x knot
    width = np.diff(knots)
    # Concavity: slope(j+1) - slope(j) <= 0 for consecutive segments; monotone: the last slope >= 0.
    rows = []
    for j in range(len(knots) - 2):
        row = np.zeros(len(knots))
        row[j] += 1 / width[j]
        row[j + 1] -= 1 / width[j] + 1 / width[j + 1]
        row[j + 2] += 1 / width[j + 1]
        rows.append(row)
    last = np.zeros(len(knots))
    last[-2:] = (1.0, -1.0)
    a_ub = np.vstack([weights, *rows, last])
    b_ub = np.r_[np.ones(len(weights)), np.zeros(len(rows) + 1)]
    objective = -(weights.sum(axis=0) - 1e-6)  # tight at the mixes, no higher than needed between them
    result = linprog(objective, A_ub=a_ub, b_ub=b_ub, bounds=[(0.0, 0.0)] + [(0.0, None)] * (len(knots) - 1))
    if result.status != 0:
        raise RuntimeError(f"cost curve fit failed: {result.message}")
    return CostCurve(knots, result.x, float(every.max()))


def _interpolation_weights(knots: np.ndarray, loads: np.ndarray) -> np.ndarray:
    """Per knot, the summed weight linear interpolation gives it over ``loads``: ``sum c(loads) = w @ c(knots)``."""
    upper = np.clip(np.searchsorted(knots, loads, side="right"), 1, len(knots) - 1)
    t = np.clip((loads - knots[upper - 1]) / (knots[upper] - knots[upper - 1]), 0.0, 1.0)
    return np.bincount(upper - 1, 1 - t, len(knots)) + np.bincount(upper, t, len(knots))


@dataclass(frozen=True)
class CostModel:
    """The cost curves of a profile at one length distribution, by rank class (``max_lora_rank``)."""

    curves: dict[int, CostCurve]

    def curve(self, cover: int) -> CostCurve:
        """The curve of rank class ``cover``; a class above the largest measured one takes that one's (costs
        grow with the rank, so this under-states them: the bound stays a bound)."""
        known = [k for k in sorted(self.curves) if k <= cover]
        return self.curves[known[-1] if known else min(self.curves)]

    def placement_costs(self, workload: WorkloadSpec, placement: Placement, tokens_per_request: float) -> list[float]:
        """What each GPU of ``placement`` costs (its adapters' shares of their loads, at its rank class): at most
        1 for every GPU that passes verification, if the model holds."""
        copies = placement.copies()
        by_id = {a.id: a for a in workload.adapters}
        costs = []
        for gpu in placement.assignments:
            adapters = [by_id[i] for i in gpu.adapters]
            loads = np.array([a.rate / copies[a.id] for a in adapters]) * tokens_per_request
            costs.append(float(self.curve(rank_cover(max(a.rank for a in adapters)))(loads).sum()))
        return costs


_MODELS: dict[str, CostModel | None] = {}


def cost_model(profile: TwinProfile, lengths: LengthSpec) -> CostModel | None:
    """The cost model of (profile, lengths) from its shipped table, fitted once per process; None when no table
    was measured for them (``python -m baselines.edge_table``)."""
    key = json.dumps([profile.to_dict(), str(lengths)], sort_keys=True, default=str)
    if key not in _MODELS:
        table = shipped_table(profile, lengths)
        _MODELS[key] = None if table is None else CostModel(
            {cover: fit_cost_curve(edge_loads(edges)) for cover, edges in table.mixes.items()})
    return _MODELS[key]
