"""What one GPU can serve, by its vLLM ``--max-lora-rank`` and the adapters it holds: the capacity model of the
packing policies, and the measurements the lower bound's cost model is fitted on.

``peak_tok_s(rank, adapters)`` is the twin's saturated throughput (prompt + output tokens/s) of one GPU of the
profile whose ``max_lora_rank`` covers ``rank``, serving ``adapters`` equal-rate adapters, at the best of a few
``max_loras`` levels (:func:`adaptergym.server_capacity.saturated_throughput` over :data:`PEAK_WINDOW_S` simulated
seconds). It is measured at the adapter counts of :data:`COUNTS` and read at the largest grid count not above
the GPU's count: the twin's throughput falls as a GPU holds more adapters (every adapter in a batch adds step
time; fewer slots add loads), so the grid point bounds the counts up to the next one. A GPU is starved (the
papers' rule) when it serves less than 90% of what it is offered, so a starvation-free GPU is offered at most
``peak / 0.9``: :meth:`CapacityModel.admissible_tok_s`, what the packing policies size GPUs with.

:func:`measure_mix_edge` finds the *starvation edge* of any adapter mix (adapters' shares of a GPU's load): the
least offered load at which placement verification (:func:`adaptergym.placement.verify_gpu`: 600 simulated s,
the 90% rule) starves the GPU at every ``max_loras`` level, for the request draws of :data:`EDGE_SEEDS`; every
verified load of the mix lies below it. It is lower than ``peak / 0.9``, far lower with many adapters: the peak
is measured with a deep queue, where the scheduler keeps batching adapters that hold a slot, while at the edge
every adapter must be cycled through the slots (``python examples/bound_tightness.py``). Mix edges cost seconds
each, so the default profile's (the calibration mixes of :func:`baselines.edge_table.calibration_mixes`) ship in
``adaptergym/data/capacity/`` with its peaks; ``python -m baselines.edge_table`` measures them again.
``edge_tok_s(rank, adapters)`` is an older, cheaper edge of equal-rate adapters at a grid count (one draw, three
levels), what ``AdapterFleet-v0`` sizes replicas by; :meth:`CapacityModel.best_level` suggests a GPU's
``max_loras`` from the levels that served the calibration mixes best.
"""

from __future__ import annotations

import bisect
import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from adaptergym.edges import shipped_edges
from adaptergym.errors import WorkloadError
from adaptergym.metrics import STARVATION_THRESHOLD, Metrics
from adaptergym.placement import VERIFY_DURATION_S, GpuAssignment, verify_gpu
from adaptergym.profile import TwinProfile
from adaptergym.server_capacity import (
    MAX_LORAS_LEVELS,
    mean_request_tokens,
    rank_cover,
    saturated_throughput,
    slot_caps,
)
from adaptergym.twin.config import VLLM_MAX_LORA_RANKS
from adaptergym.workload import AdapterSpec, ArrivalSpec, LengthSpec, WorkloadSpec
from baselines.edge_table import MixEdge, calibration_mixes, shipped_table

#: Simulated seconds of each peak measurement (its second half is measured).
PEAK_WINDOW_S = 240.0
#: Adapter counts at which the peak is measured (a GPU's count is read down to the nearest).
COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
#: From this count on, fewer slots than adapters are tried too (count / 2, count / 4): at saturation they serve more.
FEWER_SLOTS_FROM = 16
#: Request draws (verification seeds) a mix edge is measured with; the edge is the largest of theirs. The more
#: draws, the less another draw's edge lies above it, and the smaller the bound's margin
#: (``baselines.bound.GPU_COST_LIMITS``, measured by ``python examples/edge_spread.py``).
EDGE_SEEDS = tuple(range(12))
#: Levels tried on each side of the last one that served, at a load it does not serve.
SCAN_REACH = 2
#: Seconds a request holds a place in the batch, roughly (output tokens x step time): an adapter with requests
#: arriving at ``r`` per second has one in the batch with probability about ``1 - exp(-r x this)``.
BATCH_RESIDENCE_S = 5.0
#: Calibration mixes :meth:`CapacityModel.best_level` takes the median level of.
LEVEL_NEIGHBOURS = 3
#: An adapter with requests in the batch at least this often (by :data:`BATCH_RESIDENCE_S`) gets a slot of its own.
BUSY_PRESENCE = 0.9
#: Bisection steps of an equal-rate edge, between half of ``peak / 0.9`` and ``peak / 0.9`` (precision 1.6%).
EDGE_STEPS = 5
#: Bisection steps of a mix edge (first seed, a factor-16 bracket in log space: 1.1% precision).
MIX_EDGE_STEPS = 8
#: Bisection steps of another seed's mix edge, in a bracket a factor ``SEED_SPREAD`` either side of the first seed's
#: (widened where it does not hold the edge; 0.7% precision).
SEED_STEPS = 6
SEED_SPREAD = 1.25
#: Poisson arrivals: the calibration's, and every workload's unless it says otherwise.
POISSON = ArrivalSpec()


