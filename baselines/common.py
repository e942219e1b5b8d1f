"""Machinery every packing policy shares: adapter copies (replication of hot adapters), placements from
groups of copies, cached per-GPU verification, and the search for the fewest GPUs that verify."""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np

from adaptergym.errors import ConfigError
from adaptergym.placement import (
    VERIFY_DURATION_S,
    GpuAssignment,
    GpuVerdict,
    Placement,
    Verification,
    verify_gpu,
)
from adaptergym.profile import TwinProfile
from adaptergym.server_capacity import MAX_LORAS_LEVELS, rank_cover
from adaptergym.workload import WorkloadSpec
from baselines.capacity import CapacityModel

OBJECTIVES = ("gpus", "latency")
P = TypeVar("P")


@dataclass(frozen=True, slots=True)
class Copy:
    """One copy of an adapter: the adapter's index in the workload, and this copy's share of its traffic."""

    index: int
    id: str
    rank: int
    load_tok_s: float  # offered tokens/s of this copy (the adapter's load / copies)


def copies_needed(workload: WorkloadSpec, model: CapacityModel, fill: float = 1.0) -> np.ndarray:
    """Per adapter, the fewest copies so that each takes at most ``fill`` of an admissible GPU of its rank
    (1 unless the adapter alone is hotter than that: then it must be replicated)."""
    loads = model.loads(workload)
    limits = np.array([fill * model.admissible_tok_s(a.rank) for a in workload.adapters])
    return np.maximum(1, np.ceil(loads / limits - 1e-9)).astype(np.int64)


def make_copies(workload: WorkloadSpec, model: CapacityModel, copies: np.ndarray) -> list[Copy]:
    """The copies of every adapter (``copies[i]`` of adapter ``i``, traffic split evenly), in workload order."""
    loads = model.loads(workload)
    return [Copy(i, a.id, a.rank, float(loads[i]) / int(copies[i]))
            for i, a in enumerate(workload.adapters) for _ in range(int(copies[i]))]


def group_cover(group: Sequence[Copy]) -> int:
    """The ``--max-lora-rank`` of a GPU serving ``group``: the smallest vLLM value covering its ranks."""
    return rank_cover(max(c.rank for c in group))


def slots_for(model: CapacityModel, group: Sequence[Copy]) -> int:
    """``max_loras`` that gives every adapter of ``group`` a slot, capped by what starts at its rank."""
    return max(1, min(len(group), model.max_slots[group_cover(group)]))


def first_fit_decreasing(copies: Sequence[Copy], capacity: Callable[[int, int], float],
                         model: CapacityModel) -> list[list[Copy]]:
    """Copies by decreasing load, each on the first GPU where it fits: its load within ``capacity(cover,
    adapters)`` (tokens/s, by the GPU's ``max_lora_rank`` and adapter count once it joins), its adapters within
    the slots that start at that rank, and no copy of the same adapter there already."""
    groups: list[list[Copy]] = []
    loads: list[float] = []
    covers: list[int] = []
    for c in sorted(copies, key=lambda c: -c.load_tok_s):
        for g in range(len(groups)):
            cover = max(covers[g], rank_cover(c.rank))
            count = len(groups[g]) + 1
            if (loads[g] + c.load_tok_s <= capacity(cover, count) and count <= model.max_slots[cover]
                    and all(x.index != c.index for x in groups[g])):
                groups[g].append(c)
                loads[g] += c.load_tok_s
                covers[g] = cover
                break
        else:
            groups.append([c])
            loads.append(c.load_tok_s)
            covers.append(rank_cover(c.rank))
    return groups


def to_placement(groups: Sequence[Sequence[Copy]], max_loras: Sequence[int],
                 max_cpu_loras: int | None = None) -> Placement:
    """A placement of non-empty groups of copies (empty groups are dropped)."""
    kept = [(g, m) for g, m in zip(groups, max_loras, strict=True) if g]
    return Placement(tuple(GpuAssignment(k, tuple(c.id for c in g), int(m), max_cpu_loras)
                           for k, (g, m) in enumerate(kept)))


class Verifier:
    """Per-GPU verification (:func:`adaptergym.placement.verify_gpu`) with a cache: a GPU whose adapters,
    traffic shares and flags did not change is not simulated again (a cached verdict may carry another GPU
    index than the one asked about; its figures are the same)."""

    def __init__(self, workload: WorkloadSpec, profile: TwinProfile, seed: int = 0,
                 duration_s: float = VERIFY_DURATION_S) -> None:
        self.workload = workload
        self.profile = profile
        self.seed = seed
        self.duration_s = duration_s
        self._cache: dict[tuple, GpuVerdict] = {}
        self.runs = 0

    def verification(self, placement: Placement) -> Verification:
        """What :func:`adaptergym.placement.verify` says of ``placement`` (same seed and duration)."""
        copies = placement.copies()
        return Verification(tuple(self.verdict(g, copies) for g in placement.assignments))

    def starved(self, placement: Placement) -> list[bool]:
        """Whether each GPU of ``placement`` starves alone on its share of the traffic."""
        return [g.starved for g in self.verification(placement).gpus]

    def verdict(self, gpu: GpuAssignment, copies: Counter[str]) -> GpuVerdict:
        key = (gpu.adapters, tuple(copies[a] for a in gpu.adapters), gpu.max_loras, gpu.max_cpu_loras)
        if key not in self._cache:
            self.runs += 1
            self._cache[key] = verify_gpu(self.workload, gpu, copies, self.profile, seed=self.seed,
                                          duration_s=self.duration_s)
        return self._cache[key]

    def ok(self, placement: Placement) -> bool:
        return not any(self.starved(placement))

    def served_share(self, gpu: GpuAssignment, copies: Counter[str], scale: float = 1.0) -> float:
        """The share of its offered tokens ``gpu`` serves alone (at least 0.9: not starved), with its adapters'
        rates times ``scale`` (1: the cached verdict; otherwise simulated every time)."""
        if scale == 1.0:
            metrics = self.verdict(gpu, copies).metrics
        else:
            on_gpu = set(gpu.adapters)
            scaled = replace(self.workload, adapters=tuple(replace(a, rate=a.rate * scale) if a.id in on_gpu else a
                                                           for a in self.workload.adapters))
            self.runs += 1
            metrics = verify_gpu(scaled, gpu, copies, self.profile, seed=self.seed, duration_s=self.duration_s).metrics
        return metrics.total_throughput / max(metrics.offered_throughput, 1e-9)


