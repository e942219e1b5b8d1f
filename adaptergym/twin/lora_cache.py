"""LoRA adapter residency: GPU slots and the CPU cache, both LRU, and what a load costs."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from adaptergym.profile import LoadTimeModel


def load_ms_by_rank(table: dict[str, float], ranks: np.ndarray) -> np.ndarray:
    """Interpolate a rank -> ms table (linear between measured ranks, flat outside)."""
    known = sorted((int(r), float(ms)) for r, ms in table.items())
    return np.interp(ranks, [r for r, _ in known], [ms for _, ms in known])


class LoraCache:
    """GPU slots (``max_loras``) backed by a CPU cache (``max_cpu_loras``), like vLLM's LRU worker manager.

    Activating an adapter that is not on the GPU evicts the least recently used GPU adapter that is not in
    the running batch and copies it from CPU (loading it from disk first if it is not cached in CPU memory).
    """

    def __init__(self, max_loras: int, max_cpu_loras: int, ranks: np.ndarray, loading: LoadTimeModel) -> None:
        self.max_loras = max_loras
        self.max_cpu_loras = max_cpu_loras
        self._gpu: OrderedDict[int, None] = OrderedDict()
        self._cpu: OrderedDict[int, None] = OrderedDict()
        self._loading = loading
        self._cpu_to_gpu_ms = load_ms_by_rank(loading.cpu_to_gpu_ms, ranks).tolist()
        self._disk_to_cpu_ms = load_ms_by_rank(loading.disk_to_cpu_ms, ranks).tolist()
        self.loads_from_disk = 0
        self.loads_from_cpu = 0

    def activate(self, adapter: int, in_batch: list[int]) -> float:
        """Make ``adapter`` resident on the GPU; return the load time in ms (0 if already there).

        Args:
            adapter: adapter index.
            in_batch: per-adapter count of running requests (adapters with a count > 0 are never evicted).
        """
        if adapter in self._gpu:
            self._gpu.move_to_end(adapter)
            self._cpu.move_to_end(adapter)
            return 0.0
        cost = self._to_cpu(adapter, in_batch) + self._cpu_to_gpu_ms[adapter]
        self.loads_from_cpu += 1
        if len(self._gpu) >= self.max_loras:
            self._evict(self._gpu, in_batch)
        self._gpu[adapter] = None
        return cost

    def load(self, adapter: int, in_batch: list[int]) -> float:
        """Load ``adapter`` now, as vLLM's runtime ``load_lora_adapter`` does: into the CPU cache (from disk if
        not there) and into a GPU slot, unless every slot holds an adapter of the running batch (then it is
        copied to the GPU when first scheduled, as usual). Returns the load time spent now, ms."""
        slot_free = len(self._gpu) < self.max_loras or any(in_batch[a] == 0 for a in self._gpu)
        return self.activate(adapter, in_batch) if slot_free else self._to_cpu(adapter, in_batch)

    def _to_cpu(self, adapter: int, in_batch: list[int]) -> float:
        """Make ``adapter`` resident in CPU memory; return the disk load time in ms (0 if already there)."""
        if adapter in self._cpu:
            self._cpu.move_to_end(adapter)
            return 0.0
        self.loads_from_disk += 1
        if len(self._cpu) >= self.max_cpu_loras:
            self._evict(self._cpu, in_batch, also=self._gpu)
        self._cpu[adapter] = None
        return self._disk_to_cpu_ms[adapter]

    def add_adapter(self, rank: int) -> None:
        """Know the load costs of one more adapter (index = the next one), for adapters added online."""
        rank_arr = np.array([rank])
        self._cpu_to_gpu_ms.append(float(load_ms_by_rank(self._loading.cpu_to_gpu_ms, rank_arr)[0]))
        self._disk_to_cpu_ms.append(float(load_ms_by_rank(self._loading.disk_to_cpu_ms, rank_arr)[0]))

    def discard(self, adapter: int) -> None:
        """Forget ``adapter`` in GPU slots and CPU cache (vLLM's ``remove_lora``): its next use loads from disk."""
        self._gpu.pop(adapter, None)
        self._cpu.pop(adapter, None)

    @staticmethod
    def _evict(cache: OrderedDict[int, None], in_batch: list[int], also: OrderedDict | None = None) -> None:
        victim = next((a for a in cache if in_batch[a] == 0), next(iter(cache)))
        del cache[victim]
        if also is not None:
            also.pop(victim, None)
