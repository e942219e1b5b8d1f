"""The lower bound's cost model: the share of a GPU each adapter takes, by its load, so that a GPU that passes
placement verification holds adapters costing at most 1 in all (1.05 in the bound under Poisson arrivals, 1.07
under Gamma, which allows for other request draws: :data:`baselines.bound.GPU_COST_LIMITS`).

**Why a per-adapter cost.** What a GPU can serve falls with the adapters it holds: every distinct adapter in a
batch adds step time, and an adapter without a slot waits for one to be loaded. An adapter counts only while it
has requests in the batch, which a cold one rarely has, so a GPU whose load sits in a few adapters serves more
than one whose load is spread evenly (a GPU of 256 Zipf-1.5 rank-8 adapters passes verification at about 14,000
tokens/s, one of 256 equal-rate adapters at about 7,000). The model gives an adapter offered ``l`` tokens/s on a
GPU of ``max_lora_rank`` ``k`` the cost ``c_k(l)``, concave and non-decreasing with ``c_k(0) = 0`` (its tokens,
plus its presence in batches, which grows ever more slowly with its rate), and says: a GPU passes verification
only if its adapters' costs sum to at most 1. For a fixed load and adapter count the sum is largest when the
load is spread evenly, so equal-rate GPUs are where the model is tightest.

**Fit** (:func:`fit_cost_curves`). The main curve ``c_k`` is piecewise linear on a log-spaced grid of loads, the
solution of a linear program: the largest summed cost of the calibration mixes
(:func:`baselines.edge_table.calibration_mixes`: equal-rate GPUs of 1-1,024 adapters, Zipf mixes, a few hot
adapters beside many cold ones) at their starvation edges, subject to each of them costing at most 1 there,
concavity and monotonicity. A mix's edge is the least load found to starve it at every ``max_loras`` level and
for every request draw measured (:func:`baselines.capacity.measure_mix_edge`), so every load the twin verified for
it costs less than 1. One additive curve cannot follow the twin everywhere: the one of the largest summed cost
charges a GPU of 1-4 equal-rate adapters well below 1 at its edge, because the many-adapter mixes bind it; so it
under-charges a GPU whose load sits in one or a few hot adapters, and errs low on some many-adapter mixes too. So
a rank class has a *family* of curves: that one, and for each calibration mix the curve that charges that mix the
most (1) while every mix still costs at most 1. Each curve alone is an additive cost of the kind above, so a GPU
that passes verification costs at most 1 under each of them; its cost is the largest
(:meth:`CostCurves.gpu_cost`). ``python examples/bound_tightness.py`` prints both per mix. An adapter hotter than
any GPU was seen to carry (:attr:`CostCurves.max_load_tok_s`) must be split over ``m`` GPUs; ``m c(l / m)``
grows with ``m`` (concavity), so it costs ``m c(l / m)`` with the fewest ``m``. (Curves for the mixes of at most 4
adapters only were kept while the table's edges were the largest of 4 request draws: with a curve for every mix,
verified ``bursty`` GPUs cost up to 1.06, beyond the 4% margin of then; on the edges of 12 draws the check of
:mod:`baselines.bound` holds with one for every mix.)

**Arrivals.** The edges depend on how requests arrive: under Gamma arrivals, bursts of one adapter's requests
share its slot and its batch presence, and a GPU of many cold adapters passes verification at up to 1.5-1.9x the
load it does under Poisson ones (``gamma_mixes`` of the table). A workload is costed by the edges of its arrivals
(:meth:`baselines.edge_table.CapacityTable.edges_for`), one model per arrival kind.

The model is fitted, not derived: it holds on the mixes measured, and ``python -m baselines.bound_check``
tests it on the GPUs of every placement the policies verify (:mod:`baselines.bound`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linprog

from adaptergym.placement import Placement
from adaptergym.profile import TwinProfile
from adaptergym.server_capacity import rank_cover
from adaptergym.workload import ArrivalSpec, LengthSpec, WorkloadSpec
from baselines.capacity import POISSON
from baselines.edge_table import CapacityTable, MixEdge, calibration_mixes, shipped_table

#: Knots of a cost curve (log-spaced between the least and the largest adapter load of the calibration mixes).
KNOTS = 64


@dataclass(frozen=True)
class CostCurves:
    """The family ``c_k`` of one rank class (module doc): piecewise linear curves through ``(knots_tok_s, cost[j])``.

    Attributes:
        knots_tok_s: adapter loads, tokens/s, increasing from 0.
        cost: curves x knots: each curve's cost at each knot (0 at load 0); curve 0 has the largest summed cost
            over the calibration mixes, each further one the largest cost of one mix (duplicates dropped).
        max_load_tok_s: the largest edge of any calibration mix: no GPU of the class was seen to carry more.
    """

    knots_tok_s: np.ndarray
    cost: np.ndarray
    max_load_tok_s: float
    _one: dict[float, np.ndarray] = field(default_factory=dict, init=False, repr=False, compare=False)

    def each(self, loads_tok_s: np.ndarray) -> np.ndarray:
        """curves x adapters: what each curve charges adapters offered ``loads_tok_s`` on one GPU each (none above
        ``max_load_tok_s``)."""
        loads = np.atleast_1d(np.asarray(loads_tok_s, float))
        upper, t = _segments(self.knots_tok_s, loads)  # every curve shares the knots: one lookup for the family
        return self.cost[:, upper - 1] * (1.0 - t) + self.cost[:, upper] * t

    def one(self, load_tok_s: float) -> np.ndarray:
        """What each curve charges one adapter offered ``load_tok_s`` (remembered: packing asks it of the same
        copies many times)."""
        if load_tok_s not in self._one:
            self._one[load_tok_s] = self.each(np.array([load_tok_s]))[:, 0]
        return self._one[load_tok_s]

    def gpu_cost(self, loads_tok_s: np.ndarray) -> float:
        """The cost of one GPU whose adapters are offered ``loads_tok_s``: the most any curve charges them."""
        return float(self.each(loads_tok_s).sum(axis=1).max()) if len(np.atleast_1d(loads_tok_s)) else 0.0

    def split_each(self, loads_tok_s: np.ndarray) -> np.ndarray:
        """curves x adapters: the least each curve charges for serving each load: on the fewest GPUs that can
        carry it, split evenly (module doc)."""
        loads = np.asarray(loads_tok_s, float)
        copies = np.maximum(1.0, np.ceil(loads / self.max_load_tok_s - 1e-12))
        return copies * self.each(loads / copies)


def edge_loads(edges: dict[str, MixEdge]) -> list[np.ndarray]:
    """The adapters' loads (tokens/s) of each calibration mix at its edge."""
    mixes = calibration_mixes()
    return [mixes[name] * edge.load_tok_s for name, edge in edges.items()]


