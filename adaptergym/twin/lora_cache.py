"""LoRA adapter residency: GPU slots and the CPU cache, with vLLM's LRU order, and what loading costs.

vLLM's worker applies the batch's adapters every step, one after the other in the iteration order of a set of
LoRA requests (their names' hashes: a fixed, pseudo-random order), and each one it visits becomes the most
recently used. An adapter that is not resident is loaded (from disk into the CPU cache if it is not there, then
copied into a GPU slot), evicting the least recently used adapter of that tier, whether or not it is in the
batch. When every slot holds an adapter of the previous step's batch, the least recently used one can be an
adapter still in the batch that the walk has not reached yet: it is evicted, and reloaded when the walk reaches
it, evicting the next one; such a cascade runs on until it evicts the adapter that left the batch. The whole
batch waits for every copy (the loads run before the step's forward pass).

A runtime load between two steps (vLLM's ``add_lora``) evicts the least recently used adapter of each full
tier, one of the running batch when the tier holds no other; vLLM's next step makes the whole batch resident
again (its worker applies the batch's adapters every step), so that step walks the batch even if no adapter
enters it, and pays the evicted adapter's reload.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Sequence

import numpy as np

from adaptergym.profile import LoadTimeModel

NEVER = -1 << 62
RecencyHeap = list[tuple[tuple[bool, int, int, int], int]]  # ((spare, recency, runtime load, visit order), adapter)


def load_ms_by_rank(table: dict[str, float], ranks: np.ndarray) -> np.ndarray:
    """Interpolate a rank -> ms table (linear between measured ranks, flat outside)."""
    known = sorted((int(r), float(ms)) for r, ms in table.items())
    return np.interp(ranks, [r for r, _ in known], [ms for _, ms in known])


def visit_order(adapter_id: str) -> int:
    """Where vLLM's per-step walk visits an adapter: a hash of its name, like the set it iterates."""
    return int.from_bytes(hashlib.blake2b(adapter_id.encode(), digest_size=8).digest(), "little")


