"""vLLM's waiting queue, organised so that skipping requests of adapters without a free slot costs nothing.

Order is FCFS by request id, with preempted requests in front (most recently preempted first). vLLM walks the
queue and skips a request whose adapter would exceed ``max_loras`` distinct adapters in the batch. Keeping one
FIFO per adapter plus a heap of their heads gives the same order without walking past skipped requests.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Sequence

NO_HEAD = 1 << 62


class WaitingQueue:
    """Preempted requests first, then per-adapter FIFOs merged by request id."""

    def __init__(self, n_adapters: int) -> None:
        self.preempted: deque[int] = deque()
        self._fifo: list[deque[int]] = [deque() for _ in range(n_adapters)]
        self._head = [NO_HEAD] * n_adapters
        self._heap: list[tuple[int, int]] = []  # (head id, adapter); stale entries are skipped lazily
        self.fresh = 0
        self.last_position = -1

    def __len__(self) -> int:
        return len(self.preempted) + self.fresh

    def add_adapters(self, count: int) -> None:
        self._fifo += [deque() for _ in range(count)]
        self._head += [NO_HEAD] * count

    def push(self, rids: Iterable[int], adapter_of: Sequence[int]) -> None:
        """Append newly arrived requests (ids increasing)."""
        fifo, head, heap = self._fifo, self._head, self._heap
        for rid in rids:
            adapter = adapter_of[rid]
            queue = fifo[adapter]
            if not queue:
                head[adapter] = rid
                heapq.heappush(heap, (rid, adapter))
            queue.append(rid)
            self.fresh += 1

    def push_preempted(self, rids_newest_last: Sequence[int]) -> None:
        """Put preempted requests in front; vLLM preempts newest first, so the oldest ends up first in line."""
        self.preempted.extendleft(reversed(rids_newest_last))

    def peek(self, adapter_of: Sequence[int], run_count: Sequence[int], active: set[int], max_loras: int) -> int:
        """Id of the request vLLM would admit next (skipping adapters without a slot), or -1.

        ``last_position`` records where it was found (its index among preempted requests, or -1) for :meth:`take`.
        """
        free_slot = len(active) < max_loras
        for position, rid in enumerate(self.preempted):
            if free_slot or run_count[adapter_of[rid]] > 0:
                self.last_position = position
                return rid
        self.last_position = -1
        if free_slot:
            heap, head = self._heap, self._head
            while heap and heap[0][0] != head[heap[0][1]]:
                heapq.heappop(heap)
            return heap[0][0] if heap else -1
        if not active:
            return -1
        rid = min(map(self._head.__getitem__, active))  # C-level loop: this runs once per admission attempt
        return rid if rid != NO_HEAD else -1

    def take(self, rid: int, adapter: int) -> None:
        """Remove the request :meth:`peek` just returned."""
        if self.last_position >= 0:
            del self.preempted[self.last_position]
            return
        queue = self._fifo[adapter]
        queue.popleft()
        self.fresh -= 1
        if queue:
            self._head[adapter] = queue[0]
            heapq.heappush(self._heap, (queue[0], adapter))
        else:
            self._head[adapter] = NO_HEAD
