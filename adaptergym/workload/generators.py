"""S-LoRA-style synthetic workload families: many adapters, power-law popularity, a mix of ranks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from adaptergym.errors import WorkloadError
from adaptergym.workload.spec import AdapterSpec, ArrivalSpec, LengthSpec, WorkloadSpec


def powerlaw_workload(
    num_adapters: int,
    total_rate: float,
    alpha: float = 1.0,
    ranks: Sequence[int] = (8, 16, 32),
    rng: np.random.Generator | None = None,
    duration_s: float = 3600.0,
    lengths: LengthSpec | None = None,
    arrival: ArrivalSpec | None = None,
    name: str = "",
) -> WorkloadSpec:
    """Adapters whose rates follow a Zipf/power law (rate_i ∝ i^-alpha, alpha=0 is uniform).

    Args:
        num_adapters: how many adapters.
        total_rate: aggregate requests/s across adapters.
        alpha: power-law exponent of popularity (S-LoRA uses 0.5-1.5).
        ranks: ranks to draw from; drawn uniformly with ``rng`` (cycled when ``rng`` is None).
        rng: generator for rank draws and popularity order.
    """
    if num_adapters < 1:
        raise WorkloadError("num_adapters: must be >= 1")
    if total_rate <= 0:
        raise WorkloadError("total_rate: must be > 0 req/s")
    if alpha < 0:
        raise WorkloadError("alpha: must be >= 0")
    weights = np.arange(1, num_adapters + 1, dtype=float) ** -alpha
    rates = total_rate * weights / weights.sum()
    if rng is None:
        chosen = [ranks[i % len(ranks)] for i in range(num_adapters)]
    else:
        chosen = [int(r) for r in rng.choice(np.asarray(ranks), num_adapters)]
        rates = rates[rng.permutation(num_adapters)]
    adapters = tuple(
        AdapterSpec(f"adapter-{i:04d}", int(chosen[i]), float(rates[i])) for i in range(num_adapters)
    )
    return WorkloadSpec(adapters, lengths or LengthSpec(), arrival or ArrivalSpec(), duration_s, name=name)


def cycled_workload(
    num_adapters: int,
    rates: Sequence[float],
    ranks: Sequence[int],
    duration_s: float = 3600.0,
    lengths: LengthSpec | None = None,
    name: str = "",
) -> WorkloadSpec:
    """The papers' layout: adapter i gets ``rates[i % len(rates)]`` and ``ranks[i % len(ranks)]``."""
    adapters = tuple(
        AdapterSpec(f"adapter-{i:04d}", int(ranks[i % len(ranks)]), float(rates[i % len(rates)]))
        for i in range(num_adapters)
    )
    return WorkloadSpec(adapters, lengths or LengthSpec(), ArrivalSpec(), duration_s, name=name)
