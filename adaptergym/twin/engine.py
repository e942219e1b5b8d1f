"""One vLLM V1 replica, run by the compiled step loop (``_engine.c``): the engine every simulation uses.

The mechanisms are those of the pure-Python reference engine (``reference_engine.py``, whose docstring
describes them); the compiled loop mirrors it and gives the same records (``tests/test_compiled_engine.py``
checks both on randomised cases, ``tests/test_engine_fingerprints.py`` against records fixed before the loop
was compiled). A simulated hour of a saturated GPU runs in a fraction of a second instead of seconds.

This class owns the per-request numpy arrays (the record is built from them, the serving layer reads them
while the engine runs) and hands them to the compiled core; everything the core needs from the profile comes
in as numbers: the step-time coefficients (``StepTimer.coefficients``) and each adapter's load times.

C is used rather than numba: nothing to compile at first use or to import (numba's import alone is a third of
the reference hour's whole time budget), the same IEEE arithmetic as Python operation by operation, and a
plain setuptools build that ``pip install -e .`` runs. When the extension is not built (a checkout that
was not installed), the reference engine runs instead, with a warning that says how to build it.
"""

from __future__ import annotations

import warnings

import numpy as np

from adaptergym.profile import TwinProfile
from adaptergym.twin.config import ServerConfig
from adaptergym.twin.lora_cache import load_ms_by_rank
from adaptergym.twin.record import ITL_BIN_WIDTH, ITL_BINS, ITL_MIN_MS, REFUSED, ROUTED_AWAY, RunRecord
from adaptergym.twin.reference_engine import ReferenceEngine
from adaptergym.twin.startup import Startup
from adaptergym.twin.step_time import StepTimer
from adaptergym.workload.requests import RequestBatch

try:
    from adaptergym.twin._engine import Core
except ImportError:  # not built: see the module docstring
    Core = None

#: A request's state in the core's ``state`` array (``_engine.c``: IDLE, PREFILLING, DECODING).
DECODING = 2
#: Per-request arrays the core works on, in ``Core.bind`` order: (attribute, dtype, fill when grown).
_ARRAYS = (("arrival_s", np.float64, np.inf), ("adapter", np.int64, 0), ("input_tokens", np.int64, 0),
           ("output_tokens", np.int64, 0), ("first_token_s", np.float64, np.nan), ("finish_s", np.float64, np.nan),
           ("_last_token_s", np.float64, np.nan), ("preemptions", np.int64, 0), ("generated", np.int64, 0),
           ("flags", np.uint8, 0), ("_base", np.int64, 0), ("_state", np.uint8, 0), ("_computed", np.int64, 0),
           ("_queue_next", np.int64, 0), ("_order_prev", np.int64, 0), ("_order_next", np.int64, 0))