def slot_ladder(gpu: GpuAssignment, top: int) -> tuple[list[int], int]:
    """The ``max_loras`` levels a search walks for ``gpu``: those of ``MAX_LORAS_LEVELS`` up to ``top``, ``top``
    itself and ``gpu``'s own level, ascending; and the index of ``gpu``'s level among them."""
    levels = sorted({level for level in MAX_LORAS_LEVELS if level <= top} | {top, gpu.max_loras})
    return levels, levels.index(gpu.max_loras)


def twin_level(gpu: GpuAssignment, copies: Counter[str], verifier: Verifier, retries: int,
               max_slots: dict[int, int]) -> GpuAssignment | None:
    """``gpu`` if the twin does not starve it, else ``gpu`` at another ``max_loras`` level that it does not starve,
    or None. Levels of ``MAX_LORAS_LEVELS`` up to the adapter count and the most slots that start at the GPU's
    rank (``max_slots`` by ``max_lora_rank``), and that limit itself, are searched from ``gpu``'s: the next one
    down and up, then on in the direction whose served share rose while it keeps rising (it is unimodal in the
    level), ``retries`` runs at most."""
    verdict = verifier.verdict(gpu, copies)
    if not verdict.starved:
        return gpu
    levels, at = slot_ladder(gpu, min(len(gpu.adapters), max_slots[verdict.config.max_lora_rank]))

    def outcome(k: int) -> tuple[bool, float]:
        metrics = verifier.verdict(replace(gpu, max_loras=levels[k]), copies).metrics
        return not metrics.starved, metrics.total_throughput / max(metrics.offered_throughput, 1e-9)

    best, runs, results = outcome(at)[1], 0, {}
    for k in (at - 1, at + 1):
        if 0 <= k < len(levels) and runs < retries:
            results[k], runs = outcome(k), runs + 1
            if results[k][0]:
                return replace(gpu, max_loras=levels[k])
    rising = [k for k in results if results[k][1] > best]
    if not rising:
        return None
    k = max(rising, key=lambda j: results[j][1])
    side, best = k - at, results[k][1]
    while runs < retries and 0 <= k + side < len(levels):
        k, runs = k + side, runs + 1
        served, value = outcome(k)
        if served:
            return replace(gpu, max_loras=levels[k])
        if value <= best:
            return None
        best = value
    return None


def first_verified(candidates: Sequence[P], build: Callable[[P], Placement], ok: Callable[[Placement], bool],
                   what: str) -> Placement:
    """The placement of the first candidate that verifies, candidates ordered from fewest GPUs to most.

    Gallops (1st, 2nd, 4th, 8th ... candidate) to the first verified one, then bisects back, so it simulates
    O(log n) placements. It assumes that if a candidate verifies, later ones do too; when that fails it
    still returns a verified placement, just not necessarily the first.

    Raises:
        ConfigError: no candidate verifies (naming ``what`` was searched).
    """
    if not candidates:
        raise ConfigError(f"{what}: nothing to search")
    bad, step, k = -1, 1, 0
    found: tuple[int, Placement] | None = None
    while True:
        placement = build(candidates[k])
        if ok(placement):
            found = (k, placement)
            break
        bad = k
        if k == len(candidates) - 1:
            raise ConfigError(f"{what}: no candidate up to {candidates[-1]} is starvation-free in the twin; "
                              "the workload may hold an adapter one GPU cannot serve")
        k = min(k + step, len(candidates) - 1)
        step *= 2
    lo, hi = bad, found[0]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        placement = build(candidates[mid])
        if ok(placement):
            hi, found = mid, (mid, placement)
        else:
            lo = mid
    return found[1]


@contextmanager
def quiet_stdout() -> Iterator[None]:
    """Process-level stdout to /dev/null while HiGHS solves: on some MILPs it prints a debug line
    ("HighsMipSolverData::transformNewIntegerFeasibleSolution ...") even when silent, an upstream bug that
    would break ``adaptergym place --json``."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def check_objective(name: str, objective: str, supported: Sequence[str] = OBJECTIVES) -> None:
    if objective not in supported:
        raise ConfigError(f"objective: {objective!r} is not one policy {name!r} pursues; use one of "
                          f"{', '.join(supported)}")