def verify_mix(profile: TwinProfile, lengths: LengthSpec, cover: int, shares: np.ndarray, max_loras: int,
               load_tok_s: float, seed: int = 0, arrival: ArrivalSpec = POISSON) -> Metrics:
    """Placement verification of one GPU (``max_lora_rank`` ``cover``, ``max_loras`` slots) whose adapters, all of
    rank ``cover``, take ``shares`` of an offered ``load_tok_s``, arriving by ``arrival`` (Poisson by default)."""
    ids = tuple(f"mix-{i}" for i in range(len(shares)))
    rates = load_tok_s * np.asarray(shares) / mean_request_tokens(lengths)
    workload = WorkloadSpec(tuple(AdapterSpec(i, cover, float(r)) for i, r in zip(ids, rates, strict=True)), lengths,
                            arrival, duration_s=VERIFY_DURATION_S)
    return verify_gpu(workload, GpuAssignment(0, ids, max_loras), Counter(ids), profile, seed=seed).metrics


def mix_levels(adapters: int, max_slots: int) -> list[int]:
    """The ``max_loras`` levels an edge is searched over: those of ``MAX_LORAS_LEVELS`` from 4 (or fewer
    adapters) up to the adapter count and what starts at the rank, and the count itself (a slot each)."""
    top = min(adapters, max_slots)
    return sorted({level for level in MAX_LORAS_LEVELS if min(4, top) <= level <= top} | {top})


