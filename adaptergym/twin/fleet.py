"""A fleet of replicas behind a router: the placement decides which replicas serve which adapter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from adaptergym.errors import ConfigError
from adaptergym.profile import TwinProfile
from adaptergym.twin.config import ServerConfig, default_rank
from adaptergym.twin.frameworks import Engine, new_engine
from adaptergym.twin.record import RunRecord
from adaptergym.twin.replica import check_lengths, check_ranks, failed_record, run_replica
from adaptergym.workload.requests import RequestBatch

ROUTERS = ("even", "least-loaded")


@dataclass(frozen=True, slots=True)
class ReplicaPlan:
    """One GPU of a placement: its server config and the adapters (ids) it serves."""

    config: ServerConfig
    adapters: tuple[str, ...]


def route_even(requests: RequestBatch, replicas: Sequence[ReplicaPlan]) -> list[np.ndarray]:
    """Split each adapter's requests round-robin over the replicas serving it; returns masks per replica."""
    index = {a: i for i, a in enumerate(requests.adapter_ids)}
    servers: list[list[int]] = [[] for _ in requests.adapter_ids]
    for r, plan in enumerate(replicas):
        for adapter in plan.adapters:
            if adapter not in index:
                raise ConfigError(f"replica {r}: adapter {adapter!r} is not in the workload")
            servers[index[adapter]].append(r)
    unserved = [requests.adapter_ids[i] for i, s in enumerate(servers) if not s]
    if unserved:
        raise ConfigError(f"placement: adapter(s) {unserved[:5]} are served by no replica; place every adapter")
    target = round_robin(requests.adapter, servers)
    return [target == r for r in range(len(replicas))]


def round_robin(adapter: np.ndarray, servers: Sequence[Sequence[int]], dealt: np.ndarray | None = None) -> np.ndarray:
    """Deal each adapter's requests, in order, to its servers in turn: the k-th to its (k mod n)-th server.

    Args:
        adapter: adapter index of each request.
        servers: per adapter, the replicas serving it (empty: its requests get -1).
        dealt: per adapter, requests dealt before (updated in place), so dealing in chunks continues the turn.
    """
    counts = np.bincount(adapter, minlength=len(servers))
    order = np.argsort(adapter, kind="stable")
    turn = np.empty(adapter.size, np.int64)
    turn[order] = np.arange(adapter.size) - np.repeat(np.cumsum(counts) - counts, counts)
    if dealt is not None:
        turn += dealt[adapter]
        dealt += counts
    n_servers = np.array([len(s) for s in servers], np.int64)
    table = np.full((len(servers), max(1, int(n_servers.max(initial=0)))), -1)
    for i, s in enumerate(servers):
        table[i, : len(s)] = s
    return table[adapter, turn % np.maximum(n_servers, 1)[adapter]]


def least_loaded(engines: Sequence[Engine], local_ids: Sequence[int], t: float) -> int:
    """Route one request arriving at ``t`` that every engine of ``engines`` holds (as ``local_ids[k]`` in engine
    k) to the one with the fewest outstanding requests at ``t``: run each to ``t`` and exclude it from the
    others. Returns the chosen engine's position."""
    for engine in engines:
        engine.run_until(t)
    chosen = min(range(len(engines)), key=lambda k: engines[k].n_outstanding)
    for k, engine in enumerate(engines):
        if k != chosen:
            engine.exclude(local_ids[k])
    return chosen


def simulate_fleet(
    profile: TwinProfile, requests: RequestBatch, replicas: Sequence[ReplicaPlan], router: str = "even"
) -> list[RunRecord]:
    """One simulation of every replica; returns one record per replica (same order as ``replicas``)."""
    if router not in ROUTERS:
        raise ConfigError(f"router: {router!r} is not one of {', '.join(ROUTERS)}")
    masks = route_even(requests, replicas)
    configs = [default_rank(plan.config, requests.adapter_ranks[np.unique(requests.adapter[m])]).resolved(profile)
               for plan, m in zip(replicas, masks, strict=True)]
    for config, mask in zip(configs, masks, strict=True):
        check_ranks(requests, config, np.unique(requests.adapter[mask]))
        check_lengths(requests, config, mask)
    if router == "even" or requests.drain:
        return [run_replica(profile, c, requests.subset(m)) for c, m in zip(configs, masks, strict=True)]
    return _least_loaded(profile, requests, replicas, configs)


def _least_loaded(
    profile: TwinProfile, requests: RequestBatch, replicas: Sequence[ReplicaPlan], configs: list[ServerConfig]
) -> list[RunRecord]:
    """Route each request, at its arrival, to the serving replica with the fewest outstanding requests."""
    index = {a: i for i, a in enumerate(requests.adapter_ids)}
    servers: list[list[int]] = [[] for _ in requests.adapter_ids]
    for r, plan in enumerate(replicas):
        for adapter in plan.adapters:
            servers[index[adapter]].append(r)
    candidates = [np.isin(requests.adapter, [i for i, s in enumerate(servers) if r in s])
                  for r in range(len(replicas))]
    subsets = [requests.subset(m) for m in candidates]
    local_ids = [np.cumsum(m) - 1 for m in candidates]
    engines: list[Engine | None] = [new_engine(profile, c, s) for c, s in zip(configs, subsets, strict=True)]
    for rid in np.flatnonzero(np.array([len(servers[a]) > 1 for a in requests.adapter.tolist()])).tolist():
        t = float(requests.arrival_s[rid])
        group = servers[int(requests.adapter[rid])]
        live = [r for r in group if engines[r] is not None]
        if live:
            least_loaded([engines[r] for r in live], [int(local_ids[r][rid]) for r in live], t)
    records = []
    for r, engine in enumerate(engines):
        if engine is None:
            records.append(failed_record(profile, configs[r], subsets[r], requests.duration_s))
        else:
            engine.run_until(requests.duration_s)
            records.append(engine.record(requests.duration_s))
    return records
