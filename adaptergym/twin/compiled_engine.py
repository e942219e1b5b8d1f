"""One vLLM V1 replica, run by the compiled step loop (``_engine.c``): what ``engine.ReplicaEngine`` is when built.

The mechanisms are those of the pure-Python reference engine (``engine.py``, whose docstring
describes them); the compiled loop mirrors it and gives the same records (``tests/test_compiled_engine.py``
checks both on randomised cases, ``tests/test_engine_fingerprints.py`` against records fixed before the loop
was compiled). A simulated hour of a saturated GPU runs in a fraction of a second instead of seconds.

This class owns the per-request numpy arrays (the record is built from them, the serving layer reads them
while the engine runs) and hands them to the compiled core; everything the core needs from the profile comes
in as numbers: the step-time coefficients (``StepTimer.coefficients``), each adapter's load times and its place
in vLLM's per-step walk over the batch.

C is used rather than numba: nothing to compile at first use, no large dependency to import at start-up (the
whole ``simulate`` process of the reference hour has 1.2 s), the same IEEE arithmetic as Python operation by
operation (so records stay bit-identical), and a plain setuptools build that ``pip install -e .`` runs. When
the extension is not built (a checkout that was not installed), ``engine.ReplicaEngine`` is the reference engine,
with a warning that says how to build it.

Adding a mechanism or a step-time term means changing ``engine.py`` (or ``StepTimer``) and
``_engine.c`` alike; ``tests/test_compiled_engine.py`` draws every step-time coefficient, so a term one of them
lacks fails it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from adaptergym.profile import TwinProfile
from adaptergym.twin._engine import Core  # ImportError when not built: ``engine.py`` falls back
from adaptergym.twin.config import ServerConfig
from adaptergym.twin.engine_base import EngineBase
from adaptergym.twin.lora_cache import load_ms_by_rank, visit_order
from adaptergym.twin.record import ITL_BIN_WIDTH, ITL_BINS, ITL_MIN_MS
from adaptergym.twin.startup import Startup
from adaptergym.workload.requests import RequestBatch

#: A request's state in the core's ``state`` array (``_engine.c``: IDLE, PREFILLING, DECODING).
DECODING = 2
#: Per-request arrays the core works on, in ``Core.bind`` order: (attribute, dtype, fill when grown).
_ARRAYS = (("arrival_s", np.float64, np.inf), ("adapter", np.int64, 0), ("input_tokens", np.int64, 0),
           ("output_tokens", np.int64, 0), ("first_token_s", np.float64, np.nan), ("finish_s", np.float64, np.nan),
           ("_last_token_s", np.float64, np.nan), ("preemptions", np.int64, 0), ("generated", np.int64, 0),
           ("flags", np.uint8, 0), ("_base", np.int64, 0), ("_state", np.uint8, 0), ("_computed", np.int64, 0),
           ("_queue_next", np.int64, 0), ("_order_prev", np.int64, 0), ("_order_next", np.int64, 0))


def _from_core(name: str, doc: str) -> property:
    """A read-only attribute that is the core's."""
    return property(lambda self: getattr(self._core, name), doc=doc)


class CompiledEngine(EngineBase):
    """The replica engine run by the compiled core (see :class:`EngineBase` for the arguments)."""

    now = _from_core("now", "Simulated time, s.")
    steps = _from_core("steps", "Engine steps so far.")
    jumped_steps = _from_core("jumped_steps", "Of the steps, those advanced by decode jumps.")
    n_requests = _from_core("n_requests", "Requests known to the engine (up front or submitted).")
    n_arrived = _from_core("n_arrived", "Requests taken from arrivals (queued, refused or routed away).")
    n_refused = _from_core("n_refused", "Arrivals refused because the waiting queue was full.")
    n_running = _from_core("n_running", "Requests in the running batch.")
    n_waiting = _from_core("n_waiting", "Requests in the waiting queue.")
    free_blocks = _from_core("free_blocks", "Free KV blocks.")
    last_step = _from_core("last_step", "(tokens, distinct adapters, sequences) of the latest step, for checks.")
    step_counts = _from_core("step_counts", "``RAW_COUNTS`` summed over every step.")
    itl_counts = _from_core("itl_counts", "``RAW_COUNTS`` summed over steps, weighted by the ITL gaps each closed.")
    area_running = _from_core("area_running", "Running requests integrated over time.")
    area_waiting = _from_core("area_waiting", "Waiting requests integrated over time.")
    area_kv_blocks = _from_core("area_kv_blocks", "Used KV blocks integrated over time.")
    max_waiting_seen = _from_core("max_waiting_seen", "Longest waiting queue at a step's start.")
    max_running_seen = _from_core("max_running_seen", "Largest running batch.")
    loads_from_disk = _from_core("loads_from_disk", "Adapter loads from disk.")
    loads_from_cpu = _from_core("loads_from_cpu", "Adapter loads to the GPU.")

    def __init__(self, profile: TwinProfile, config: ServerConfig, requests: RequestBatch, startup: Startup,
                 jumps: bool = True):
        super().__init__(profile, config, requests, startup, jumps)
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
                          *self._adapter_data(requests.adapter_ranks, requests.adapter_ids))
        self._bind()
        self._core.n_requests = n

    def _adapter_data(self, ranks: np.ndarray,
                      adapter_ids: Sequence[str]) -> tuple[list[float], list[float], list[int]]:
        """CPU->GPU and disk->CPU load times (ms) of adapters of these ranks, and where vLLM's per-step walk over
        the batch visits them (``lora_cache.visit_order``)."""
        return (load_ms_by_rank(self._loading.cpu_to_gpu_ms, ranks).tolist(),
                load_ms_by_rank(self._loading.disk_to_cpu_ms, ranks).tolist(), [visit_order(a) for a in adapter_ids])

    def _bind(self) -> None:
        self._core.bind(*(getattr(self, name) for name, _, _ in _ARRAYS), self.itl_hist)

    @property
    def n_outstanding(self) -> int:
        """Requests in the replica (running + waiting): what a least-loaded router compares."""
        return self._core.n_running + self._core.n_waiting

    def flag_codes(self) -> np.ndarray:
        return self.flags

    # ------------------------------------------------------------------ online use
    def _accept(self, rid: int, k: int, adapter: Sequence[int] | np.ndarray, input_tokens: Sequence[int] | np.ndarray,
                output_tokens: Sequence[int] | np.ndarray) -> None:
        self._core.n_requests = rid + k

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

    def add_adapter(self, adapter_id: str, rank: int) -> int:
        """Register one more adapter online (vLLM's ``/v1/load_lora_adapter``); returns its index."""
        self.adapter_ids = (*self.adapter_ids, adapter_id)
        self._core.add_adapter(*self._adapter_data(np.array([rank]), [adapter_id]))
        return len(self.adapter_ids) - 1

    def load_adapter(self, adapter: int) -> float:
        """Load adapter ``adapter`` at runtime as vLLM's ``/v1/load_lora_adapter`` does (see the reference
        engine's ``load_adapter``); returns the load time, ms."""
        return self._core.load_adapter(adapter)

    def _take_queued(self, adapter: int) -> list[int]:
        return self._core.take_queued(adapter)

    def forget_adapter(self, adapter: int) -> None:
        """Drop ``adapter`` from GPU slots and CPU cache (vLLM's ``remove_lora``): its next use loads from disk,
        the next step's if requests of it still run (vLLM applies the batch's adapters every step)."""
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
