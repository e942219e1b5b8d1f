"""The true arrival rate of every adapter over time: a workload's schedule compiled into a table.

Contract (kept stable): ``rate_table(spec)`` compiles a :class:`~adaptergym.workload.spec.WorkloadSpec` once
(cached) into a :class:`RateTable` whose columns follow ``spec.adapters``. Its rate is exactly what
``sample_requests`` draws arrivals from, so an oracle or a forecast-error report can ask it for the truth:

- ``rates_at(t)``: req/s of every adapter at time(s) t;
- ``cumulative(t)``: expected arrivals in [0, t);
- ``mean_rates(t0, t1)``: mean req/s over [t0, t1) (the integral, not a sample);
- ``epoch_rates(epoch_s)``: mean req/s of every adapter over each decision epoch.

Times are clipped to [0, duration_s]. The rate is piecewise constant in time (piecewise, flash, drift and MMPP
components change it at known instants) times at most one daily cosine per adapter, so every integral above is
closed-form and inverting the cumulative rate (how arrivals are drawn) needs only a short safeguarded Newton
solve inside a cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from adaptergym.errors import WorkloadError
from adaptergym.workload.schedule import Daily

if TYPE_CHECKING:
    from adaptergym.workload.spec import WorkloadSpec


@dataclass(frozen=True, eq=False)
class RateTable:
    """Per-adapter rates on cells of time, times one daily cosine per adapter.

    Attributes:
        edges: (K+1,) cell boundaries, 0 to ``duration_s``, seconds.
        level: (K, n) base rate times the piecewise-constant multipliers in each cell, req/s.
        amplitude: (n,) daily-cycle amplitude (0 where an adapter has none).
        omega: (n,) daily-cycle angular frequency, rad/s.
        phase_s: (n,) time of the daily peak, s.
        cum: (K+1, n) expected arrivals in [0, edge).
    """

    edges: np.ndarray
    level: np.ndarray
    amplitude: np.ndarray
    omega: np.ndarray
    phase_s: np.ndarray
    cum: np.ndarray

    @property
    def duration_s(self) -> float:
        return float(self.edges[-1])

    @property
    def num_adapters(self) -> int:
        return int(self.level.shape[1])

    def _cell(self, t: np.ndarray) -> np.ndarray:
        return np.clip(np.searchsorted(self.edges, t, side="right") - 1, 0, self.level.shape[0] - 1)

    def _shape(self, t: np.ndarray, cols: slice | np.ndarray = slice(None)) -> np.ndarray:
        """The daily factor's integral F(t) = t + (A/w) sin(w (t - phase)); t broadcasts against the columns."""
        a, w, p = self.amplitude[cols], self.omega[cols], self.phase_s[cols]
        return t + a / w * np.sin(w * (t - p))

    def rates_at(self, t: float | np.ndarray) -> np.ndarray:
        """Rate of every adapter at ``t``, req/s: shape (n,) for a scalar, (len(t), n) for an array."""
        times = np.clip(np.atleast_1d(np.asarray(t, float)), 0.0, self.duration_s)
        daily = 1.0 + self.amplitude * np.cos(self.omega * (times[:, None] - self.phase_s))
        out = self.level[self._cell(times)] * daily
        return out[0] if np.ndim(t) == 0 else out

    def cumulative(self, t: float | np.ndarray) -> np.ndarray:
        """Expected arrivals of every adapter in [0, t): shape (n,) for a scalar, (len(t), n) for an array."""
        times = np.clip(np.atleast_1d(np.asarray(t, float)), 0.0, self.duration_s)
        k = self._cell(times)
        out = self.cum[k] + self.level[k] * (self._shape(times[:, None]) - self._shape(self.edges[k][:, None]))
        return out[0] if np.ndim(t) == 0 else out

    def mean_rates(self, t0: float, t1: float) -> np.ndarray:
        """Mean rate of every adapter over [t0, t1) within the workload, req/s, shape (n,)."""
        lo, hi = max(0.0, float(t0)), min(self.duration_s, float(t1))
        if not hi > lo:
            raise WorkloadError(f"interval: [{t0:g}, {t1:g}) s does not overlap the workload [0, {self.duration_s:g})")
        return (self.cumulative(hi) - self.cumulative(lo)) / (hi - lo)

    def epoch_rates(self, epoch_s: float) -> np.ndarray:
        """Mean rate of every adapter in each epoch of ``epoch_s`` seconds (the last may be shorter),
        shape (epochs, n), req/s."""
        edges = epoch_edges(self.duration_s, epoch_s)
        cum = self.cumulative(edges)
        return np.diff(cum, axis=0) / np.diff(edges)[:, None]

    def invert(self, adapter: np.ndarray, expected: np.ndarray) -> np.ndarray:
        """Times t with ``cumulative(t)[adapter] == expected`` (the inverse of each adapter's cumulative rate),
        for arrivals drawn in operational time; ``expected`` must lie in [0, cum[-1, adapter])."""
        k = np.empty(adapter.size, np.int64)
        order = np.argsort(adapter, kind="stable")
        bounds = np.searchsorted(adapter[order], np.arange(self.num_adapters + 1))
        for i in np.flatnonzero(np.diff(bounds)):
            mine = order[bounds[i]:bounds[i + 1]]
            k[mine] = np.searchsorted(self.cum[:, i], expected[mine], side="right") - 1
        k = np.clip(k, 0, self.level.shape[0] - 1)
        lo, hi = self.edges[k], self.edges[k + 1]
        start, grow = self.cum[k, adapter], self.cum[k + 1, adapter] - self.cum[k, adapter]
        frac = np.divide(expected - start, grow, out=np.zeros_like(expected), where=grow > 0)
        t = lo + (hi - lo) * frac  # exact where the cell has no daily cycle
        cyclic = self.amplitude[adapter] > 0
        if cyclic.any():
            idx = np.flatnonzero(cyclic)
            t[idx] = self._solve(adapter[idx], k[idx], expected[idx] - start[idx], t[idx], lo[idx], hi[idx])
        return t

    def _solve(self, adapter: np.ndarray, k: np.ndarray, inside: np.ndarray, t: np.ndarray, lo: np.ndarray,
               hi: np.ndarray) -> np.ndarray:
        """Newton on level * (F(t) - F(lo)) = inside within [lo, hi], falling back to bisection."""
        level = self.level[k, adapter]
        a, w, p = self.amplitude[adapter], self.omega[adapter], self.phase_s[adapter]
        target = inside / level + lo + a / w * np.sin(w * (lo - p))
        t, lo, hi = t.copy(), lo.copy(), hi.copy()
        tol = 1e-12 * max(1.0, self.duration_s)
        active = np.arange(t.size)
        for _ in range(200):
            x, ai, wi, pi = t[active], a[active], w[active], p[active]
            gap = x + ai / wi * np.sin(wi * (x - pi)) - target[active]
            moving = np.abs(gap) >= tol
            active, x, gap, ai, wi, pi = active[moving], x[moving], gap[moving], ai[moving], wi[moving], pi[moving]
            if not active.size:
                break
            lo[active] = np.where(gap < 0, x, lo[active])
            hi[active] = np.where(gap > 0, x, hi[active])
            slope = 1.0 + ai * np.cos(wi * (x - pi))
            step = x - np.divide(gap, slope, out=np.full_like(gap, np.inf), where=slope > 0)
            inside = (step >= lo[active]) & (step <= hi[active])
            t[active] = np.where(inside, step, 0.5 * (lo[active] + hi[active]))
        return t


