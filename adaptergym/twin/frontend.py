"""vLLM's API server ahead of the engine: when each request reaches the engine.

The API server takes requests one at a time. Resolving an adapter it has not seen lately holds it up for a while
(the runs measure about 0.3 s: the tail of their TTFTs, and the Prometheus scrapes a burst of first requests
blocks), and every request behind waits too; otherwise a request passes straight through. vLLM keeps the
adapters it resolved in an LRU cache of ``max(max_loras, max_num_seqs)`` entries (its per-adapter tokenizer
cache, which a runtime ``/v1/load_lora_adapter`` does not fill). A warm-up that brings many adapters' first
requests close together therefore queues requests before they reach the engine, which the engine cannot see but
the clients' TTFT counts.

:class:`ApiServer` is one server's state (its LRU and when its queue frees), fed batch by batch: a static run
passes its whole request batch through a new one (:func:`through_api_server`); a fleet whose plan changes
(``adaptergym.twin.online_fleet``) keeps one per serving replica and passes each request as it is routed; the
twin server (``adaptergym.serving.driver``) keeps one, started cold, and passes each request as it is submitted.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Iterable

import numpy as np

from adaptergym.workload.requests import RequestBatch


class ApiServer:
    """One vLLM API server: a first-come-first-served queue whose requests of an adapter it has not resolved
    lately hold it up.

    Args:
        new_adapter_ms: the hold-up of such a request, ms (the profile's ``loading.api_server_new_adapter_ms``;
            0: requests pass straight through).
        cache_size: how many adapters it keeps resolved (vLLM: ``max(max_loras, max_num_seqs)``).
        resolved: adapters (indices) resolved before its first request, least recent first: a server that was
            up before the simulation began.
    """

    def __init__(self, new_adapter_ms: float, cache_size: int, resolved: Iterable[int] = ()) -> None:
        self.hold_s = new_adapter_ms / 1000.0
        self.cache_size = cache_size
        self.free_s = -math.inf  # when the request last passed left it
        self._recent: OrderedDict[int, None] = OrderedDict()  # resolved adapters, least recent first
        for adapter in resolved:
            self._resolve(int(adapter))

    @property
    def holds(self) -> bool:
        """Whether a new adapter holds it up at all."""
        return self.hold_s > 0

    def departures(self, arrival_s: np.ndarray, adapter: np.ndarray) -> np.ndarray:
        """When requests reaching the server at ``arrival_s`` (in the order it takes them, after those passed
        before) with adapters ``adapter`` leave it for the engine; ``arrival_s`` itself when it holds nothing up."""
        if not self.holds or arrival_s.size == 0:
            return arrival_s
        departures = fifo_departures(arrival_s, self._misses(adapter) * self.hold_s, self.free_s)
        self.free_s = float(departures[-1])
        return departures

    def _misses(self, adapter: np.ndarray) -> np.ndarray:
        """1.0 for each request whose adapter is not among the ``cache_size`` most recently resolved, else 0.0;
        each request resolves its adapter."""
        miss = np.zeros(adapter.size)
        used, first, last = first_and_last(adapter)
        if len(self._recent.keys() | set(used.tolist())) <= self.cache_size:  # nothing is evicted
            miss[first[~np.isin(used, list(self._recent))]] = 1.0
            for a in used[np.argsort(last)].tolist():  # least recently used first
                self._resolve(a)
            return miss
        for i, a in enumerate(adapter.tolist()):
            miss[i] = self._resolve(a)
        return miss

    def _resolve(self, adapter: int) -> bool:
        """Make ``adapter`` the most recently resolved; True when it was not among the recently resolved."""
        if adapter in self._recent:
            self._recent.move_to_end(adapter)
            return False
        self._recent[adapter] = None
        if len(self._recent) > self.cache_size:
            self._recent.popitem(last=False)
        return True


def first_and_last(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct ``values`` (ascending) and where each first and last occurs, from one stable sort: a radix
    sort for adapter indices below 2**16, several times faster than ``np.unique`` on a million requests."""
    small = values.size and values.min() >= 0 and values.max() < 1 << 16
    order = np.argsort(values.astype(np.uint16) if small else values, kind="stable")
    ranked = values[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    ends = np.r_[starts[1:], ranked.size] - 1
    return ranked[starts], order[starts], order[ends]


def through_api_server(requests: RequestBatch, server: ApiServer) -> RequestBatch:
    """``requests`` as the engine receives them after ``server``: ``arrival_s`` when each reaches it, ``sent_s``
    when it was sent (unchanged when the server holds nothing up)."""
    if not server.holds or len(requests) == 0:
        return requests
    return dataclasses.replace(requests, arrival_s=server.departures(requests.arrival_s, requests.adapter),
                               sent_s=requests.arrival_s)


def fifo_departures(arrival_s: np.ndarray, service_s: np.ndarray, free_s: float = -math.inf) -> np.ndarray:
    """Departures from one first-come-first-served server free from ``free_s`` on: ``d_i = max(a_i, d_(i-1)) +
    s_i`` with ``d_(-1) = free_s``, which unrolls to ``S_i + max(free_s, max_(j<=i) (a_j - S_(j-1)))`` with ``S``
    the cumulative service."""
    total = np.cumsum(service_s)
    return total + np.maximum(np.maximum.accumulate(arrival_s - (total - service_s)), free_s)
