"""A fleet of replicas behind a router: the placement decides which replicas serve which adapter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from adaptergym.errors import ConfigError
from adaptergym.profile import TwinProfile
from adaptergym.twin.config import ServerConfig, default_rank
from adaptergym.twin.engine import ReplicaEngine
from adaptergym.twin.record import RunRecord
from adaptergym.twin.replica import check_lengths, check_ranks, failed_record, new_engine, run_replica
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
    # k-th request of an adapter goes to its (k mod n_servers)-th replica.
    order = np.argsort(requests.adapter, kind="stable")
    rank_within = np.empty(len(requests), np.int64)
    counts = np.bincount(requests.adapter, minlength=len(servers))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank_within[order] = np.arange(len(requests)) - np.repeat(starts, counts)
    n_servers = np.array([len(s) for s in servers])
    width = n_servers.max()
    table = np.full((len(servers), width), -1)
    for i, s in enumerate(servers):
        table[i, : len(s)] = s
    target = table[requests.adapter, rank_within % n_servers[requests.adapter]]
    return [target == r for r in range(len(replicas))]


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
    engines: list[ReplicaEngine | None] = [new_engine(profile, c, s) for c, s in zip(configs, subsets, strict=True)]
    for rid in np.flatnonzero(np.array([len(servers[a]) > 1 for a in requests.adapter.tolist()])).tolist():
        t = float(requests.arrival_s[rid])
        group = servers[int(requests.adapter[rid])]
        live = [r for r in group if engines[r] is not None]
        for r in live:
            engines[r].run_until(t)
        chosen = min(live, key=lambda r: engines[r].n_outstanding) if live else group[0]
        for r in group:
            if r != chosen and engines[r] is not None:
                engines[r].exclude(int(local_ids[r][rid]))
    records = []
    for r, engine in enumerate(engines):
        if engine is None:
            records.append(failed_record(profile, configs[r], subsets[r], requests.duration_s))
        else:
            engine.run_until(requests.duration_s)
            records.append(engine.record(requests.duration_s))
    return records
