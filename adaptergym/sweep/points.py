"""What a sweep runs: a deterministic, endless sequence of points (a one-GPU workload and a ``max_loras``).

Workloads follow the published twin dataset's layout and extend it: adapters get rates cycled from a triple of
the papers' rate set (``3.2 ... 0.003125`` req/s) or a power law (Zipf, S-LoRA style) over a total rate, ranks
cycled from a short pattern, and ShareGPT or fixed prompt/output lengths (the papers' mean and quartile
datasets). Each workload is swept at a few ``max_loras`` levels, all sharing one request stream (common
random numbers: levels of one workload differ only by the server flag, which is what the surrogate learns).

A workload is stored as its *recipe* (a handful of numbers), not as per-adapter arrays, so a dataset row
stays short and readable; :meth:`WorkloadRecipe.arrays` rebuilds the rates and ranks exactly.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adaptergym.workload import AdapterSpec, LengthSpec, WorkloadSpec

#: The papers' per-adapter rates, req/s (the published dataset cycles triples of distinct values).
PAPER_RATES = (3.2, 1.6, 0.8, 0.4, 0.1, 0.05, 0.025, 0.0125, 0.00625, 0.003125)
#: Rank patterns of the published dataset (cycled over adapters).
PAPER_RANK_CYCLES = ((8, 8, 8), (8, 8, 16), (8, 8, 32), (8, 16, 16), (8, 16, 32), (16, 16, 16), (16, 16, 32))
#: Ranks drawn for the other (random) rank patterns.
RANKS = (8, 16, 32, 64)
#: Served adapters per GPU.
ADAPTER_COUNTS = (1, 2, 4, 8, 16, 32, 64, 96, 128, 192, 256, 384)
#: ``max_loras`` levels a workload of ``n`` adapters is swept at (those below ``n``, and ``n`` itself).
SLOT_LEVELS = (1, 2, 4, 8, 16, 32, 64, 96, 128, 160, 192, 256, 320, 384)
#: Fixed prompt/output lengths of the papers' Llama-2 runs: ShareGPT's mean, p25 and p75.
FIXED_LENGTHS = ((250, 231), (23, 27), (423, 357))
#: Power-law total rates are drawn log-uniformly in this range, req/s (one H100 saturates near 20).
POWERLAW_TOTAL_RATE = (0.3, 80.0)
#: How many ``max_loras`` levels each workload is swept at (fewer when fewer exist).
LEVELS_PER_WORKLOAD = 5


@dataclass(frozen=True, slots=True)
class WorkloadRecipe:
    """A one-GPU workload in a few numbers.

    Attributes:
        num_adapters: adapters served.
        rate_kind: ``"cycle"`` (adapter i gets ``rate_values[i % k]``) or ``"powerlaw"``
            (rate_i ∝ (i+1)^-alpha, summing to ``total_rate``).
        rate_values: the cycled rates, req/s (``cycle``).
        total_rate: aggregate rate, req/s (``powerlaw``; for ``cycle`` it is derived).
        alpha: power-law exponent (``powerlaw``).
        rank_cycle: adapter i gets ``rank_cycle[i % k]``.
        lengths: prompt/output length distribution.
    """

    num_adapters: int
    rate_kind: str
    rank_cycle: tuple[int, ...]
    rate_values: tuple[float, ...] = ()
    total_rate: float = 0.0
    alpha: float = 0.0
    lengths: LengthSpec = field(default_factory=LengthSpec)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-adapter rates (req/s, float64) and ranks (int64)."""
        i = np.arange(self.num_adapters)
        if self.rate_kind == "cycle":
            rates = np.asarray(self.rate_values, np.float64)[i % len(self.rate_values)]
        else:
            weights = (i + 1.0) ** -self.alpha
            rates = self.total_rate * weights / weights.sum()
        return rates, np.asarray(self.rank_cycle, np.int64)[i % len(self.rank_cycle)]

    def workload(self, duration_s: float) -> WorkloadSpec:
        """The workload of this recipe (adapters ``a0000``, ...; Poisson arrivals)."""
        rates, ranks = self.arrays()
        adapters = tuple(AdapterSpec(f"a{i:04d}", int(k), float(r))
                         for i, (r, k) in enumerate(zip(rates, ranks, strict=True)))
        return WorkloadSpec(adapters, self.lengths, duration_s=duration_s)

    def columns(self) -> dict[str, Any]:
        """The recipe as dataset columns (inverse of :func:`recipe_from_row`)."""
        lengths = WorkloadSpec((AdapterSpec("x"),), self.lengths).to_dict()["lengths"]
        return {"num_adapters": self.num_adapters, "rate_kind": self.rate_kind,
                "rate_values": " ".join(repr(v) for v in self.rate_values),
                "total_rate": float(self.arrays()[0].sum()), "alpha": self.alpha,
                "rank_cycle": " ".join(str(k) for k in self.rank_cycle),
                "lengths": json.dumps(lengths, separators=(",", ":"))}