class LoraCache:
    """GPU slots (``max_loras``) backed by a CPU cache (``max_cpu_loras``), each least-recently-used.

    The engine reports when an adapter enters the running batch (:meth:`enter`) and when it leaves
    (:meth:`leave`); in a step where an entering adapter is not on the GPU, or after a runtime :meth:`load`
    evicted an adapter of the batch (:attr:`must_reload`), it asks :meth:`apply` for the load time of the step's
    walk over the batch. An adapter's recency is the last step it was in a batch, ties broken by the walk's
    order; adapters in the batch are touched every step without being told, and an adapter loaded at runtime is
    more recent than the batch of the step before its load.
    """

    def __init__(self, max_loras: int, max_cpu_loras: int, ranks: np.ndarray, loading: LoadTimeModel,
                 adapter_ids: Sequence[str]) -> None:
        self.max_loras = max_loras
        self.max_cpu_loras = max_cpu_loras
        self._gpu: set[int] = set()
        self._cpu: set[int] = set()
        self._loading = loading
        self._cpu_to_gpu_ms = load_ms_by_rank(loading.cpu_to_gpu_ms, ranks).tolist()
        self._disk_to_cpu_ms = load_ms_by_rank(loading.disk_to_cpu_ms, ranks).tolist()
        self._order = [visit_order(a) for a in adapter_ids]
        self._entered = [NEVER] * len(adapter_ids)  # step at which the adapter last entered the batch
        self._left = [NEVER] * len(adapter_ids)  # last step the adapter was in a batch, once it has left
        self._loaded = [0] * len(adapter_ids)  # the runtime load that touched it since (numbered from 1), or 0
        self._loads = 0
        self.must_reload = False  # a load evicted, or an unload dropped, an adapter of the batch: the next step walks
        self.loads_from_disk = 0
        self.loads_from_cpu = 0

    @property
    def cached(self) -> int:
        """Adapters held in the CPU cache (vLLM's registered adapters)."""
        return len(self._cpu)

    def enter(self, adapter: int, step: int) -> bool:
        """``adapter`` joins the batch of ``step``; True when it is not on the GPU (the step must :meth:`apply`)."""
        self._entered[adapter] = step
        self._loaded[adapter] = 0
        return adapter not in self._gpu

    def leave(self, adapter: int, last_step: int) -> None:
        """``adapter`` has no request left in the batch; ``last_step`` is the last step it was in."""
        self._left[adapter] = last_step

    def apply(self, batch: set[int], step: int) -> float:
        """vLLM's walk over the adapters of ``step``'s batch: load what is not resident; the load time in ms."""
        walk = sorted(batch, key=lambda a: (self._order[a], a))  # an index breaks a (never seen) hash tie
        cost = self._walk(walk, batch, step, set())
        self.must_reload = False  # the walk made the whole batch resident
        return cost

    def load(self, adapter: int, batch: set[int], step: int) -> float:
        """vLLM's runtime ``load_lora_adapter`` between two steps (``step`` is the next one, ``batch`` the running
        adapters): into the CPU cache (from disk if not there), then into a GPU slot. In each full tier it evicts
        the least recently used adapter outside the batch, or of the batch when the tier holds no other (then
        :attr:`must_reload` is set). It becomes the most recently used adapter. Returns the load time spent now,
        ms."""
        if adapter in self._gpu:
            return 0.0
        self._left[adapter] = step - 1
        self._loads += 1
        self._loaded[adapter] = self._loads
        return self._walk([adapter], batch, step, set(), spare=batch)

    def _walk(self, adapters: Sequence[int], batch: set[int], step: int, touched: set[int],
              spare: set[int] = frozenset()) -> float:
        """Make ``adapters`` resident in turn, each evicting the least recently used adapter of a full tier that
        is not ``touched`` (those already walked), ``spare`` ones only when the tier holds no other; ms. Evicting
        an adapter of ``batch`` sets :attr:`must_reload` (a walk over the batch reloads it before it ends)."""
        cost = 0.0
        gpu_heap: RecencyHeap | None = None
        cpu_heap: RecencyHeap | None = None
        for adapter in adapters:
            if adapter not in self._cpu:
                cost += self._disk_to_cpu_ms[adapter]
                self.loads_from_disk += 1
                if len(self._cpu) >= self.max_cpu_loras:
                    cpu_heap = cpu_heap or self._by_recency(self._cpu, batch, step, spare)
                    victim = _pop_untouched(cpu_heap, self._cpu, touched)
                    self._cpu.discard(victim)
                    self._gpu.discard(victim)
                    self.must_reload |= victim in batch
                self._cpu.add(adapter)
            if adapter not in self._gpu:
                cost += self._cpu_to_gpu_ms[adapter]
                self.loads_from_cpu += 1
                if len(self._gpu) >= self.max_loras:
                    gpu_heap = gpu_heap or self._by_recency(self._gpu, batch, step, spare)
                    victim = _pop_untouched(gpu_heap, self._gpu, touched)
                    self._gpu.discard(victim)
                    self.must_reload |= victim in batch
                self._gpu.add(adapter)
            touched.add(adapter)
        return cost

    def _by_recency(self, tier: set[int], batch: set[int], step: int,
                    spare: set[int]) -> RecencyHeap:
        """A heap of ``tier``'s adapters, ``spare`` ones last, then least recently used first, as the walk of
        ``step`` begins: those in the previous step's batch were touched then; the others when they were last in
        a batch, or just after it if a runtime load touched them since (later loads later)."""
        entered, left, loaded, order = self._entered, self._left, self._loaded, self._order
        heap = [((a in spare, step - 1, 0, order[a]) if a in batch and entered[a] < step
                 else (a in spare, left[a], loaded[a], order[a]), a) for a in tier]
        heapq.heapify(heap)
        return heap

    def add_adapter(self, adapter_id: str, rank: int) -> None:
        """Know the load costs of one more adapter (index = the next one), for adapters added online."""
        rank_arr = np.array([rank])
        self._cpu_to_gpu_ms.append(float(load_ms_by_rank(self._loading.cpu_to_gpu_ms, rank_arr)[0]))
        self._disk_to_cpu_ms.append(float(load_ms_by_rank(self._loading.disk_to_cpu_ms, rank_arr)[0]))
        self._order.append(visit_order(adapter_id))
        self._entered.append(NEVER)
        self._left.append(NEVER)
        self._loaded.append(0)

    def discard(self, adapter: int, batch: set[int]) -> None:
        """Forget ``adapter`` in GPU slots and CPU cache (vLLM's ``remove_lora``): its next use loads from disk, the
        next step's if it is in the running ``batch`` (:attr:`must_reload`)."""
        self._gpu.discard(adapter)
        self._cpu.discard(adapter)
        self.must_reload |= adapter in batch


def _pop_untouched(heap: RecencyHeap, tier: set[int], touched: set[int]) -> int:
    """The least recently used adapter of ``tier`` that the walk has not touched yet."""
    while True:
        _, adapter = heapq.heappop(heap)
        if adapter in tier and adapter not in touched:
            return adapter
