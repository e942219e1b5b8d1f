"""A fleet whose plan changes while it serves: replicas start, restart, drain and load or unload adapters.

:class:`OnlineFleet` simulates one request stream (a whole :class:`RequestBatch`) through a router and a set of
replicas that follows a :data:`FleetPlan`, changed by :meth:`OnlineFleet.apply` at any time. What a change
costs is what vLLM does (see :mod:`adaptergym.twin.fleet_plan` for the kinds of change):

* **load** an adapter on a serving replica: ``load_lora_adapter`` reads it from disk into CPU memory and copies
  it into a GPU slot while the engine waits (the engine's ``load_adapter``);
* **unload**: ``unload_lora_adapter``; the adapter's running requests finish there, its queued ones go back to
  the router (the engine's ``unload_adapter``);
* **cold start**: a new GPU, serving after the profile's start-up time (:class:`StartupTimeModel`) for its
  ``max_loras``, then loading its adapters as a server started with ``--lora-modules`` does;
* **restart** (new ``max_loras`` or ``max_lora_rank``): the replica stops taking requests, hands its queued ones
  back, finishes its running ones (drains), then starts again as a cold start does;
* **removal**: it drains as for a restart, and its GPU is freed when drained.

Each replica has its own API server ahead of its engine (:class:`adaptergym.twin.frontend.ApiServer`), started
with the engine: a request whose adapter it has not resolved lately holds it up for the profile's
``loading.api_server_new_adapter_ms`` (about 0.27-0.28 s on the Llama-3.1-8B and Qwen-2.5-7B profiles), and the
requests behind it wait, first come first served. A cold start or a restart starts it cold: the first request of
each adapter there is held up, so a replica starting with k adapters whose first requests come together passes
the last of them to the engine k hold-ups later. A runtime load does not resolve the adapter (it is new there
unless resolved before and still in the LRU); the fleet an episode starts with (``apply(..., warm=True)``) has
its adapters resolved. The hold-up runs beside the engine's own costs above (a migrated adapter's first
request arriving at the change waits for the longer of the hold-up and the load) and costs no GPU time.

The router sends each request, at its arrival, to a serving replica of its adapter: in turn (``"even"``) or to
the one with the fewest outstanding requests (``"least-loaded"``). A request whose adapter no serving replica
holds (none in the plan, or all still starting) waits at the router and goes out, oldest first, as soon as one
serves it; requests handed back are routed again the same way. A request goes through the API server of the
replica it is routed to when it is routed (a request released or handed back, at that time), yet keeps the time
its client sent it for latency (:attr:`FleetSnapshot.reached_s` is when it reached the engine). With
``"least-loaded"``, a request of an adapter several replicas serve is submitted to all of them before one is
chosen (:func:`adaptergym.twin.fleet.least_loaded`), so it passes through every one of their API servers, holding
each up as its own (as the static least-loaded fleet does); the one chosen has the fewest requests in its engine
when the request reaches the router (requests still in an API server do not count). Every request ends exactly
once: finished, refused (a full waiting queue), or unfinished at the end.

GPU time counts from a replica's cold start until it is removed and drained; a replica whose flags vLLM would
refuse (out of memory) holds its GPU and never serves (its ``startup`` says why).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from adaptergym.errors import ConfigError
from adaptergym.profile import TwinProfile
from adaptergym.twin.config import ServerConfig
from adaptergym.twin.fleet import ROUTERS, least_loaded, round_robin
from adaptergym.twin.fleet_plan import FleetPlan, PlanChanges, ReplicaSpec, check_plan, plan_changes
from adaptergym.twin.frameworks import Engine, framework_of
from adaptergym.twin.frontend import ApiServer
from adaptergym.twin.record import REFUSED, ROUTED_AWAY
from adaptergym.twin.startup import Startup
from adaptergym.workload.requests import RequestBatch

#: Replica states: starting (cold start or restart), serving, failed to start (holds its GPU, serves nothing).
STARTING, SERVING, FAILED = "starting", "serving", "failed"


@dataclass
class Replica:
    """One GPU of the fleet, as the plan has it now (a restart keeps the id and the GPU)."""

    id: int
    spec: ReplicaSpec
    config: ServerConfig
    startup: Startup
    gpu_start_s: float
    ready_s: float  # when it serves (inf: it never will)
    adapters: tuple[int, ...]  # adapter indices of spec.adapters
    engine: Engine | None = None  # from ready_s on
    api_server: ApiServer | None = None  # ahead of the engine, started with it

    @property
    def state(self) -> str:
        return FAILED if not self.startup.ok else SERVING if self.engine is not None else STARTING


@dataclass(frozen=True, slots=True)
class FleetSnapshot:
    """Every request routed so far, with global times (``nan``: not yet), as of ``time_s``.

    ``replica`` is the replica that holds (or held, when it ended) each request; -1 while it waits at the router.
    ``reached_s`` is when the request reached that replica's engine, past its API server (``arrival_s`` is when
    the client sent it, which latencies count from).
    """

    time_s: float
    arrival_s: np.ndarray
    adapter: np.ndarray
    tokens: np.ndarray  # prompt + output tokens
    first_token_s: np.ndarray
    finish_s: np.ndarray
    refused: np.ndarray
    replica: np.ndarray
    reached_s: np.ndarray


@dataclass
class ChangeCounts:
    """Reconfigurations applied so far (what :class:`PlanChanges` said, summed)."""

    loads: int = 0
    migrations: int = 0
    restarts: int = 0
    cold_starts: int = 0
    removals: int = 0
    load_ms: float = field(default=0.0)  # engine time spent on runtime and start-up loads


class OnlineFleet:
    """Replicas following a changing plan, fed by one request stream (module doc).

    Args:
        profile: twin profile (start-up time, loading, engine).
        requests: the whole stream, sorted by arrival (its ``adapter_ids`` and ranks name the adapters plans use).
        router: ``"even"`` or ``"least-loaded"``.

    Drive it forward in time: :meth:`apply` a plan at the current time, :meth:`run_until` a later time, and so
    on; :meth:`snapshot` tells what happened to every request so far.
    """

    def __init__(self, profile: TwinProfile, requests: RequestBatch, router: str = "even") -> None:
        if router not in ROUTERS:
            raise ConfigError(f"router: {router!r} is not one of {', '.join(ROUTERS)}")
        self.framework = framework_of(profile)
        if not self.framework.online:
            raise ConfigError(f"profile {profile.name!r}: its framework ({profile.framework}) takes no requests or "
                              "adapters online, so a fleet cannot change its plan; use a vLLM profile")
        self.profile = profile
        self.requests = requests
        self.router = router
        self.ranks = {a: int(r) for a, r in zip(requests.adapter_ids, requests.adapter_ranks, strict=True)}
        self._index = {a: i for i, a in enumerate(requests.adapter_ids)}
        self.cpu_slots = len(requests.adapter_ids)
        self.now = 0.0
        self.plan: dict[int, ReplicaSpec] = {}
        self.replicas: dict[int, Replica] = {}
        self.gpu_spans: list[tuple[int, float, float]] = []  # (replica id, from, to) of freed GPUs
        self.counts = ChangeCounts()
        self._routed = 0  # requests [0, _routed) have reached the router
        self._held: list[deque[int]] = [deque() for _ in requests.adapter_ids]  # per adapter, waiting at the router
        self._dealt = np.zeros(len(requests.adapter_ids), np.int64)  # round-robin turn per adapter
        self._servers: list[list[int]] = [[] for _ in requests.adapter_ids]  # per adapter, serving replica ids
        # Every engine ever started, the replica it belongs to, and the global id of each of its local requests.
        self._engines: list[Engine] = []
        self._engine_replica: list[int] = []
        self._engine_gids: list[list[np.ndarray]] = []
        self._engine_of: dict[int, int] = {}  # id(engine) -> its position in _engines

    # ------------------------------------------------------------------ plans
    def apply(self, plan: FleetPlan, warm: bool = False) -> PlanChanges:
        """Switch to ``plan`` now; returns what changed (also added to :attr:`counts`).

        ``warm``: replicas new in ``plan`` serve at once, their start-up having happened before now (for the
        fleet an episode starts with); otherwise they cold-start.

        Raises:
            ConfigError: the plan names an unknown adapter or flags vLLM rejects (:func:`check_plan`).
        """
        check_plan(plan, self.ranks)
        plan = dict(plan)
        changes = plan_changes(self.plan, plan, self.ranks, self.cpu_slots)
        back: list[int] = []  # global ids handed back to the router
        for rid in changes.removals:
            replica = self.replicas.pop(rid)
            self.gpu_spans.append((rid, replica.gpu_start_s, self._drain(replica, back)))
        for rid in changes.restarts:
            old = self.replicas[rid]
            self.replicas[rid] = self._new_replica(rid, plan[rid], old.gpu_start_s, self._drain(old, back))
        for rid in changes.cold_starts:
            self.replicas[rid] = self._new_replica(rid, plan[rid], self.now, self.now, warm)
        for rid, adapters in changes.unloads.items():
            engine = self.replicas[rid].engine
            if engine is not None:
                for a in adapters:
                    back += self._global_ids(engine, engine.unload_adapter(self._index[a]))
        for rid, adapters in changes.loads.items():
            engine = self.replicas[rid].engine
            if engine is not None and rid not in changes.cold_starts:  # (re)started ones load when they come up
                for a in adapters:
                    self.counts.load_ms += engine.load_adapter(self._index[a])
        for rid, spec in plan.items():
            self.replicas[rid].spec, self.replicas[rid].adapters = spec, self._indices(spec)
        self.plan = plan
        self._update_servers()
        self._route(np.array(sorted(back), np.int64), self.now)
        self._release_held(self.now)
        if warm:
            return changes
        c = self.counts
        c.loads += changes.adapter_loads
        c.migrations += changes.migrations
        c.restarts += len(changes.restarts)
        c.cold_starts += len(changes.cold_starts)
        c.removals += len(changes.removals)
        return changes

    def _indices(self, spec: ReplicaSpec) -> tuple[int, ...]:
        return tuple(self._index[a] for a in spec.adapters)

    def _new_replica(self, rid: int, spec: ReplicaSpec, gpu_start_s: float, launch_s: float,
                     warm: bool = False) -> Replica:
        """A replica launched at ``launch_s``, serving after its start-up time (at once if ``warm``) unless vLLM
        refuses its flags."""
        config = spec.config(self.ranks, self.cpu_slots).resolved(self.profile)
        startup = self.framework.startup(self.profile, config)
        ready = launch_s + (0.0 if warm else self.profile.startup_time.seconds(config.max_loras))
        replica = Replica(rid, spec, config, startup, gpu_start_s, ready if startup.ok else math.inf,
                          self._indices(spec))
        if warm and startup.ok:
            self._start(replica, warm=True)
        return replica

    def _drain(self, replica: Replica, back: list[int]) -> float:
        """Stop routing to ``replica``, hand its requests that have not started back (into ``back``), finish its
        running ones; returns when it is drained."""
        engine = replica.engine
        if engine is None:
            return self.now
        back += self._global_ids(engine, engine.take_back())
        engine.run_until(math.inf)  # it gets nothing new, so this only finishes what runs
        replica.engine = None
        return max(engine.now, self.now)

    def _start(self, replica: Replica, warm: bool = False) -> None:
        """``replica``'s server is up (at its ``ready_s``): it loads its adapters and joins the router, its API
        server having resolved none of them. A ``warm`` one was up before the fleet's first plan: its API server
        has resolved its adapters, and its engine loads each when first used, as in a static fleet."""
        empty = np.empty(0)
        requests = self.requests
        batch = RequestBatch(empty, np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64),
                             requests.adapter_ids, requests.adapter_ranks, requests.duration_s)
        engine = self.framework.engine(self.profile, replica.config, batch, replica.startup)
        engine.run_until(replica.ready_s)  # an empty engine's clock just moves there
        for a in () if warm else replica.adapters:
            self.counts.load_ms += engine.load_adapter(a)
        replica.engine = engine
        replica.api_server = self.framework.api_server(self.profile, replica.config, replica.adapters if warm else ())
        self._engine_of[id(engine)] = len(self._engines)
        self._engines.append(engine)
        self._engine_replica.append(replica.id)
        self._engine_gids.append([])

    def _update_servers(self) -> None:
        self._servers = [[] for _ in self._servers]
        for rid in sorted(self.replicas):
            replica = self.replicas[rid]
            if replica.engine is not None:
                for a in replica.adapters:
                    self._servers[a].append(rid)

    # ------------------------------------------------------------------ time
    def run_until(self, t: float) -> None:
        """Route the requests arriving before ``t`` (starting replicas as they come up) and run every serving
        replica until ``t``."""
        if t < self.now:
            raise ValueError(f"run_until: {t} is before the fleet's time {self.now}")
        while True:
            starting = [r for r in self.replicas.values() if r.engine is None and r.ready_s < t]
            ready = min((r.ready_s for r in starting), default=t)
            self._route_arrivals(max(ready, self.now))
            if not starting:
                break
            self.now = max(ready, self.now)
            for replica in starting:
                if replica.ready_s <= self.now:
                    self._start(replica)
            self._update_servers()
            self._release_held(self.now)
        for replica in self.replicas.values():
            if replica.engine is not None:
                replica.engine.run_until(t)
        self.now = t

    def _route_arrivals(self, until: float) -> None:
        """Route the requests arriving in [now, until)."""
        end = int(np.searchsorted(self.requests.arrival_s, until, side="left"))
        if end > self._routed:
            self._route(np.arange(self._routed, end), None)
            self._routed = end

    def _release_held(self, t: float) -> None:
        """Send requests waiting at the router to replicas that now serve their adapters (as arriving at ``t``)."""
        gids = [g for a, held in enumerate(self._held) if held and self._servers[a] for g in held]
        for a, held in enumerate(self._held):
            if held and self._servers[a]:
                held.clear()
        self._route(np.array(sorted(gids), np.int64), t)

    def _route(self, gids: np.ndarray, at_s: float | None) -> None:
        """Route requests ``gids`` (sorted): arriving at their own time (``at_s`` None) or all at ``at_s``."""
        if not gids.size:
            return
        req = self.requests
        adapter = req.adapter[gids]
        arrival = req.arrival_s[gids] if at_s is None else np.full(gids.size, at_s)
        target = round_robin(adapter, self._servers, self._dealt)
        for g in gids[target < 0].tolist():
            self._held[int(req.adapter[g])].append(g)
        least = self.router == "least-loaded"
        shared = np.array([len(self._servers[a]) > 1 for a in adapter.tolist()], bool) if least else None
        local: dict[int, np.ndarray] = {}  # least-loaded: per replica, the local id of each request it got
        for rid in sorted(self.replicas):
            replica = self.replicas[rid]
            if replica.engine is None:
                continue
            mine = target == rid
            if least:  # a request of an adapter several replicas serve goes to all of them, then is decided
                mine = (mine & ~shared) | (shared & np.isin(adapter, replica.adapters))
            first = self._submit(replica, gids[mine], arrival[mine])
            if least:
                local[rid] = np.full(gids.size, -1, np.int64)
                local[rid][mine] = first + np.arange(int(mine.sum()))
        if least:
            for k in np.flatnonzero(shared).tolist():
                servers = self._servers[int(adapter[k])]
                least_loaded([self.replicas[r].engine for r in servers], [int(local[r][k]) for r in servers],
                             float(arrival[k]))

    def _submit(self, replica: Replica, gids: np.ndarray, arrival: np.ndarray) -> int:
        """Hand requests ``gids``, routed at ``arrival``, to ``replica``'s API server, and each to its engine when
        the server lets it through; returns the engine's local id of the first."""
        req, engine = self.requests, replica.engine
        adapter = req.adapter[gids]
        reached = replica.api_server.departures(arrival, adapter)
        first = engine.submit_many(reached, adapter, req.input_tokens[gids], req.output_tokens[gids])
        self._engine_gids[self._engine_of[id(engine)]].append(gids)
        return first

    def _global_ids(self, engine: Engine, local_ids: list[int]) -> list[int]:
        gids = np.concatenate(self._engine_gids[self._engine_of[id(engine)]] or [np.empty(0, np.int64)])
        return gids[np.array(local_ids, np.int64)].tolist() if local_ids else []

    # ------------------------------------------------------------------ results
    def snapshot(self) -> FleetSnapshot:
        """What happened so far to every request that has reached the router (see :class:`FleetSnapshot`)."""
        req, n = self.requests, self._routed
        first = np.full(n, np.nan)
        finish = np.full(n, np.nan)
        refused = np.zeros(n, bool)
        replica = np.full(n, -1, np.int64)
        reached = np.full(n, np.nan)
        for engine, rid, chunks in zip(self._engines, self._engine_replica, self._engine_gids, strict=True):
            if not chunks:
                continue
            gids = np.concatenate(chunks)
            flags = np.frombuffer(bytes(engine.flags), np.uint8)[: gids.size]
            mine = flags != ROUTED_AWAY
            g = gids[mine]
            first[g] = engine.first_token_s[: gids.size][mine]
            finish[g] = engine.finish_s[: gids.size][mine]
            refused[g] = flags[mine] == REFUSED
            replica[g] = rid
            reached[g] = engine.arrival_s[: gids.size][mine]
        tokens = req.input_tokens[:n] + req.output_tokens[:n]
        return FleetSnapshot(self.now, req.arrival_s[:n], req.adapter[:n], tokens, first, finish, refused, replica,
                             reached)

    def holders(self) -> np.ndarray:
        """How many places hold each routed request (engines where it is not routed away, plus the router's
        queue): exactly 1 for every request, which the tests check."""
        count = np.zeros(self._routed, np.int64)
        for engine, chunks in zip(self._engines, self._engine_gids, strict=True):
            if chunks:
                gids = np.concatenate(chunks)
                flags = np.frombuffer(bytes(engine.flags), np.uint8)[: gids.size]
                np.add.at(count, gids[flags != ROUTED_AWAY], 1)
        for held in self._held:
            np.add.at(count, np.array(list(held), np.int64), 1)
        return count

    def gpu_seconds(self, start_s: float, end_s: float) -> float:
        """GPU-seconds the fleet held in [start_s, end_s): every replica from its cold start until freed."""
        spans = [*self.gpu_spans, *((r.id, r.gpu_start_s, math.inf) for r in self.replicas.values())]
        return float(sum(max(0.0, min(end_s, b) - max(start_s, a)) for _, a, b in spans))

    def held(self) -> int:
        """Requests waiting at the router (no serving replica holds their adapter)."""
        return sum(len(h) for h in self._held)

    def states(self) -> Mapping[int, str]:
        return {rid: r.state for rid, r in sorted(self.replicas.items())}
