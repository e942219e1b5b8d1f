"""vLLM's API server ahead of the engine: when each request reaches the engine.

The API server takes requests one at a time. Resolving an adapter it has not seen lately holds it up for a while
(the runs measure about 0.3 s: the tail of their TTFTs, and the Prometheus scrapes a burst of first requests
blocks), and every request behind waits too; otherwise a request passes straight through. vLLM keeps the
adapters it resolved in an LRU cache of ``max(max_loras, max_num_seqs)`` entries. A warm-up that brings many
adapters' first requests close together therefore queues requests before they reach the engine, which the
engine cannot see but the clients' TTFT counts.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

import numpy as np

from adaptergym.workload.requests import RequestBatch


def through_api_server(requests: RequestBatch, new_adapter_ms: float, cache_size: int) -> RequestBatch:
    """``requests`` as the engine receives them: ``arrival_s`` when each reaches it, ``sent_s`` when it was sent
    (unchanged when resolving costs nothing)."""
    if new_adapter_ms <= 0 or len(requests) == 0:
        return requests
    service_s = _misses(requests.adapter, len(requests.adapter_ids), cache_size) * (new_adapter_ms / 1000.0)
    return dataclasses.replace(requests, arrival_s=fifo_departures(requests.arrival_s, service_s),
                               sent_s=requests.arrival_s)


def fifo_departures(arrival_s: np.ndarray, service_s: np.ndarray) -> np.ndarray:
    """Departures from one first-come-first-served server: ``d_i = max(a_i, d_(i-1)) + s_i``, which unrolls to
    ``S_i + max_(j<=i) (a_j - S_(j-1))`` with ``S`` the cumulative service."""
    total = np.cumsum(service_s)
    return total + np.maximum.accumulate(arrival_s - (total - service_s))


def _misses(adapter: np.ndarray, n_adapters: int, cache_size: int) -> np.ndarray:
    """1.0 for each request whose adapter is not among the ``cache_size`` most recently used, else 0.0."""
    miss = np.zeros(adapter.size)
    if n_adapters <= cache_size:  # nothing is ever evicted: only first requests miss
        miss[np.unique(adapter, return_index=True)[1]] = 1.0
        return miss
    cache: OrderedDict[int, None] = OrderedDict()
    for i, a in enumerate(adapter.tolist()):
        if a in cache:
            cache.move_to_end(a)
            continue
        miss[i] = 1.0
        cache[a] = None
        if len(cache) > cache_size:
            cache.popitem(last=False)
    return miss