class CompiledEngine:
    """Simulates one replica. Requests come up front (a ``RequestBatch``) or online through :meth:`submit`.

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
        self.jumps = jumps
        self.block_size = profile.engine.block_size
        self.max_waiting = profile.engine.max_waiting_requests
        self.budget = int(config.max_num_batched_tokens or profile.engine.max_num_batched_tokens)
        self.max_seqs = int(config.max_num_seqs or profile.engine.max_num_seqs)
        self.max_loras = config.max_loras if config.enable_lora else 1 << 30
        self.total_blocks = startup.kv_blocks
        self.timer = StepTimer(profile, int(config.max_lora_rank or 0), config.enable_lora, config.max_loras)
        self._loading = profile.loading
        n = len(requests)
        # The request arrays are only read by the core (``submit`` writes into the arrays ``_grow`` makes).
        self.arrival_s = np.ascontiguousarray(requests.arrival_s, np.float64)
        self.adapter = np.ascontiguousarray(requests.adapter, np.int64)
        self.input_tokens = np.ascontiguousarray(requests.input_tokens, np.int64)
        self.output_tokens = np.ascontiguousarray(requests.output_tokens, np.int64)
        for name, dtype, fill in _ARRAYS[4:]:
            setattr(self, name, np.full(n, fill, dtype))
        self.itl_hist = np.zeros(ITL_BINS, np.int64)
        limits = (self.block_size, self.max_waiting, self.budget, self.max_seqs, self.max_loras, self.total_blocks,
                  config.max_loras, int(config.max_cpu_loras or config.max_loras), config.enable_lora, jumps)
        self._core = Core(limits, self.timer.coefficients(), (ITL_BINS, ITL_BIN_WIDTH, ITL_MIN_MS),
                          *self._load_costs(requests.adapter_ranks))
        self._bind()
        self._core.n_requests = n

    def _load_costs(self, ranks: np.ndarray) -> tuple[list[float], list[float]]:
        """CPU->GPU and disk->CPU load times (ms) of adapters of these ranks."""
        return (load_ms_by_rank(self._loading.cpu_to_gpu_ms, ranks).tolist(),
                load_ms_by_rank(self._loading.disk_to_cpu_ms, ranks).tolist())

    def _bind(self) -> None:
        self._core.bind(*(getattr(self, name) for name, _, _ in _ARRAYS), self.itl_hist)

    # ------------------------------------------------------------------ state
    @property
    def n_requests(self) -> int:
        return self._core.n_requests

    @property
    def now(self) -> float:
        return self._core.now

    @property
    def steps(self) -> int:
        return self._core.steps

    @property
    def jumped_steps(self) -> int:
        """Of :attr:`steps`, those advanced by decode jumps."""
        return self._core.jumped_steps

    @property
    def n_arrived(self) -> int:
        """Requests taken from arrivals (queued, refused or routed away)."""
        return self._core.n_arrived

    @property
    def n_refused(self) -> int:
        return self._core.n_refused

    @property
    def n_running(self) -> int:
        return self._core.n_running

    @property
    def n_waiting(self) -> int:
        return self._core.n_waiting

    @property
    def n_outstanding(self) -> int:
        """Requests in the replica (running + waiting): what a least-loaded router compares."""
        return self._core.n_running + self._core.n_waiting

    @property
    def free_blocks(self) -> int:
        return self._core.free_blocks

    @property
    def kv_usage(self) -> float:
        return 1.0 - self._core.free_blocks / max(self.total_blocks, 1)

    @property
    def last_step(self) -> tuple[int, int, int]:
        """(tokens, distinct adapters, sequences) of the latest step, for checks."""
        return self._core.last_step

    @property
    def step_counts(self) -> np.ndarray:
        """``RAW_COUNTS`` summed over every step."""
        return np.array(self._core.step_counts)

    @property
    def itl_counts(self) -> np.ndarray:
        """``RAW_COUNTS`` summed over steps, each weighted by the inter-token gaps it closed."""
        return np.array(self._core.itl_counts)

    @property
    def drained(self) -> bool:
        return self.n_arrived >= self.n_requests and self.n_outstanding == 0

    # ------------------------------------------------------------------ online use
    def submit(self, arrival_s: float, adapter: int, input_tokens: int, output_tokens: int) -> int:
        """Add one request online (arrivals must not go back in time); returns its id."""
        rid = self.n_requests
        if rid and arrival_s < self.arrival_s[rid - 1]:
            raise ValueError("submit: arrivals must be in time order")
        if rid >= self.arrival_s.size:
            self._grow(max(64, 2 * self.arrival_s.size))
        self.arrival_s[rid], self.adapter[rid] = arrival_s, adapter
        self.input_tokens[rid], self.output_tokens[rid] = input_tokens, output_tokens
        self._core.n_requests = rid + 1
        return rid

    def _grow(self, size: int) -> None:
        for name, dtype, fill in _ARRAYS:
            old = getattr(self, name)
            grown = np.full(size, fill, dtype)
            grown[: old.size] = old
            setattr(self, name, grown)
        self._bind()

    def generated_tokens(self) -> np.ndarray:
        """Tokens generated so far, per request id (live values for running requests); for streaming."""
        n = self.n_requests
        decoding = self._state[:n] == DECODING
        return np.where(decoding, self._core.tick - self._base[:n], self.generated[:n])

    def exclude(self, rid: int) -> None:
        """Mark a request as routed to another replica (before this replica has taken it from arrivals)."""
        self.flags[rid] = ROUTED_AWAY

    def add_adapter(self, adapter_id: str, rank: int) -> int:
        """Register one more adapter online (vLLM's ``/v1/load_lora_adapter``); returns its index."""
        self.adapter_ids = (*self.adapter_ids, adapter_id)
        self._core.add_adapter(*self._load_costs(np.array([rank])))
        return len(self.adapter_ids) - 1

    def forget_adapter(self, adapter: int) -> None:
        """Drop ``adapter`` from GPU slots and CPU cache (vLLM's ``remove_lora``): its next use loads from disk."""
        self._core.discard_adapter(adapter)

    def running_adapters(self) -> list[int]:
        """Indices of the adapters in the running batch (vLLM's ``running_lora_adapters``)."""
        return self._core.running_adapters()

    # ------------------------------------------------------------------ driving
    def step(self) -> bool:
        """Run one engine step at ``now``; return False if nothing could be scheduled."""
        return self._core.step()

    def run_until(self, t_stop: float) -> None:
        """Run the steps that start before ``t_stop`` (the last may end after it)."""
        self._core.run_until(float(t_stop))

    def record(self, duration_s: float) -> RunRecord:
        """Everything the metrics layer needs, as arrays (requests routed to other replicas are left out).

        When every request is this replica's the arrays are views of the engine's, not copies: take the record
        once the run is over, or copy what must outlive further steps (as ``RunRecord.arrived_before`` does).
        """
        n, core = self.n_requests, self._core
        flags = self.flags[:n]
        mine = flags != ROUTED_AWAY if (flags == ROUTED_AWAY).any() else slice(None)  # a view when all are ours
        sim_time = max(core.now, 1e-12)
        return RunRecord(
            startup=self.startup,
            duration_s=duration_s,
            arrival_s=self.arrival_s[:n][mine],
            adapter=self.adapter[:n][mine],
            input_tokens=self.input_tokens[:n][mine],
            output_tokens=self.output_tokens[:n][mine],
            first_token_s=self.first_token_s[:n][mine],
            finish_s=self.finish_s[:n][mine],
            preemptions=self.preemptions[:n][mine],
            refused=flags[mine] == REFUSED,
            adapter_ids=self.adapter_ids,
            itl_hist=self.itl_hist.copy(),
            itl_counts=self.itl_counts,
            step_counts=self.step_counts,
            steps=core.steps,
            mean_running=core.area_running / sim_time,
            mean_waiting=core.area_waiting / sim_time,
            max_waiting=core.max_waiting_seen,
            max_running=core.max_running_seen,
            mean_kv_usage=core.area_kv_blocks / sim_time / max(self.total_blocks, 1),
            loads_from_disk=core.loads_from_disk,
            loads_from_cpu=core.loads_from_cpu,
            sim_time_s=core.now,
        )


#: The engine the twin runs: the compiled one, or the reference when the extension is not built.
ReplicaEngine: type[CompiledEngine] | type[ReferenceEngine] = CompiledEngine
if Core is None:
    warnings.warn("adaptergym: the compiled engine is not built, so the twin runs its pure-Python reference "
                  "(about 3x slower); build it with `pip install -e .` or `python setup.py build_ext --inplace`",
                  RuntimeWarning, stacklevel=2)
    ReplicaEngine = ReferenceEngine
