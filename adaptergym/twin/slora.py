"""One S-LoRA server: its router's scheduling loop over a unified pool of KV cache and adapter weights.

S-LoRA (Sheng et al., 2023) keeps KV cache and LoRA weights in one pool of token-sized slots: an adapter of
rank r takes ``adapter_pages_per_rank * r`` slots (A and B of q, k, v, o), so every resident adapter leaves
that many fewer slots for KV. Adapters live in host memory and are copied into the pool on demand when a
batch that needs them is admitted (the copy stalls the engine, and costs more for a larger rank); an adapter
is dropped from the pool as soon as no running request uses it. There is no slot count: any number of
adapters may be resident, as the pool allows.

The router (``slora/server/router/manager.py``, ``req_queue.py``) runs one forward pass per step:

* with no running batch it admits a batch from the queue (after an idle poll of ``idle_poll_ms``);
* otherwise it decodes one token for every running request, and every ``admit_every_steps`` decode steps it
  admits a mini-batch, prefills it in a step of its own (whole prompts, no chunking; running requests wait),
  and merges it into the running batch.

Admission is first come, first served and stops at the first request that does not fit: the prompts of one
mini-batch stay within ``max_num_batched_tokens`` (S-LoRA's ``batch_max_tokens``), the batch within
``max_num_seqs`` (``running_max_req_size``), and the pool must hold, at the worst moment of the batch's
future, every request run to its full output length plus the slots of every adapter in the batch. That
reservation is why S-LoRA never preempts. Decoding requests advance in lock step (generated tokens = tick -
base), and runs of decode steps in which nothing can be admitted are advanced in one jump.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque

import numpy as np

from adaptergym.profile import GIB, TwinProfile
from adaptergym.twin.config import ServerConfig
from adaptergym.twin.engine_base import EngineBase
from adaptergym.twin.lora_cache import load_ms_by_rank
from adaptergym.twin.record import ITL_BINS, ROUTED_AWAY, itl_bin, itl_bins
from adaptergym.twin.startup import NO_KV_MEMORY, OK, OOM, Startup
from adaptergym.twin.step_time import RAW_COUNTS, StepTimer
from adaptergym.workload.requests import RequestBatch


def pool_startup(profile: TwinProfile, config: ServerConfig) -> Startup:
    """S-LoRA's start-up: the weights, the fixed pool (``memory.kv_pool_tokens``, its
    ``--max_total_token_num``) and the working memory it profiles must fit in GPU memory. Adapter weights
    take slots of that pool at run time, so nothing is reserved per adapter."""
    mem = profile.memory
    pool = mem.kv_pool_tokens
    if pool <= 0:
        return Startup(NO_KV_MEMORY, 0, 0, 0.0, "memory.kv_pool_tokens is 0: S-LoRA needs a pool "
                                                "(--max_total_token_num > 0)")
    resident = mem.weights_gib + pool * mem.kv_bytes_per_token / GIB + mem.activation_gib
    if resident > mem.gpu_memory_gib:
        return Startup(OOM, 0, 0, 0.0, f"weights+pool of {pool} tokens+working memory need {resident:.1f} GiB > "
                                       f"{mem.gpu_memory_gib:.1f} GiB of GPU memory")
    return Startup(OK, pool, pool, 0.0, f"pool of {pool} token slots shared by KV cache and adapter weights")


def slora_step_timer(profile: TwinProfile, config: ServerConfig) -> StepTimer:
    """S-LoRA's step features: LoRA always on, no adapter slots (its kernels walk the adapters of the batch);
    rank terms are evaluated at ``max_lora_rank``, which defaults to the largest served rank."""
    return StepTimer(profile, int(config.max_lora_rank or 0), True, 0)


class SLoraEngine(EngineBase):
    """Simulates one S-LoRA server; same interface as the vLLM engines for runs over a request batch
    (``run_until``, ``record``, and what ``adaptergym.long_runs`` and the fleet read).

    Args:
        profile: calibrated S-LoRA profile (pool, step-time model, fetch times, router constants).
        config: resolved server config: ``max_num_seqs`` is ``running_max_req_size``,
            ``max_num_batched_tokens`` is ``batch_max_tokens``; ``max_loras`` and ``max_cpu_loras`` do not
            apply (any number of adapters may be resident; with ``--swap`` all sit in host memory).
        requests: requests sorted by arrival.
        startup: the start-up outcome (must be ``ok``); its token count is the pool size.
        jumps: advance decode stretches in one jump (identical results; off only to test that).
    """

    def __init__(self, profile: TwinProfile, config: ServerConfig, requests: RequestBatch, startup: Startup,
                 jumps: bool = True) -> None:
        super().__init__(profile, config, requests, startup, jumps)
        self.pool_tokens = startup.kv_cache_tokens  # ``budget`` is the prompt tokens of one admitted mini-batch
        self.max_loras = len(self.adapter_ids)  # no slot count: every adapter may be resident (so FCFS)
        self.max_waiting = 1 << 62  # S-LoRA's queue has no cap: nothing is refused
        self.timer = slora_step_timer(profile, config)
        self.admit_every = profile.engine.admit_every_steps
        self.poll_s = profile.engine.idle_poll_ms / 1000.0
        self.n_refused = 0
        ranks = requests.adapter_ranks
        self.adapter_pages = np.ceil(profile.memory.adapter_pages_per_rank * ranks - 1e-9).astype(int).tolist()
        self.fetch_ms = load_ms_by_rank(profile.loading.cpu_to_gpu_ms, ranks).tolist()
        n = len(requests)
        self.n_requests = n
        self.arrival_s, self.adapter = requests.arrival_s, requests.adapter
        self.input_tokens, self.output_tokens = requests.input_tokens, requests.output_tokens
        self._adapter_of = self.adapter.tolist()
        self._prompt = self.input_tokens.tolist()
        self._output = self.output_tokens.tolist()
        self.first_token_s = np.full(n, np.nan)
        self.finish_s = np.full(n, np.nan)
        self.generated = np.zeros(n, np.int64)  # kept for finished requests; running ones are tick - base
        self.preemptions = np.zeros(n, np.int64)  # never: admission reserves every request's whole output
        self.flags = bytearray(n)  # ROUTED_AWAY: another replica's request
        self.waiting: deque[int] = deque()
        self.n_arrived = 0
        # Running batch: lock-step decoding; a request's finish tick is base + output tokens.
        self._tick = 0
        self._base: dict[int, int] = {}
        self._finish_heap: list[tuple[int, int]] = []
        self._context = 0  # sum of (prompt + generated) over running requests
        self._run_count = [0] * len(self.adapter_ids)  # running requests per adapter
        self._in_batch = 0  # adapters with a running request
        self._batch_pages = 0  # pool slots of those adapters
        self._resident: set[int] = set()  # adapters whose weights are in the pool
        self._resident_pages = 0
        self._since_admission = 0
        self._new = 0  # requests prefilled since the last decode step (their next gap has no stall)
        self._stall_ms = 0.0  # prefill steps since the last decode step (in every older request's next gap)
        self._idle_since = 0.0
        # Clock and statistics.
        self.now = 0.0
        self.steps = 0
        self.loads_from_cpu = 0  # adapters copied into the pool
        self.loads_from_disk = 0  # with --swap every adapter is in host memory from start-up
        self.itl_hist = np.zeros(ITL_BINS, np.int64)
        self.step_counts = [0.0] * len(RAW_COUNTS)
        self.itl_counts = [0.0] * len(RAW_COUNTS)  # weighted by the inter-token gaps each step's time is part of
        self.area_running = self.area_waiting = self.area_kv_blocks = 0.0  # pool slots held (KV and adapters)
        self.max_waiting_seen = self.max_running_seen = 0

    # ------------------------------------------------------------------ interface shared with the vLLM engines
    @property
    def n_running(self) -> int:
        return len(self._base)

    @property
    def n_waiting(self) -> int:
        return len(self.waiting)

    def flag_codes(self) -> np.ndarray:
        return np.frombuffer(bytes(self.flags), np.uint8)

    def generated_tokens(self) -> np.ndarray:
        """Tokens generated so far, per request id (live values for running requests)."""
        out = self.generated.copy()
        for rid, base in self._base.items():
            out[rid] = self._tick - base
        return out

    # ------------------------------------------------------------------ admission
    def kv_budget_tokens(self) -> int:
        """Pool slots left for KV cache by the adapters of the running batch (what admission checks against)."""
        return self.pool_tokens - self._batch_pages

    def _select(self, limit: int) -> list[int]:
        """The mini-batch S-LoRA would admit now: waiting requests in order while they fit (at most ``limit``).

        A request fits if the prompts of the mini-batch so far stay within ``max_num_batched_tokens``, the batch
        within ``max_num_seqs``, and the pool can hold the batch's peak: with requests sorted by tokens still to
        generate, the i-th to finish leaves while every longer one still grows, so the peak is
        max_i (tokens held by the first i + tokens still to come of the i-th * i), to which the slots of every
        adapter in the batch are added. Each extra request only raises the peak and the slots, so what fits is a
        prefix of the queue, found by bisection.
        """
        room = min(limit, self.max_seqs - self.n_running, len(self.waiting))
        if room <= 0:
            return []
        candidates = list(itertools.islice(self.waiting, room))
        prompts = np.array([self._prompt[r] for r in candidates], np.int64)
        room = int(np.searchsorted(np.cumsum(prompts), self.budget, side="right"))
        if room == 0:
            return []
        candidates = candidates[:room]
        # S-LoRA counts a new request as holding its prompt and one token, with its whole output minus one to come.
        held = np.concatenate([[self._prompt[r] + self._tick - b for r, b in self._base.items()], prompts[:room] + 1])
        to_come = np.concatenate([[self._output[r] - self._tick + b - 1 for r, b in self._base.items()],
                                  [self._output[r] - 1 for r in candidates]])
        pages, seen, in_batch = [], set(), self._run_count
        total = self._batch_pages
        for rid in candidates:
            adapter = self._adapter_of[rid]
            if not in_batch[adapter] and adapter not in seen:
                seen.add(adapter)
                total += self.adapter_pages[adapter]
            pages.append(total)
        running = self.n_running

        def fits(k: int) -> bool:
            order = np.argsort(-to_come[: running + k], kind="stable")
            peak = np.cumsum(held[order]) + to_come[order] * np.arange(1, running + k + 1)
            return int(peak.max()) < self.pool_tokens - pages[k - 1]

        lo, hi = 0, room  # fits(lo) holds (lo = 0: nothing added), find the largest k that fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits(mid):
                lo = mid
            else:
                hi = mid - 1
        return candidates[:lo]

    def _head_admissible(self) -> bool:
        """Whether the queue's first request would be admitted now."""
        return bool(self._select(1))

    def _first_admissible_step(self, start: int, k_max: int) -> int:
        """The first of the next decode steps ``start..k_max-1`` at whose start the queue's head would be admitted
        (``k_max`` if none), with no request finishing before then.

        Decoding does not change the running batch's own peak (each request holds one token more and has one
        fewer to come), but the head, which keeps its estimate, moves ahead of running requests as they near their
        end: after t steps it sorts before every running request with at least ``left_head + t`` tokens to come.
        """
        head = self.waiting[0]
        adapter = self._adapter_of[head]
        if (self.n_running >= self.max_seqs or self._prompt[head] > self.budget or start >= k_max):
            return k_max
        held_head, left_head = self._prompt[head] + 1, self._output[head] - 1
        pages = self._batch_pages + (0 if self._run_count[adapter] else self.adapter_pages[adapter])
        tick = self._tick
        pairs = sorted(((self._output[r] - tick + b - 1, self._prompt[r] + tick - b) for r, b in self._base.items()),
                       reverse=True)
        left = np.array([p[0] for p in pairs], np.int64)
        held = np.array([p[1] for p in pairs], np.int64)
        n = left.size
        cum = np.concatenate(([0], np.cumsum(held)))
        own = cum[1:] + left * np.arange(1, n + 1)  # each running request's term; the same after any decode step
        before = np.concatenate(([np.iinfo(np.int64).min], np.maximum.accumulate(own)))  # max over the first p
        after = np.concatenate((np.maximum.accumulate((own + left)[::-1])[::-1], [np.iinfo(np.int64).min]))
        t = np.arange(start, k_max)
        p = np.searchsorted(-left, -(left_head + t), side="right")  # running requests still sorting first
        head_term = cum[p] + p * t + held_head + left_head * (p + 1)
        peak = np.maximum(np.maximum(before[p], head_term), np.where(p < n, after[p] + held_head - t, head_term))
        fits = np.flatnonzero(peak < self.pool_tokens - pages)
        return int(start + fits[0]) if fits.size else k_max

    # ------------------------------------------------------------------ steps
    def _prefill(self, batch: list[int]) -> None:
        """Fetch the batch's missing adapters into the pool, then prefill its prompts in one step."""
        fetch_ms = 0.0
        adapters = {self._adapter_of[r] for r in batch}
        for adapter in adapters - self._resident:
            self._resident.add(adapter)
            self._resident_pages += self.adapter_pages[adapter]
            fetch_ms += self.fetch_ms[adapter]
            self.loads_from_cpu += 1
        tokens = sum(self._prompt[r] for r in batch)
        running_before = self.n_running
        overhead_ms = self.timer.scheduler_ms(running_before, 0) + fetch_ms
        step_ms = self.timer.step_ms(0, tokens, tokens, len(adapters)) + overhead_ms
        end = self.now + step_ms / 1000.0
        for _ in batch:
            self.waiting.popleft()
        for rid in batch:
            self.first_token_s[rid] = end
            if self._output[rid] <= 1:  # done with its first token; S-LoRA keeps its adapter until an offload
                self.finish_s[rid], self.generated[rid] = end, 1
                continue
            self._base[rid] = self._tick - 1
            heapq.heappush(self._finish_heap, (self._tick - 1 + self._output[rid], rid))
            self._context += self._prompt[rid] + 1
            self._join(self._adapter_of[rid])
            self._new += 1
        self._log((1, 0, tokens, tokens, len(adapters), len(adapters) * tokens, tokens > self.timer.graph_max_tokens,
                   0, self.timer.exposed_adapters(len(adapters), tokens), overhead_ms), running_before)
        self._stall_ms += step_ms
        self._account(step_ms / 1000.0, running_before)
        self.now = end
        self.steps += 1
        self._since_admission = 0
        if not self._base:
            self._offload(end)

    def _decode(self) -> None:
        """One decode step: every running request generates a token."""
        n = self.n_running
        overhead_ms = self.timer.scheduler_ms(n, 0)
        step_ms = self.timer.step_ms(n, 0, self._context, self._in_batch) + overhead_ms
        end = self.now + step_ms / 1000.0
        old = n - self._new
        if self._new:
            self.itl_hist[itl_bin(step_ms)] += self._new
        if old:
            self.itl_hist[itl_bin(step_ms + self._stall_ms)] += old
        self._new, self._stall_ms = 0, 0.0
        self._log((1, n, 0, self._context, self._in_batch, self._in_batch * n, n > self.timer.graph_max_tokens, 0,
                   self.timer.exposed_adapters(self._in_batch, n), overhead_ms), n)
        self._account(step_ms / 1000.0, n)
        self._tick += 1
        self._context += n
        self.now = end
        self.steps += 1
        self._since_admission += 1
        self._finish_decoding(end)

    def _finish_decoding(self, end: float) -> None:
        """Requests whose last token came in the step ending at ``end`` leave; their adapters are dropped."""
        heap, finished = self._finish_heap, False
        while heap and heap[0][0] <= self._tick:
            _, rid = heapq.heappop(heap)
            base = self._base.pop(rid)
            self.generated[rid] = self._tick - base
            self.finish_s[rid] = end
            self._context -= self._prompt[rid] + self._tick - base
            self._leave(self._adapter_of[rid])
            finished = True
        if finished:
                self._offload(end)

    def _join(self, adapter: int) -> None:
        if self._run_count[adapter] == 0:
            self._in_batch += 1
            self._batch_pages += self.adapter_pages[adapter]
        self._run_count[adapter] += 1

    def _leave(self, adapter: int) -> None:
        self._run_count[adapter] -= 1
        if self._run_count[adapter] == 0:
            self._in_batch -= 1
            self._batch_pages -= self.adapter_pages[adapter]

    def _offload(self, now: float) -> None:
        """Drop from the pool every adapter no running request uses (S-LoRA's offload_adapters)."""
        for adapter in [a for a in self._resident if self._run_count[a] == 0]:
            self._resident.discard(adapter)
            self._resident_pages -= self.adapter_pages[adapter]
        if not self._base:
            self._idle_since = now

    def step(self) -> bool:
        """Run one step of the router at ``now``; False if nothing could be scheduled."""
        if not self._base:  # an idle router looks at its queue when it wakes
            self.now = self._wake(self.now)
            self._take_arrivals()
            batch = self._select(self.max_seqs)
            if not batch:
                return False
            self._prefill(batch)
            return True
        if self._since_admission >= self.admit_every and self._head_admissible():
            self._prefill(self._select(self.max_seqs))
            return True
        self._decode()
        return True

    def _wake(self, t: float) -> float:
        """When an idle router next looks at its queue, at or after ``t``: it sleeps ``idle_poll_ms`` at a
        time from the moment its batch emptied."""
        if self.poll_s <= 0:
            return t
        polls = max(1, math.ceil((t - self._idle_since) / self.poll_s - 1e-9))
        return max(t, self._idle_since + polls * self.poll_s)

    # ------------------------------------------------------------------ decode jumps
    def _decode_jump(self, next_arrival: float, t_stop: float) -> bool:
        """Advance k >= 2 decode steps at once when none of them could admit a request; False otherwise.

        A step may admit when ``admit_every_steps`` decode steps have passed and the queue's head fits (see
        :meth:`_first_admissible_step`); an empty queue changes only with an arrival. k stops at the first
        finish, at the last step starting before ``t_stop``, and (when the queue is empty) at the first step
        after which an arrival could be admitted.
        """
        n = self.n_running
        if self._new or self._stall_ms or not self._finish_heap:
            return False
        k = self._finish_heap[0][0] - self._tick  # the k-th step finishes a request
        free = max(0, self.admit_every - self._since_admission)  # steps that cannot admit whatever waits
        if self.waiting:
            k = self._first_admissible_step(free, k)
        elif math.isfinite(next_arrival):
            k = min(k, max(free, self._steps_starting_before(next_arrival, n, k)))
        k = min(k, self._steps_starting_before(t_stop, n, k))
        if k < 2:
            return False
        overhead_ms = self.timer.scheduler_ms(n, 0)
        d0 = self.timer.step_ms(n, 0, self._context, self._in_batch) + overhead_ms
        durations_ms = d0 + self.timer.context_ms_per_token * n * np.arange(k)
        total_ms = float(durations_ms.sum())
        np.add.at(self.itl_hist, itl_bins(durations_ms), n)
        self._log((k, k * n, 0, k * self._context + n * k * (k - 1) / 2, k * self._in_batch,
                   k * self._in_batch * n, k * (n > self.timer.graph_max_tokens), 0,
                   k * self.timer.exposed_adapters(self._in_batch, n), k * overhead_ms), n)
        starts = self.now + np.concatenate(([0.0], np.cumsum(durations_ms[:-1]))) / 1000.0
        queued = len(self.waiting) + self._arrivals_by(starts)  # the queue at each step's start, as steps see it
        self.area_running += n * total_ms / 1000.0
        self.area_waiting += float(queued @ durations_ms) / 1000.0
        self.area_kv_blocks += ((self._context + self._resident_pages) * total_ms
                           + n * float(np.arange(k) @ durations_ms)) / 1000.0
        self.max_waiting_seen = max(self.max_waiting_seen, int(queued.max()))
        self.max_running_seen = max(self.max_running_seen, n)
        self._tick += k
        self._context += n * k
        self._since_admission += k
        self.now += total_ms / 1000.0
        self.steps += k
        last_start = self.now - float(durations_ms[-1]) / 1000.0
        if next_arrival <= last_start:  # arrivals that could not be admitted only queue
            self._take_arrivals(last_start)
        self._finish_decoding(self.now)
        return True

    def _steps_starting_before(self, t: float, n: int, k_max: int) -> int:
        """How many of the next ``k_max`` decode steps (batch of ``n``) start before time ``t``."""
        if not math.isfinite(t):
            return k_max
        d0 = self.timer.step_ms(n, 0, self._context, self._in_batch) + self.timer.scheduler_ms(n, 0)
        durations = d0 + self.timer.context_ms_per_token * n * np.arange(k_max)
        starts = self.now + np.concatenate(([0.0], np.cumsum(durations[:-1]))) / 1000.0
        return int(np.searchsorted(starts, t, side="left"))

    # ------------------------------------------------------------------ bookkeeping
    def _log(self, counts: tuple[float, ...], gaps: int) -> None:
        """Add a step's (or jump's) ``RAW_COUNTS``; ``gaps`` is how many inter-token gaps its time is part of
        (a prefill step lengthens the next gap of every request already running)."""
        for i, value in enumerate(counts):
            self.step_counts[i] += value
            self.itl_counts[i] += gaps * value

    def _account(self, dt_s: float, running: int) -> None:
        """Time-weighted statistics of one step of ``dt_s`` seconds."""
        self.area_running += running * dt_s
        self.area_waiting += len(self.waiting) * dt_s
        self.area_kv_blocks += (self._context + self._resident_pages) * dt_s
        self.max_waiting_seen = max(self.max_waiting_seen, len(self.waiting))
        self.max_running_seen = max(self.max_running_seen, running)

    def _arrivals_by(self, times: np.ndarray) -> np.ndarray:
        """How many of this replica's requests not yet taken from arrivals arrive by each of ``times``."""
        first = self.n_arrived
        arrived = np.searchsorted(self.arrival_s[first:], times, side="right")
        last = first + int(arrived[-1]) if arrived.size else first
        if self.flags.count(ROUTED_AWAY, first, last):
            ours = np.frombuffer(self.flags, np.uint8, last - first, first) != ROUTED_AWAY
            arrived = np.concatenate(([0], np.cumsum(ours)))[arrived]
        return arrived

    def _take_arrivals(self, until: float | None = None) -> None:
        """Queue the requests that arrived by ``until`` (default: now)."""
        t = self.now if until is None else until
        first = self.n_arrived
        arrived = int(np.searchsorted(self.arrival_s, t, side="right"))
        if arrived <= first:
            return
        self.waiting.extend(rid for rid in range(first, arrived) if self.flags[rid] != ROUTED_AWAY)
        self.n_arrived = arrived

    # ------------------------------------------------------------------ driving
    def run_until(self, t_stop: float) -> None:
        """Run the steps that start before ``t_stop`` (the last may end after it)."""
        while self.now < t_stop:
            next_arrival = float(self.arrival_s[self.n_arrived]) if self.n_arrived < self.n_requests else math.inf
            if next_arrival <= self.now:
                self._take_arrivals()
                continue
            if not self._base and not self._head_admissible():
                if next_arrival == math.inf:  # idle for good, or a request that can never fit blocks the queue
                    if math.isfinite(t_stop):
                        self.now = t_stop
                    return
                self.now = min(self._wake(next_arrival), t_stop)
                continue
            if self._base and self.jumps and self._decode_jump(next_arrival, t_stop):
                continue
            if not self._base and self._wake(self.now) >= t_stop:
                self.now = t_stop
                return
            self.step()
