"""vLLM's waiting queue, organised so that skipping requests of adapters without a free slot costs nothing.

Order is FCFS by request id, with preempted requests in front (most recently preempted first). vLLM walks the
queue and skips a request whose adapter would exceed ``max_loras`` distinct adapters in the batch. Keeping one
FIFO per adapter plus a heap of their heads gives the same order without walking past skipped requests; a second
heap holds the heads of adapters in the running batch, for when every slot is taken. The walk itself costs
vLLM CPU time per skipped request, so the queue also counts the requests such a walk would pass over.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Sequence

NO_HEAD = 1 << 62


class WaitingQueue:
    """Preempted requests first, then per-adapter FIFOs merged by request id.

    ``active`` is the engine's set of adapters in the running batch (shared, not copied); the engine calls
    :meth:`activate` when an adapter enters it.
    """

    def __init__(self, n_adapters: int, active: set[int]) -> None:
        self.preempted: deque[int] = deque()
        self._fifo: list[deque[int]] = [deque() for _ in range(n_adapters)]
        self._head = [NO_HEAD] * n_adapters
        self._active = active
        # Heaps of (head id, adapter); entries whose head moved on (or whose adapter left the batch, for the
        # second) are stale and skipped lazily.
        self._heap: list[tuple[int, int]] = []
        self._active_heap: list[tuple[int, int]] = []
        self.fresh = 0
        self._fresh_of_active = 0  # fresh requests whose adapter is in the running batch
        self.last_position = -1

    def __len__(self) -> int:
        return len(self.preempted) + self.fresh

    def skipped(self, max_loras: int) -> int:
        """Requests vLLM's walk over the queue skips when every slot is taken: those of adapters outside the
        batch (preempted requests, few and in front, are not counted)."""
        return self.fresh - self._fresh_of_active if len(self._active) >= max_loras else 0

    def add_adapters(self, count: int) -> None:
        self._fifo += [deque() for _ in range(count)]
        self._head += [NO_HEAD] * count

    def _new_head(self, adapter: int, rid: int) -> None:
        self._head[adapter] = rid
        heapq.heappush(self._heap, (rid, adapter))
        if adapter in self._active:
            heapq.heappush(self._active_heap, (rid, adapter))

    def activate(self, adapter: int) -> None:
        """``adapter`` just entered the running batch: its head becomes a candidate when no slot is free."""
        self._fresh_of_active += len(self._fifo[adapter])
        if self._head[adapter] != NO_HEAD:
            heapq.heappush(self._active_heap, (self._head[adapter], adapter))

    def deactivate(self, adapter: int) -> None:
        """``adapter`` just left the running batch."""
        self._fresh_of_active -= len(self._fifo[adapter])

    def push(self, rids: Iterable[int], adapter_of: Sequence[int]) -> None:
        """Append newly arrived requests (ids increasing)."""
        fifo, active = self._fifo, self._active
        for rid in rids:
            adapter = adapter_of[rid]
            queue = fifo[adapter]
            if not queue:
                self._new_head(adapter, rid)
            queue.append(rid)
            self.fresh += 1
            self._fresh_of_active += adapter in active

    def take_adapter(self, adapter: int) -> list[int]:
        """Remove every fresh (never started) request of ``adapter``; returns their ids, oldest first.
        Preempted requests stay: they are in flight."""
        queue = self._fifo[adapter]
        rids = list(queue)
        queue.clear()
        self.fresh -= len(rids)
        if adapter in self._active:
            self._fresh_of_active -= len(rids)
        self._head[adapter] = NO_HEAD  # its heap entries are stale now, and skipped
        return rids

    def push_preempted(self, rids_newest_last: Sequence[int]) -> None:
        """Put preempted requests in front; vLLM preempts newest first, so the oldest ends up first in line."""
        self.preempted.extendleft(reversed(rids_newest_last))

    def peek(self, adapter_of: Sequence[int], max_loras: int) -> int:
        """Id of the request vLLM would admit next (skipping adapters without a slot), or -1.

        ``last_position`` records where it was found (its index among preempted requests, or -1) for :meth:`take`.
        """
        active, head = self._active, self._head
        free_slot = len(active) < max_loras
        for position, rid in enumerate(self.preempted):
            if free_slot or adapter_of[rid] in active:
                self.last_position = position
                return rid
        self.last_position = -1
        if free_slot:
            heap = self._heap
            while heap and heap[0][0] != head[heap[0][1]]:
                heapq.heappop(heap)
        else:
            heap = self._active_heap
            while heap and (heap[0][1] not in active or heap[0][0] != head[heap[0][1]]):
                heapq.heappop(heap)
        return heap[0][0] if heap else -1

    def take(self, rid: int, adapter: int) -> None:
        """Remove the request :meth:`peek` just returned."""
        if self.last_position >= 0:
            del self.preempted[self.last_position]
            return
        queue = self._fifo[adapter]
        queue.popleft()
        self.fresh -= 1
        self._fresh_of_active -= adapter in self._active
        if queue:
            self._new_head(adapter, queue[0])
        else:
            self._head[adapter] = NO_HEAD
