"""vLLM's API server ahead of the engine: hand-computed queues of requests held up by new adapters."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from adaptergym import ServerConfig, simulate
from adaptergym.twin.frontend import ApiServer, fifo_departures, through_api_server
from adaptergym.workload import RequestBatch
from tests.conftest import toy_profile


def requests(arrivals, adapters, n_adapters=3) -> RequestBatch:
    n = len(arrivals)
    return RequestBatch(np.asarray(arrivals, float), np.asarray(adapters, np.int64), np.full(n, 100),
                        np.full(n, 3), tuple(f"a{i}" for i in range(n_adapters)), np.full(n_adapters, 16), 10.0)


def test_requests_queue_behind_a_new_adapter_in_arrival_order():
    # a0 at 0 (new: 0.3 s), a1 at 0.1 (new, waits for a0: leaves at 0.6), a0 again at 0.15 (known: passes as soon
    # as the server is free, 0.6), a2 at 0.2 (new: 0.9), a1 at 2.0 (known, server idle: straight through).
    batch = through_api_server(requests([0.0, 0.1, 0.15, 0.2, 2.0], [0, 1, 0, 2, 1]), ApiServer(300.0, cache_size=8))
    assert batch.arrival_s == pytest.approx([0.3, 0.6, 0.6, 0.9, 2.0])
    assert batch.sent_s.tolist() == [0.0, 0.1, 0.15, 0.2, 2.0]


def test_an_adapter_evicted_from_the_servers_cache_is_new_again():
    # With room for one adapter, a0 - a1 - a0 misses three times; a0 - a0 once.
    batch = through_api_server(requests([0.0, 1.0, 2.0, 3.0], [0, 1, 0, 0]), ApiServer(300.0, cache_size=1))
    assert batch.arrival_s == pytest.approx([0.3, 1.3, 2.3, 3.0])


def test_fifo_departures_match_the_recursion():
    rng = np.random.default_rng(0)
    arrival = np.cumsum(rng.exponential(1.0, 500))
    service = rng.exponential(0.9, 500) * (rng.random(500) < 0.5)
    expected, last = [], -np.inf
    for a, s in zip(arrival, service, strict=True):
        last = max(a, last) + s
        expected.append(last)
    assert fifo_departures(arrival, service) == pytest.approx(expected)


def test_ttft_counts_from_when_the_client_sent_the_request():
    base = toy_profile()
    slow = dataclasses.replace(base, loading=dataclasses.replace(base.loading, api_server_new_adapter_ms=300.0))
    config = ServerConfig(max_loras=1, max_lora_rank=16)
    one = requests([1.0], [0], n_adapters=1)
    assert simulate(one, slow, config).mean_ttft_ms == pytest.approx(simulate(one, base, config).mean_ttft_ms + 300.0)


def test_a_server_fed_batch_by_batch_keeps_its_queue_and_its_lru():
    # After a0 at 0 and a1 at 0.1 (free at 0.6), a0 at 0.5 waits for the queue and passes at 0.6; a2 at 0.55
    # is new (0.9). Resolved up front, a2 would pass at 0.6 too.
    server = ApiServer(300.0, cache_size=8)
    assert server.departures(np.array([0.0, 0.1]), np.array([0, 1])) == pytest.approx([0.3, 0.6])
    assert server.departures(np.array([0.5, 0.55]), np.array([0, 2])) == pytest.approx([0.6, 0.9])
    warm = ApiServer(300.0, cache_size=8, resolved=[0, 1, 2])
    assert warm.departures(np.array([0.5, 0.55]), np.array([0, 2])).tolist() == [0.5, 0.55]


@pytest.mark.parametrize("cache_size", [2, 5, 16])  # evicting, in some batches, never
def test_departures_batch_by_batch_are_those_of_one_batch(cache_size):
    rng = np.random.default_rng(1)
    arrival, adapter = np.cumsum(rng.exponential(0.2, 400)), rng.integers(0, 6, 400)
    whole = ApiServer(300.0, cache_size).departures(arrival, adapter)
    server = ApiServer(300.0, cache_size)
    parts = [server.departures(arrival[a:b], adapter[a:b]) for a, b in ((0, 7), (7, 150), (150, 151), (151, 400))]
    assert np.concatenate(parts) == pytest.approx(whole, abs=1e-9)
