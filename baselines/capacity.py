"""What one GPU can serve, by its vLLM ``--max-lora-rank`` and how many adapters it holds: the capacity model
of the packing policies and of the lower bound.

``peak_tok_s(rank, adapters)`` is the twin's saturated throughput (prompt + output tokens/s) of one GPU of the
profile whose ``max_lora_rank`` covers ``rank``, serving ``adapters`` equal-rate adapters, at the best of a few
``max_loras`` levels (:func:`adaptergym.envs.common.saturated_throughput` over :data:`PEAK_WINDOW_S` simulated
seconds). It is measured at the adapter counts of :data:`COUNTS` and read at the largest grid count not above
the GPU's count: the twin's throughput falls as a GPU holds more adapters (every adapter in a batch adds step
time; fewer slots add loads), so the grid point bounds the counts up to the next one. A GPU is starved (the
papers' rule) when it serves less than 90% of what it is offered, so a starvation-free GPU is offered at most
``peak / 0.9``: :meth:`CapacityModel.admissible_tok_s`.

``edge_tok_s(rank, adapters)`` is what the lower bound uses instead: the largest offered load the twin serves
without starving such a GPU, judged as placement verification judges (:data:`VERIFY_DURATION_S`, the 90%
rule), found by bisection below ``peak / 0.9`` and rounded up. It is lower than ``peak / 0.9``, far lower with
many adapters: the peak is measured with a deep queue, where the scheduler keeps batching adapters that hold a
slot, while at the edge of starvation every adapter must be cycled through the slots
(``python examples/bound_tightness.py``). Edges cost about 35 s per rank class, so the default profile's
edges at ShareGPT lengths ship in ``adaptergym/data/capacity/`` (``python -m baselines.edge_table`` writes
them again); other profiles and lengths measure theirs on first use.

The model's one assumption: a GPU's adapters share its traffic about evenly. A GPU holding one very hot adapter
and many cold ones behaves like a GPU with fewer adapters, so it can exceed its count's peak.
"""

from __future__ import annotations

import bisect
import json
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from adaptergym.edges import shipped_edges
from adaptergym.envs.common import MAX_LORAS_LEVELS, mean_request_tokens, rank_cover, saturated_throughput, slot_caps
from adaptergym.errors import WorkloadError
from adaptergym.metrics import STARVATION_THRESHOLD
from adaptergym.placement import VERIFY_DURATION_S, GpuAssignment, verify_gpu
from adaptergym.profile import TwinProfile
from adaptergym.twin.config import VLLM_MAX_LORA_RANKS
from adaptergym.workload import AdapterSpec, LengthSpec, WorkloadSpec

#: Simulated seconds of each peak measurement (its second half is measured).
PEAK_WINDOW_S = 240.0
#: Adapter counts at which the peak is measured (a GPU's count is read down to the nearest).
COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
#: From this count on, fewer slots than adapters are tried too (count / 2, count / 4): at saturation they serve more.
FEWER_SLOTS_FROM = 16
#: Bisection steps of an edge measurement, between half of ``peak / 0.9`` and ``peak / 0.9`` (precision 1.6%).
EDGE_STEPS = 5


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

    def __post_init__(self) -> None:
        self.tokens_per_request = mean_request_tokens(self.lengths)
        self._edge.update(shipped_edges(self.profile, self.lengths))
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
        ``rank``, ``adapters`` equal-rate adapters, best level) under placement verification (module doc)."""
        cover, count = rank_cover(rank), self.grid_count(adapters)
        if (cover, count) not in self._edge:
            low, high = 0.5 * self.admissible_tok_s(cover, count), self.admissible_tok_s(cover, count)
            for _ in range(EDGE_STEPS):
                mid = (low + high) / 2
                served = any(self._served(cover, count, level, mid) for level in self._levels(cover, count))
                low, high = (mid, high) if served else (low, mid)
            self._edge[(cover, count)] = high
        return self._edge[(cover, count)]

    def _served(self, cover: int, count: int, max_loras: int, load_tok_s: float) -> bool:
        """Whether placement verification finds one GPU of ``count`` equal-rate adapters, offered
        ``load_tok_s`` at ``max_loras`` slots, free of starvation."""
        ids = tuple(f"edge-{i}" for i in range(count))
        rate = load_tok_s / self.tokens_per_request / count
        workload = WorkloadSpec(tuple(AdapterSpec(i, cover, rate) for i in ids), self.lengths,
                                duration_s=VERIFY_DURATION_S)
        return not verify_gpu(workload, GpuAssignment(0, ids, max_loras), Counter(ids), self.profile).starved

    def admissible_tok_s(self, rank: int, adapters: int = 1) -> float:
        """The most offered tokens/s a GPU (``max_lora_rank`` covering ``rank``, ``adapters`` adapters) can take
        without starving."""
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