def epoch_edges(duration_s: float, epoch_s: float) -> np.ndarray:
    """Boundaries of decision epochs of ``epoch_s`` seconds over [0, duration_s] (the last epoch may be shorter).

    Raises:
        WorkloadError: ``epoch_s`` is not a positive number or is longer than the workload.
    """
    if not np.isfinite(epoch_s) or epoch_s <= 0:
        raise WorkloadError(f"epoch_s: {epoch_s!r} must be a finite number of seconds > 0")
    if epoch_s > duration_s:
        raise WorkloadError(f"epoch_s: {epoch_s:g} s is longer than the workload (duration_s {duration_s:g}); "
                            "use a shorter epoch")
    edges = np.arange(0.0, duration_s, epoch_s)
    return np.append(edges, duration_s)


@lru_cache(maxsize=16)
def rate_table(spec: WorkloadSpec) -> RateTable:
    """The compiled rates of ``spec`` (cached per spec; a workload without a schedule has constant rates).

    Raises:
        WorkloadError: ``spec`` replays a trace (its rates are its arrivals: count them per epoch instead).
    """
    if spec.lengths.kind == "trace":
        raise WorkloadError("schedule: a trace has no rate schedule; count its arrivals per epoch instead "
                            "(adaptergym.workload.epoch_counts)")
    duration = spec.duration_s
    column = {a.id: i for i, a in enumerate(spec.adapters)}
    n = len(spec.adapters)
    cuts = [np.array([0.0, duration])] + [c.breakpoints(duration) for c in spec.schedule]
    edges = np.unique(np.concatenate(cuts))
    edges = edges[(edges >= 0) & (edges <= duration)]
    starts = edges[:-1]
    level = np.tile(np.array([a.rate for a in spec.adapters], float), (starts.size, 1))
    amplitude, omega, phase = np.zeros(n), np.ones(n), np.zeros(n)
    for component in spec.schedule:
        cols = np.array([column[a] for a in component.adapters], np.int64)
        if isinstance(component, Daily):
            amplitude[cols], phase[cols] = component.per_adapter()
            omega[cols] = 2 * np.pi / component.period_s
        else:
            level[:, cols] *= component.step_values(starts, duration)
    table = RateTable(edges, level, amplitude, omega, phase, np.zeros((edges.size, n)))
    grow = level * (table._shape(edges[1:, None]) - table._shape(edges[:-1, None]))
    return RateTable(edges, level, amplitude, omega, phase, np.vstack([np.zeros(n), np.cumsum(grow, axis=0)]))