def fit_cost_curves(mix_loads: list[np.ndarray]) -> CostCurves:
    """The cost curves of one rank class from the adapters' loads of its calibration mixes at their edges (module
    doc: one linear program per curve, all under the same constraints)."""
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
    bounds = [(0.0, 0.0)] + [(0.0, None)] * (len(knots) - 1)
    # Curve 0: every mix counts alike; then, per mix, that mix counts and the others only settle ties. The small
    # negative term keeps each curve no higher than needed between the mixes.
    emphases = [np.ones(len(mix_loads))] + [np.where(np.arange(len(mix_loads)) == m, 1.0, 1e-3)
                                            for m in range(len(mix_loads))]
    curves = []
    for emphasis in emphases:
        result = linprog(-(emphasis @ weights - 1e-6), A_ub=a_ub, b_ub=b_ub, bounds=bounds)
        if result.status != 0:
            raise RuntimeError(f"cost curve fit failed: {result.message}")
        curves.append(result.x)
    curves = np.round(curves, 12)
    first = np.sort(np.unique(curves, axis=0, return_index=True)[1])  # the distinct curves, in fit order
    return CostCurves(knots, curves[first], float(every.max()))


def _segments(knots: np.ndarray, loads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each load's segment of ``knots`` (the index of its upper knot) and its position in it, 0-1 (clamped at the
    ends, as ``np.interp``)."""
    upper = np.clip(np.searchsorted(knots, loads, side="right"), 1, len(knots) - 1)
    return upper, np.clip((loads - knots[upper - 1]) / (knots[upper] - knots[upper - 1]), 0.0, 1.0)


def _interpolation_weights(knots: np.ndarray, loads: np.ndarray) -> np.ndarray:
    """Per knot, the summed weight linear interpolation gives it over ``loads``: ``sum c(loads) = w @ c(knots)``."""
    upper, t = _segments(knots, loads)
    return np.bincount(upper - 1, 1 - t, len(knots)) + np.bincount(upper, t, len(knots))


@dataclass(frozen=True)
class CostModel:
    """The cost curve families of a profile at one length distribution, by rank class (``max_lora_rank``)."""

    curves: dict[int, CostCurves]

    def curve(self, cover: int) -> CostCurves:
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
            costs.append(self.curve(rank_cover(max(a.rank for a in adapters))).gpu_cost(loads))
        return costs


_TABLES: dict[str, CapacityTable | None] = {}
_MODELS: dict[tuple[str, str], CostModel] = {}


def cost_model(profile: TwinProfile, lengths: LengthSpec, arrival: ArrivalSpec = POISSON) -> CostModel | None:
    """The cost model of (profile, lengths) from its shipped table, fitted once per process on the mixes' edges
    under ``arrival``'s process (:meth:`baselines.edge_table.CapacityTable.edges_for`: Poisson, or Gamma of a
    measured CV); None when no table was measured for them (``python -m baselines.edge_table``) or it does not
    cover those arrivals."""
    base = json.dumps([profile.to_dict(), str(lengths)], sort_keys=True, default=str)
    if base not in _TABLES:
        _TABLES[base] = shipped_table(profile, lengths)
    table = _TABLES[base]
    edges = None if table is None else table.edges_for(arrival)
    if edges is None:
        return None
    key = (base, arrival.kind)  # every Gamma CV the table covers is costed by the same edges
    if key not in _MODELS:
        _MODELS[key] = CostModel({cover: fit_cost_curves(edge_loads(row)) for cover, row in edges.items()})
    return _MODELS[key]
