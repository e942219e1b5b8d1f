"""Per-adapter arrival processes (Poisson, Gamma with a coefficient of variation, burst)."""

from __future__ import annotations

import numpy as np

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