def measure_mix_edge(profile: TwinProfile, lengths: LengthSpec, cover: int, shares: Sequence[float],
                     seeds: Sequence[int] = EDGE_SEEDS, arrival: ArrivalSpec = POISSON) -> MixEdge:
    """The starvation edge (module doc) of a GPU with ``max_lora_rank`` ``cover`` whose adapters (all of rank
    ``cover``) take ``shares`` of its load, arriving by ``arrival`` (Poisson by default).

    The first seed bisects the load; a load is served if some level of :func:`mix_levels` serves it. Levels
    are tried outward from the last one that served, up to :data:`SCAN_REACH` levels on each side, and a side
    is left once the served share has fallen twice in a row (it is unimodal in the level: too few slots wait
    for loads, too many slow every step). Each further seed bisects its own edge the same way, from a bracket
    :data:`SEED_SPREAD` either side of the first seed's.
    """
    shares = np.asarray(shares, float) / float(np.sum(shares))
    max_slots = MAX_LORAS_LEVELS[slot_caps(profile, MAX_LORAS_LEVELS)[cover] - 1]
    levels = mix_levels(len(shares), max_slots)
    best = [levels[len(levels) // 2]]

    def served(load_tok_s: float, level: int, seed: int) -> tuple[bool, float]:
        metrics = verify_mix(profile, lengths, cover, shares, level, load_tok_s, seed, arrival)
        return not metrics.starved, metrics.total_throughput / metrics.offered_throughput

    def passes(load_tok_s: float, seed: int, reach: int = SCAN_REACH) -> bool:
        at = levels.index(best[0])
        ok, share_at = served(load_tok_s, best[0], seed)
        for side in (-1, 1):
            previous, falls, k = share_at, 0, at + side
            while not ok and 0 <= k < len(levels) and abs(k - at) <= reach and falls < 2:
                ok, share = served(load_tok_s, levels[k], seed)
                if ok:
                    best[0] = levels[k]
                falls = falls + 1 if share < previous else 0
                previous, k = share, k + side
        return ok

    ceiling = 1.25 * saturated_throughput(profile, lengths, adapters=1, rank=cover, max_loras=1) / (
        1.0 - STARVATION_THRESHOLD)
    high = _log_bisect(lambda load: passes(load, seeds[0]), ceiling / 16, ceiling, MIX_EDGE_STEPS)
    first, level = high, best[0]
    for seed in seeds[1:]:
        high = max(high, _log_bisect(lambda load, s=seed: passes(load, s), first / SEED_SPREAD, first * SEED_SPREAD,
                                     SEED_STEPS))
    return MixEdge(high, level)


def _log_bisect(passes: Callable[[float], bool], low: float, high: float, steps: int) -> float:
    """The least load found failing ``passes``, bisecting ``[low, high]`` in log space (``high`` is widened
    while it passes, ``low`` narrowed while it fails)."""
    while passes(high):
        low, high = high, high * 2
    while not passes(low):
        low, high = low / 2, low
        if low < 1.0:
            return high
    for _ in range(steps):
        mid = math.sqrt(low * high)
        low, high = (mid, high) if passes(mid) else (low, mid)
    return high


@dataclass
class CapacityModel:
    """Per-GPU capacity of a profile at one length distribution.

    Attributes:
        profile: the twin profile.
        lengths: the workload's prompt/output length distribution.
        tokens_per_request: mean prompt + output tokens of one request.
        max_slots: per vLLM ``max_lora_rank``, the largest ``max_loras`` level that starts (0: none does).
    """

    profile: TwinProfile
    lengths: LengthSpec
    tokens_per_request: float = field(init=False)
    max_slots: dict[int, int] = field(init=False)
    _peak: dict[tuple[int, int], float] = field(default_factory=dict, repr=False)
    _edge: dict[tuple[int, int], float] = field(default_factory=dict, repr=False)
    _levels_seen: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.tokens_per_request = mean_request_tokens(self.lengths)
        self._edge.update(shipped_edges(self.profile, self.lengths))
        table = shipped_table(self.profile, self.lengths)
        if table is not None:
            mixes = calibration_mixes()
            for cover, row in table.mixes.items():
                features = [self._mix_features(mixes[name] * edge.load_tok_s) for name, edge in row.items()]
                self._levels_seen[cover] = (np.array(features), np.array([edge.max_loras for edge in row.values()]))
            self._peak.update(table.peaks)
        caps = slot_caps(self.profile, MAX_LORAS_LEVELS)
        self.max_slots = {r: MAX_LORAS_LEVELS[c - 1] if c else 0 for r, c in caps.items()}

    @staticmethod
    def grid_count(adapters: int) -> int:
        """The grid count a GPU holding ``adapters`` adapters is read at (the largest of :data:`COUNTS` <= it)."""
        return COUNTS[max(0, bisect.bisect_right(COUNTS, max(1, adapters)) - 1)]

    def peak_tok_s(self, rank: int, adapters: int = 1) -> float:
        """Saturated tokens/s of one GPU whose ``max_lora_rank`` covers ``rank`` holding ``adapters`` adapters."""
        cover, count = rank_cover(rank), self.grid_count(adapters)
        if (cover, count) not in self._peak:
            self._peak[(cover, count)] = max(
                saturated_throughput(self.profile, self.lengths, adapters=count, rank=cover, max_loras=level,
                                     duration_s=PEAK_WINDOW_S) for level in self._levels(cover, count))
        return self._peak[(cover, count)]

    def _levels(self, cover: int, count: int) -> list[int]:
        """The ``max_loras`` levels a GPU of ``count`` adapters is measured at (fewer slots too from
        :data:`FEWER_SLOTS_FROM` adapters on), within what starts at its rank."""
        cap = max(1, self.max_slots[cover])
        divisors = (1, 2, 4) if count >= FEWER_SLOTS_FROM else (1,)
        return sorted({min(count // d, cap) for d in divisors})

    def edge_tok_s(self, rank: int, adapters: int = 1) -> float:
        """The most offered tokens/s the twin serves without starving a GPU (``max_lora_rank`` covering
        ``rank``, ``adapters`` equal-rate adapters, the best of :meth:`_levels`, request draw 0) under placement
        verification, by bisection below ``peak / 0.9``, rounded up (the shipped table's ``edges``)."""
        cover, count = rank_cover(rank), self.grid_count(adapters)
        if (cover, count) not in self._edge:
            low, high = 0.5 * self.admissible_tok_s(cover, count), self.admissible_tok_s(cover, count)
            for _ in range(EDGE_STEPS):
                mid = (low + high) / 2
                served = any(not verify_mix(self.profile, self.lengths, cover, np.ones(count) / count, level,
                                            mid).starved for level in self._levels(cover, count))
                low, high = (mid, high) if served else (low, mid)
            self._edge[(cover, count)] = high
        return self._edge[(cover, count)]

    def best_level(self, cover: int, loads_tok_s: np.ndarray) -> int | None:
        """A ``max_loras`` likely to serve a GPU of rank class ``cover`` whose adapters are offered ``loads_tok_s``
        best near its edge: the median of the levels that served the :data:`LEVEL_NEIGHBOURS` most similar
        calibration mixes best (similar in adapters, adapters likely in the batch, load; log scales), but at least
        a slot for each adapter nearly always in the batch (one of those holds its slot, so with fewer slots the
        others wait for one that seldom frees); None without a shipped table for the class."""
        if cover not in self._levels_seen:
            return None
        features, levels = self._levels_seen[cover]
        distance = np.abs(features - self._mix_features(loads_tok_s)) @ np.array([0.5, 1.0, 1.0])
        rates = np.asarray(loads_tok_s) / self.tokens_per_request
        busy = int(np.sum(1.0 - np.exp(-rates * BATCH_RESIDENCE_S) >= BUSY_PRESENCE))
        level = max(float(np.median(levels[np.argsort(distance)[:LEVEL_NEIGHBOURS]])), busy)
        top = min(len(loads_tok_s), self.max_slots[cover])
        return min((m for m in {*MAX_LORAS_LEVELS, top} if min(busy, top) <= m <= top),
                   key=lambda m: abs(math.log(m / level)))

    def _mix_features(self, loads_tok_s: np.ndarray) -> np.ndarray:
        """log adapters, log adapters likely in the batch (:data:`BATCH_RESIDENCE_S`), log load."""
        rates = np.asarray(loads_tok_s) / self.tokens_per_request
        active = float(np.sum(1.0 - np.exp(-rates * BATCH_RESIDENCE_S)))
        return np.log([len(rates), max(active, 1.0), max(float(np.sum(loads_tok_s)), 1.0)])

    def admissible_tok_s(self, rank: int, adapters: int = 1) -> float:
        """The most offered tokens/s a GPU (``max_lora_rank`` covering ``rank``, ``adapters`` adapters) can take
        without starving at its saturated peak."""
        return self.peak_tok_s(rank, adapters) / (1.0 - STARVATION_THRESHOLD)

    def loads(self, workload: WorkloadSpec) -> np.ndarray:
        """Offered tokens/s of each adapter (rate x mean request tokens)."""
        return np.array([a.rate for a in workload.adapters]) * self.tokens_per_request

    def check_servable(self, workload: WorkloadSpec) -> None:
        """Reject an adapter no server of this profile can hold, even with one slot."""
        for a in workload.adapters:
            if a.rank > VLLM_MAX_LORA_RANKS[-1] or self.max_slots[rank_cover(a.rank)] == 0:
                raise WorkloadError(f"adapter {a.id!r}: rank {a.rank} does not start on this profile's GPU even "
                                    "with max_loras=1; drop it or use a larger GPU profile")


_MODELS: dict[tuple[str, LengthSpec], CapacityModel] = {}


def capacity_model(profile: TwinProfile, lengths: LengthSpec) -> CapacityModel:
    """The capacity model of (profile, lengths), built once per process (peaks are measured on first use)."""
    key = (json.dumps(profile.to_dict(), sort_keys=True, default=str), lengths)
    if key not in _MODELS:
        _MODELS[key] = CapacityModel(profile, lengths)
    return _MODELS[key]


def servable_model(profile: TwinProfile, workload: WorkloadSpec) -> CapacityModel:
    """The capacity model of ``workload``'s lengths, after refusing a workload no GPU can serve (one-line error)."""
    model = capacity_model(profile, workload.lengths)
    model.check_servable(workload)
    return model