def recipe_from_row(row: Any) -> WorkloadRecipe:
    """The recipe of one dataset row (a mapping with the columns of :meth:`WorkloadRecipe.columns`)."""
    values = str(row["rate_values"]) if isinstance(row["rate_values"], str) else ""
    return WorkloadRecipe(
        num_adapters=int(row["num_adapters"]), rate_kind=str(row["rate_kind"]),
        rank_cycle=tuple(int(k) for k in str(row["rank_cycle"]).split()),
        rate_values=tuple(float(v) for v in values.split()),
        total_rate=float(row["total_rate"]), alpha=float(row["alpha"]),
        lengths=LengthSpec(**json.loads(row["lengths"])))


@dataclass(frozen=True, slots=True)
class SweepPoint:
    """One twin run of a sweep: ``point_id`` is its index in the sweep; ``seed`` seeds its request draw."""

    point_id: int
    workload_id: int
    recipe: WorkloadRecipe
    max_loras: int
    seed: int


def sample_recipe(rng: np.random.Generator) -> WorkloadRecipe:
    """One workload recipe: half the papers' cycled rate triples, half power laws; ranks from the papers'
    patterns (60%) or a random pattern of 1-4 ranks of ``RANKS``; ShareGPT lengths (75%) or fixed ones."""
    n = int(rng.choice(ADAPTER_COUNTS))
    if rng.random() < 0.6:
        ranks = PAPER_RANK_CYCLES[rng.integers(len(PAPER_RANK_CYCLES))]
    else:
        ranks = tuple(int(k) for k in rng.choice(RANKS, int(rng.integers(1, 5))))
    if rng.random() < 0.75:
        lengths = LengthSpec()
    else:
        prompt, output = FIXED_LENGTHS[rng.integers(len(FIXED_LENGTHS))]
        lengths = LengthSpec("fixed", prompt, output)
    if rng.random() < 0.5:
        values = tuple(float(v) for v in sorted(rng.choice(PAPER_RATES, 3, replace=False), reverse=True))
        return WorkloadRecipe(n, "cycle", ranks, rate_values=values, lengths=lengths)
    low, high = np.log(POWERLAW_TOTAL_RATE)
    return WorkloadRecipe(n, "powerlaw", ranks, total_rate=float(np.exp(rng.uniform(low, high))),
                          alpha=float(rng.uniform(0.0, 1.5)), lengths=lengths)


def slot_levels(num_adapters: int) -> list[int]:
    """The ``max_loras`` levels worth sweeping for ``num_adapters`` adapters: levels below it, and it."""
    return [m for m in SLOT_LEVELS if m < num_adapters] + [num_adapters]


def iter_points(seed: int) -> Iterator[SweepPoint]:
    """The sweep of ``seed``, point after point, forever: workload ``w`` is drawn from a generator seeded by
    ``(seed, w)`` alone, so any prefix of the sequence is the same whatever its length, on any executor."""
    point_id = 0
    for workload_id in itertools.count():
        rng = np.random.default_rng([seed, workload_id])
        recipe = sample_recipe(rng)
        levels = slot_levels(recipe.num_adapters)
        chosen = sorted(int(m) for m in rng.choice(levels, min(LEVELS_PER_WORKLOAD, len(levels)), replace=False))
        run_seed = int(rng.integers(2**31))
        for max_loras in chosen:
            yield SweepPoint(point_id, workload_id, recipe, max_loras, run_seed)
            point_id += 1


def sweep_points(seed: int, points: int) -> list[SweepPoint]:
    """The first ``points`` points of the sweep of ``seed``."""
    return list(itertools.islice(iter_points(seed), points))
