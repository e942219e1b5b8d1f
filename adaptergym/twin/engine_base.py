"""What the compiled engine and its pure-Python reference share: the server's limits, and a run's record."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from adaptergym.profile import TwinProfile
from adaptergym.twin.config import ServerConfig
from adaptergym.twin.record import REFUSED, ROUTED_AWAY, RunRecord
from adaptergym.twin.startup import Startup
from adaptergym.twin.step_time import StepTimer
from adaptergym.workload.requests import RequestBatch


class EngineBase:
    """Simulates one replica. Requests come up front (a ``RequestBatch``) or online through ``submit``.

    Subclasses keep the per-request arrays (``arrival_s`` ... ``preemptions``, ``itl_hist``), the counters
    :meth:`record` reads, and ``flag_codes()``: each request's flag as a uint8 array.

    Args:
        profile: calibrated profile (step-time model, loading, engine defaults).
        config: resolved server config (see ``ServerConfig.resolved``).
        requests: requests sorted by arrival; may be empty for online use.
        startup: the start-up outcome (must be ``ok``; its KV block count sizes the cache).
        jumps: advance pure-decode stretches in one jump (identical results; off only to test that).
    """

    def __init__(self, profile: TwinProfile, config: ServerConfig, requests: RequestBatch, startup: Startup,
                 jumps: bool = True):
        self.config = config
        self.startup = startup
        self.adapter_ids = requests.adapter_ids
        self._sent_s = requests.sent_s  # when clients sent the requests, if before they reached the engine
        self.jumps = jumps
        self.block_size = profile.engine.block_size
        self.max_waiting = profile.engine.max_waiting_requests
        self.budget = int(config.max_num_batched_tokens or profile.engine.max_num_batched_tokens)
        self.max_seqs = int(config.max_num_seqs or profile.engine.max_num_seqs)
        self.max_loras = config.max_loras if config.enable_lora else 1 << 30
        self.total_blocks = startup.kv_blocks
        self.timer = StepTimer(profile, int(config.max_lora_rank or 0), config.enable_lora, config.max_loras)

    @property
    def n_outstanding(self) -> int:
        """Requests in the replica (running + waiting): what a least-loaded router compares."""
        return self.n_running + self.n_waiting

    @property
    def kv_usage(self) -> float:
        return 1.0 - self.free_blocks / max(self.total_blocks, 1)

    @property
    def drained(self) -> bool:
        return self.n_arrived >= self.n_requests and self.n_outstanding == 0

    def submit(self, arrival_s: float, adapter: int, input_tokens: int, output_tokens: int) -> int:
        """Add one request online (arrivals must not go back in time); returns its id."""
        return self.submit_many([arrival_s], [adapter], [input_tokens], [output_tokens])

    def submit_many(self, arrival_s: Sequence[float] | np.ndarray, adapter: Sequence[int] | np.ndarray,
                    input_tokens: Sequence[int] | np.ndarray, output_tokens: Sequence[int] | np.ndarray) -> int:
        """Add requests online, sorted by arrival and none before the last one submitted; returns the id of the
        first (the others follow in order)."""
        rid, k = self.n_requests, len(arrival_s)
        self._check_order(arrival_s)
        if rid + k > self.arrival_s.size:
            self._grow(max(64, 2 * self.arrival_s.size, rid + k))
        self.arrival_s[rid:rid + k], self.adapter[rid:rid + k] = arrival_s, adapter
        self.input_tokens[rid:rid + k], self.output_tokens[rid:rid + k] = input_tokens, output_tokens
        self._accept(rid, k, adapter, input_tokens, output_tokens)
        return rid

    def _grow(self, size: int) -> None:
        """Make room for ``size`` requests in the per-request arrays."""
        raise NotImplementedError

    def _accept(self, rid: int, k: int, adapter: Sequence[int] | np.ndarray, input_tokens: Sequence[int] | np.ndarray,
                output_tokens: Sequence[int] | np.ndarray) -> None:
        """Take the ``k`` requests from ``rid`` that :meth:`submit_many` wrote into the arrays (and count them in
        ``n_requests``)."""
        raise NotImplementedError

    def exclude(self, rid: int) -> None:
        """Mark a request as routed to another replica (before this replica has taken it from arrivals)."""
        self.flags[rid] = ROUTED_AWAY

    def _check_order(self, arrival_s: Sequence[float] | np.ndarray) -> None:
        """Online arrivals must be sorted and none before the last one submitted, and go to an engine whose
        requests did not come through a modelled API server (``adaptergym.twin.frontend``)."""
        if self._sent_s is not None:
            raise ValueError("submit: this engine's requests came through a modelled API server; submit online "
                             "only to an engine built without one")
        n = self.n_requests
        if len(arrival_s) and ((n and arrival_s[0] < self.arrival_s[n - 1]) or np.any(np.diff(arrival_s) < 0)):
            raise ValueError("submit: arrivals must be in time order")

    def take_back(self, adapters: Collection[int] | None = None) -> list[int]:
        """Hand the requests of ``adapters`` (indices; default all) that have not started back to the router:
        queued ones and submitted ones not yet arrived. Preempted requests stay, as running ones do: they are
        in flight. Taken requests are left out of :meth:`record`, as :meth:`exclude`d ones are. Returns their
        ids in arrival order."""
        wanted = range(len(self.adapter_ids)) if adapters is None else list(adapters)
        taken = [rid for a in wanted for rid in self._take_queued(a)]
        first, n = self.n_arrived, self.n_requests
        future = self.flag_codes()[first:n] == 0
        if adapters is not None:
            future &= np.isin(self.adapter[first:n], wanted)
        taken += (np.flatnonzero(future) + first).tolist()
        for rid in taken:
            self.exclude(rid)
        return sorted(taken)

    def unload_adapter(self, adapter: int) -> list[int]:
        """vLLM's ``/v1/unload_lora_adapter``: forget the adapter's weights (a later load reads the disk again,
        ``forget_adapter``) and hand back its requests that have not started (:meth:`take_back`); running ones
        finish."""
        self.forget_adapter(adapter)
        return self.take_back([adapter])

    def record(self, duration_s: float) -> RunRecord:
        """Everything the metrics layer needs, as arrays (requests routed to other replicas are left out).

        When every request is this replica's the arrays are views of the engine's, not copies: take the record
        once the run is over, or copy what must outlive further steps (as ``RunRecord.arrived_before`` does).
        Latencies count from when clients sent the requests (``RequestBatch.sent_s``) when that was earlier.
        """
        n = self.n_requests
        flags = self.flag_codes()[:n]
        mine = flags != ROUTED_AWAY if (flags == ROUTED_AWAY).any() else slice(None)  # a view when all are ours
        sim_time = max(self.now, 1e-12)
        return RunRecord(
            startup=self.startup,
            duration_s=duration_s,
            arrival_s=(self.arrival_s if self._sent_s is None else self._sent_s)[:n][mine],
            adapter=self.adapter[:n][mine],
            input_tokens=self.input_tokens[:n][mine],
            output_tokens=self.output_tokens[:n][mine],
            first_token_s=self.first_token_s[:n][mine],
            finish_s=self.finish_s[:n][mine],
            preemptions=self.preemptions[:n][mine],
            refused=flags[mine] == REFUSED,
            adapter_ids=self.adapter_ids,
            itl_hist=self.itl_hist.copy(),
            itl_counts=np.array(self.itl_counts, float),
            step_counts=np.array(self.step_counts, float),
            steps=self.steps,
            mean_running=self.area_running / sim_time,
            mean_waiting=self.area_waiting / sim_time,
            max_waiting=self.max_waiting_seen,
            max_running=self.max_running_seen,
            mean_kv_usage=self.area_kv_blocks / sim_time / max(self.total_blocks, 1),
            loads_from_disk=self.loads_from_disk,
            loads_from_cpu=self.loads_from_cpu,
            sim_time_s=self.now,
        )
