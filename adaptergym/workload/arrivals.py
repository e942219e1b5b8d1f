"""Per-adapter arrival processes (Poisson, Gamma with a coefficient of variation, burst), at constant rates or
under a rate schedule."""

from __future__ import annotations

import numpy as np

from adaptergym.workload.rates import RateTable
from adaptergym.workload.spec import ArrivalSpec


def arrival_times(
    spec: ArrivalSpec, rate: float, duration_s: float, rng: np.random.Generator, max_count: int | None = None
) -> np.ndarray:
    """Arrival times in [0, duration_s) of one adapter's stream at ``rate`` requests/s."""
    if spec.kind == "burst":
        return np.zeros(max_count or 0)
    if rate <= 0:
        return np.empty(0)
    expected = rate * duration_s
    shape = 1.0 if spec.kind == "poisson" else 1.0 / spec.cv**2
    chunks: list[np.ndarray] = []
    t0 = 0.0
    batch = int(expected + 6 * np.sqrt(expected) * max(1.0, spec.cv) + 16)
    while t0 < duration_s:
        gaps = rng.gamma(shape, 1.0 / (rate * shape), batch)
        times = t0 + np.cumsum(gaps)
        chunks.append(times)
        t0 = float(times[-1])
    times = np.concatenate(chunks)
    return times[times < duration_s]


def scheduled_arrivals(spec: ArrivalSpec, table: RateTable, rng: np.random.Generator
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(arrival times, adapter index) of every adapter under time-varying rates, unsorted.

    Time rescaling: each adapter's stream is a unit-rate renewal process in operational time (its expected
    arrivals so far, ``table.cumulative``), mapped back through the inverse of the cumulative rate. With
    Poisson gaps that is exactly a non-homogeneous Poisson process of rate ``table.rates_at``; with Gamma gaps
    the rate is the same and the coefficient of variation ``spec.cv`` holds in operational time (the gaps of a
    Gamma stream stretch where the rate is low and shrink where it is high).
    """
    totals = table.cum[-1]
    operational = [arrival_times(spec, 1.0, float(total), rng) if total > 0 else np.empty(0) for total in totals]
    adapter = np.repeat(np.arange(totals.size), [u.size for u in operational])
    expected = np.concatenate(operational) if operational else np.empty(0)
    return table.invert(adapter, expected), adapter
