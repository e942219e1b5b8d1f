"""One vLLM V1 replica: continuous batching, chunked prefill, KV blocks, recompute preemption, LoRA slots.

``ReferenceEngine`` is the pure-Python engine, which the compiled one (``compiled_engine.py``, ``_engine.c``)
mirrors; ``ReplicaEngine``, what every simulation runs, is the compiled one when it is built.

The engine is a step loop, like vLLM's engine core. Each step schedules running requests first (in admission
order) under the token budget, preempting the newest running request when a KV block cannot be allocated,
then admits waiting requests FCFS (preempted ones first) unless a preemption happened in that step. A waiting
request whose adapter would exceed ``max_loras`` distinct adapters in the batch is skipped, not blocking.

Requests that decode advance in lock step, one token per step, so their state is kept relative to a tick
counter (tokens generated = tick - base): a step costs the same whatever the batch size. The KV blocks they need
in a step come from counts per residue of their computed tokens modulo the block size, their finishes from a
heap; requests still prefilling (or recomputing after preemption) are few and kept one by one.

Runs of pure-decode steps in which no waiting request can be admitted (nothing waits, or what waits needs an
adapter slot or KV blocks) are advanced in one jump (step times form an arithmetic series because only the
context grows), up to the next finish, KV-block shortage, or arrival that could be admitted. Arrivals that
cannot be (the queue is full, or they would queue behind a request that cannot start either) only join the
queue or are refused, and the jump accounts for them exactly.
"""

from __future__ import annotations

import heapq
import math
import warnings
from collections.abc import Sequence

import numpy as np

from adaptergym.profile import TwinProfile
from adaptergym.twin.config import ServerConfig
from adaptergym.twin.engine_base import EngineBase
from adaptergym.twin.lora_cache import LoraCache
from adaptergym.twin.record import ITL_BINS, REFUSED, ROUTED_AWAY, itl_bin, itl_bins
from adaptergym.twin.startup import Startup
from adaptergym.twin.step_time import RAW_COUNTS
from adaptergym.twin.waiting import WaitingQueue
from adaptergym.workload.requests import RequestBatch

# Whether the next step admits a waiting request (see ``ReferenceEngine._admission``).
ADMITS, BLOCKED, AWAITS_ARRIVAL = 0, 1, 2


class ReferenceEngine(EngineBase):
    """The replica engine in pure Python (see :class:`EngineBase` for the arguments)."""

    def __init__(self, profile: TwinProfile, config: ServerConfig, requests: RequestBatch, startup: Startup,
                 jumps: bool = True):
        super().__init__(profile, config, requests, startup, jumps)
        self.free_blocks = startup.kv_blocks
        self.lora = LoraCache(config.max_loras, int(config.max_cpu_loras or config.max_loras),
                              requests.adapter_ranks, profile.loading, requests.adapter_ids)
        # Per-request inputs and results (grown by ``submit`` in online use).
        n = len(requests)
        self.n_requests = n
        # The request arrays are only read (``submit`` writes into the arrays ``_grow`` makes), so not copied.
        self.arrival_s = requests.arrival_s  # when each request reaches the engine
        self.adapter = requests.adapter
        self.input_tokens = requests.input_tokens
        self.output_tokens = requests.output_tokens
        self._adapter_of = self.adapter.tolist()
        self._prompt = self.input_tokens.tolist()
        self._output = self.output_tokens.tolist()
        self.first_token_s = np.full(n, np.nan)
        self.finish_s = np.full(n, np.nan)
        self.preemptions = np.zeros(n, np.int64)
        self.generated = np.zeros(n, np.int64)  # tokens generated so far, kept for preempted/finished requests
        self.flags = bytearray(n)  # 0: ours, REFUSED: waiting queue was full, ROUTED_AWAY: another replica's
        self._last_token_s = np.full(n, np.nan)
        self._active: set[int] = set()  # adapters with a request in the running batch
        self.waiting = WaitingQueue(len(self.adapter_ids), self._active)
        self.n_arrived = 0
        self.n_refused = 0
        # Running batch (see the module docstring).
        self._order: dict[int, None] = {}  # running requests in admission order
        self._prefill: dict[int, int] = {}  # running requests still prefilling -> tokens whose KV is computed
        self._tick = 0
        self._base = [0] * n  # a decoding request has generated tick - base tokens
        self._residue_count = [0] * self.block_size  # decoding requests per (computed tokens - tick) % block size
        self._finish_heap: list[tuple[int, int]] = []  # (tick at which it finishes, request); stale entries skipped
        self._n_decoding = 0
        self._decoding_context = 0  # computed tokens of the decoding requests
        self._run_count = [0] * len(self.adapter_ids)
        # Clock and statistics.
        self.now = 0.0
        self.steps = 0
        self.jumped_steps = 0  # of which advanced by decode jumps
        self.last_step = (0, 0, 0)  # (tokens, distinct adapters, sequences) of the latest step, for checks
        self.itl_hist = np.zeros(ITL_BINS, np.int64)
        self._itl_counts = np.zeros(len(RAW_COUNTS))  # step counts weighted by the ITL gaps each step closes
        self._step_counts = np.zeros(len(RAW_COUNTS))  # step counts summed over every step
        self._count_log: list[tuple[float, ...]] = []  # recent steps' counts, folded into the sums in blocks
        self._gap_log: list[int] = []  # how many ITL gaps each of those steps closed
        self.area_running = 0.0
        self.area_waiting = 0.0
        self.area_kv_blocks = 0.0
        self.max_waiting_seen = 0
        self.max_running_seen = 0

    # ------------------------------------------------------------------ arrivals and routing
    @property
    def n_running(self) -> int:
        return len(self._order)

    @property
    def n_waiting(self) -> int:
        return len(self.waiting)

    def _accept(self, rid: int, k: int, adapter: Sequence[int] | np.ndarray, input_tokens: Sequence[int] | np.ndarray,
                output_tokens: Sequence[int] | np.ndarray) -> None:
        self._adapter_of.extend(int(a) for a in adapter)
        self._prompt.extend(int(t) for t in input_tokens)
        self._output.extend(int(t) for t in output_tokens)
        self._base.extend([0] * k)
        self.flags.extend(bytes(k))
        self.n_requests = rid + k

    def _grow(self, size: int) -> None:
        def grown(arr: np.ndarray, fill: float) -> np.ndarray:
            out = np.full(size, fill, dtype=arr.dtype)
            out[: arr.size] = arr
            return out

        self.arrival_s = grown(self.arrival_s, np.inf)
        for name, fill in (("adapter", 0), ("input_tokens", 0), ("output_tokens", 0), ("first_token_s", np.nan),
                           ("finish_s", np.nan), ("preemptions", 0), ("generated", 0), ("_last_token_s", np.nan)):
            setattr(self, name, grown(getattr(self, name), fill))

    def generated_tokens(self) -> np.ndarray:
        """Tokens generated so far, per request id (live values for running requests); for streaming."""
        out = self.generated[: self.n_requests].copy()
        for rid in self._order:
            if rid not in self._prefill:
                out[rid] = self._tick - self._base[rid]
        return out

    def add_adapter(self, adapter_id: str, rank: int) -> int:
        """Register one more adapter online (vLLM's ``/v1/load_lora_adapter``); returns its index."""
        self.adapter_ids = (*self.adapter_ids, adapter_id)
        self._run_count.append(0)
        self.waiting.add_adapters(1)
        self.lora.add_adapter(adapter_id, rank)
        return len(self.adapter_ids) - 1

    def load_adapter(self, adapter: int) -> float:
        """Load adapter ``adapter`` (an index) at runtime, as vLLM's ``/v1/load_lora_adapter`` does: from disk
        into CPU memory and into a GPU slot (:meth:`LoraCache.load`), the engine doing nothing else meanwhile
        (vLLM runs it between two steps); an adapter of the running batch it evicts is reloaded by the next step.
        Returns the load time, ms. The stall delays every request, but the inter-token gap it adds to requests
        decoding at the time is not in the ITL histogram."""
        load_ms = self.lora.load(adapter, self._active, self.steps) if self.config.enable_lora else 0.0
        if load_ms:
            self._account(load_ms / 1000.0, self.n_running, len(self.waiting), self.total_blocks - self.free_blocks)
            self.now += load_ms / 1000.0
        return load_ms

    def _take_queued(self, adapter: int) -> list[int]:
        return self.waiting.take_adapter(adapter)

    def forget_adapter(self, adapter: int) -> None:
        """Drop ``adapter`` from GPU slots and CPU cache (vLLM's ``remove_lora``): its next use loads from disk,
        the next step's if requests of it still run (vLLM applies the batch's adapters every step)."""
        self.lora.discard(adapter, self._active)

    def running_adapters(self) -> list[int]:
        """Indices of the adapters in the running batch (vLLM's ``running_lora_adapters``)."""
        return sorted(self._active)

    def _take_arrivals(self, until: float | None = None) -> None:
        """Move requests that arrived by ``until`` (default: now) into the waiting queue, refusing those over
        the cap."""
        t = self.now if until is None else until
        first = self.n_arrived
        if first + 1 < self.n_requests and self.arrival_s[first + 1] > t:  # the usual case: one at a time
            arrived = first + 1 if self.arrival_s[first] <= t else first
        else:
            arrived = int(np.searchsorted(self.arrival_s[: self.n_requests], t, side="right"))
        if arrived <= first:
            return
        flags = self.flags
        routed_away = flags.count(ROUTED_AWAY, first, arrived)
        incoming = arrived - first - routed_away
        space = max(0, self.max_waiting - len(self.waiting))
        ours = [rid for rid in range(first, arrived) if flags[rid] == 0] if routed_away else range(first, arrived)
        if incoming > space:
            if routed_away:
                for rid in ours[space:]:
                    flags[rid] = REFUSED
            else:
                flags[first + space:arrived] = bytes((REFUSED,)) * (incoming - space)
            self.n_refused += incoming - space
            ours = ours[:space]
        self.waiting.push(ours, self._adapter_of)
        self.n_arrived = arrived

    # ------------------------------------------------------------------ running batch
    def _enter_batch(self, adapter: int) -> bool:
        """Count a request of ``adapter`` into the batch; True when its adapter must be loaded this step."""
        must_load = False
        if self._run_count[adapter] == 0:
            self._active.add(adapter)
            self.waiting.activate(adapter)
            must_load = self.config.enable_lora and self.lora.enter(adapter, self.steps)
        self._run_count[adapter] += 1
        return must_load

    def _leave_batch(self, adapter: int) -> None:
        """Count a request of ``adapter`` out of the batch (it was last in the step before ``self.steps``)."""
        self._run_count[adapter] -= 1
        if self._run_count[adapter] == 0:
            self._active.discard(adapter)
            self.waiting.deactivate(adapter)
            self.lora.leave(adapter, self.steps - 1)

    def _residue(self, rid: int) -> int:
        """(computed tokens - tick) % block size of a decoding request: it needs a new KV block in the step
        whose tick t has (residue + t) % block size == 0."""
        return (self._prompt[rid] - self._base[rid] - 1) % self.block_size

    def _start_decoding(self, rid: int, generated: int) -> None:
        """``rid`` sampled its ``generated``-th token in the step that just advanced the tick."""
        base = self._tick - generated
        self._base[rid] = base
        self._residue_count[self._residue(rid)] += 1
        self._n_decoding += 1
        self._decoding_context += self._prompt[rid] + generated - 1
        heapq.heappush(self._finish_heap, (base + self._output[rid], rid))

    def _stop_decoding(self, rid: int) -> int:
        """Take ``rid`` out of the lock-step bookkeeping; returns the tokens it has generated."""
        generated = self._tick - self._base[rid]
        self._residue_count[self._residue(rid)] -= 1
        self._n_decoding -= 1
        self._decoding_context -= self._prompt[rid] + generated - 1
        return generated

    def _remove(self, rid: int, last_token_s: float) -> None:
        """Take ``rid`` out of the running batch, freeing its KV blocks and keeping its progress (a decoding
        request sampled its last token at ``last_token_s``)."""
        del self._order[rid]
        if rid in self._prefill:  # its progress and last token time are as they were before it was admitted
            computed = self._prefill.pop(rid)
        else:
            self.generated[rid] = generated = self._stop_decoding(rid)
            computed = self._prompt[rid] + generated - 1
            self._last_token_s[rid] = last_token_s
        self.free_blocks += -(-computed // self.block_size)
        self._leave_batch(self._adapter_of[rid])

    def _finish(self, rid: int, end: float) -> None:
        """``rid`` sampled its last token in the step ending at ``end``."""
        self.finish_s[rid] = end
        self._remove(rid, end)

    def _next_finish_tick(self) -> int:
        """Tick at which the first decoding request finishes (stale heap entries dropped on the way)."""
        heap, order, prefill, base, output = self._finish_heap, self._order, self._prefill, self._base, self._output
        while heap:
            tick, rid = heap[0]
            if rid in order and rid not in prefill and base[rid] + output[rid] == tick:
                return tick
            heapq.heappop(heap)
        return 1 << 62

    def _finish_decoding(self, end: float) -> None:
        """Finish the decoding requests whose last token was sampled in the step (or jump) ending at ``end``."""
        while self._next_finish_tick() <= self._tick:
            self._finish(heapq.heappop(self._finish_heap)[1], end)

    # ------------------------------------------------------------------ scheduling
    def _schedule_running(self) -> tuple[list[tuple[int, int]], int, bool]:
        """This step's prefill chunks of running requests (request, tokens), the budget left, and whether any
        request was preempted; every decoding request takes one token.

        vLLM hands the budget out in admission order, and decoding requests always come before prefilling
        ones: a request is admitted only while budget is left, so whatever was admitted before it got its
        whole prompt. So the budget can only run out inside the prefill chunks, which share what decoding
        leaves (at most ``budget`` requests run: each took a token when admitted).
        """
        bs, prefill, generated, prompt = self.block_size, self._prefill, self.generated, self._prompt
        chunks = [(rid, prompt[rid] + int(generated[rid]) - computed) for rid, computed in prefill.items()]
        left = self.budget - self._n_decoding
        wanted = sum(tokens for _, tokens in chunks) if chunks else 0
        if wanted > left:  # the budget runs out inside the prefill chunks
            cut = []
            for rid, tokens in chunks:
                if left <= 0:
                    break
                cut.append((rid, min(tokens, left)))
                left -= cut[-1][1]
            chunks, budget_left = cut, 0
        else:
            budget_left = left - wanted
        need = self._residue_count[-self._tick % bs]
        for rid, tokens in chunks:
            need += self._chunk_blocks(rid, tokens)
        if need <= self.free_blocks:
            self.free_blocks -= need
            return chunks, budget_left, False
        return self._schedule_with_preemption(chunks, need)

    def _chunk_blocks(self, rid: int, tokens: int) -> int:
        """KV blocks a prefill chunk of ``tokens`` adds to those ``rid`` holds (ceil(computed / block size))."""
        computed, bs = self._prefill[rid], self.block_size
        return -(-(computed + tokens) // bs) - -(-computed // bs)

    def _schedule_with_preemption(self, chunks: list[tuple[int, int]],
                                  need: int) -> tuple[list[tuple[int, int]], int, bool]:
        """KV blocks ran out: preempt from the newest end, as vLLM's request-by-request loop would.

        vLLM schedules request i if its blocks plus those of the requests scheduled before it fit in the free
        blocks plus the blocks of the newest requests preempted so far, preempting the newest running request
        until that holds, or request i itself (and then stops). That keeps the longest prefix whose needs fit
        in the free blocks plus the blocks held by the rest: the newest requests are preempted until it fits.
        """
        hit, chunk_tokens = -self._tick % self.block_size, dict(chunks)
        victims = []
        while need > self.free_blocks:
            rid = next(reversed(self._order))
            if rid in self._prefill:
                need -= self._chunk_blocks(rid, chunk_tokens[rid]) if rid in chunk_tokens else 0
            elif self._residue(rid) == hit:
                need -= 1
            victims.append(rid)
            self.preemptions[rid] += 1
            self._remove(rid, self.now)
        self.free_blocks -= need
        self.waiting.push_preempted(victims[::-1])
        gone = set(victims)
        return [c for c in chunks if c[0] not in gone], 0, True

    def _admit_waiting(self, budget: int) -> tuple[list[tuple[int, int]], bool]:
        """Admit waiting requests FCFS under the budget, free KV blocks, max_num_seqs and max_loras; returns
        their first chunks (request, tokens) and whether an adapter must be loaded."""
        admitted: list[tuple[int, int]] = []
        must_load = False
        waiting, adapter_of, order = self.waiting, self._adapter_of, self._order
        while budget > 0 and len(order) < self.max_seqs:
            rid = waiting.peek(adapter_of, self.max_loras)
            if rid < 0:
                break
            tokens, blocks = self._first_chunk(rid, budget)
            if blocks > self.free_blocks:
                break
            adapter = adapter_of[rid]
            waiting.take(rid, adapter)
            self.free_blocks -= blocks
            order[rid] = None
            self._prefill[rid] = 0
            must_load |= self._enter_batch(adapter)
            admitted.append((rid, tokens))
            budget -= tokens
        return admitted, must_load

    # ------------------------------------------------------------------ one step
    def step(self) -> bool:
        """Run one engine step at ``now``; return False if nothing could be scheduled."""
        waiting_before = len(self.waiting)
        running_before = len(self._order)
        chunks, budget, preempted = self._schedule_running()
        load_ms, must_load = 0.0, self.lora.must_reload
        if not preempted and budget > 0 and waiting_before:
            admitted, entering_load = self._admit_waiting(budget)
            chunks += admitted
            must_load |= entering_load
        if must_load:  # vLLM loads the step's adapters before its forward pass: the whole batch waits
            load_ms = self.lora.apply(self._active, self.steps)
        decoding = self._n_decoding
        if decoding + len(chunks) == 0:
            return False
        prefill, prompt, generated = self._prefill, self._prompt, self.generated
        tokens = decoding + sum(t for _, t in chunks)
        decode = decoding + sum(t == 1 for _, t in chunks)
        context = self._decoding_context + sum(prefill[rid] for rid, _ in chunks) + tokens
        # The scheduler's walk over the queue passes every request whose adapter found no slot.
        overhead_ms = self.timer.scheduler_ms(running_before, self.waiting.skipped(self.max_loras)) + load_ms
        step_ms = overhead_ms + self.timer.step_ms(decode, tokens - decode, context, len(self._active),
                                                   self.lora.cached)
        end = self.now + step_ms / 1000.0
        self.last_step = (tokens, len(self._active), decoding + len(chunks))
        self.steps += 1  # counted before requests finish: an adapter leaving was last in this step
        # Decoding requests each sample a token, one step after their last.
        self._tick += 1
        self._decoding_context += decoding
        same, stalled = decoding, []
        # Prefill chunks that reach the end of the prompt sample a token too.
        firsts, done = [], []
        for rid, chunk in chunks:
            prefill[rid] = computed = prefill[rid] + chunk
            gen = int(generated[rid])
            if computed < prompt[rid] + gen:
                continue
            last = self._last_token_s[rid]
            if last == self.now:
                same += 1
            elif gen == 0:
                firsts.append(rid)
            else:
                stalled.append(last)
            if gen + 1 >= self._output[rid]:
                done.append((rid, gen + 1))
            else:
                del prefill[rid]
                self._start_decoding(rid, gen + 1)
        if same:
            self.itl_hist[itl_bin(step_ms)] += same
        if stalled:
            np.add.at(self.itl_hist, itl_bins((end - np.array(stalled)) * 1000.0), 1)
        for rid in firsts:
            if math.isnan(self.first_token_s[rid]):
                self.first_token_s[rid] = end
        for rid, gen in done:  # finished on the token sampled right after (re)computing the prompt
            self._finish(rid, end)
            self.generated[rid], self._last_token_s[rid] = gen, end
        self._finish_decoding(end)
        adapters = len(self._active)
        self._log_counts((1, decode, tokens - decode, context, adapters, adapters * tokens,
                          tokens > self.timer.graph_max_tokens, adapters * self.lora.cached,
                          self.timer.exposed_adapters(adapters, tokens), overhead_ms), same)
        self._account(step_ms / 1000.0, running_before, waiting_before, self.total_blocks - self.free_blocks)
        self.now = end
        return True

    def _log_counts(self, counts: tuple[float, ...], gaps: int) -> None:
        """Add one step's (or jump's) ``RAW_COUNTS``; kept in a list and summed in blocks, which is cheaper
        per step than numpy arithmetic on a short vector."""
        self._count_log.append(counts)
        self._gap_log.append(gaps)
        if len(self._gap_log) >= 4096:
            self._fold_counts()

    def _fold_counts(self) -> None:
        if self._gap_log:
            counts = np.array(self._count_log, float)
            self._step_counts += counts.sum(axis=0)
            self._itl_counts += np.array(self._gap_log, float) @ counts
            self._count_log.clear()
            self._gap_log.clear()

    @property
    def step_counts(self) -> np.ndarray:
        """``RAW_COUNTS`` summed over every step."""
        self._fold_counts()
        return self._step_counts

    @property
    def itl_counts(self) -> np.ndarray:
        """``RAW_COUNTS`` summed over steps, each weighted by the inter-token gaps it closed."""
        self._fold_counts()
        return self._itl_counts

    def _account(self, dt_s: float, running: int, waiting: int, used_blocks: float,
                 waiting_area_s: float | None = None) -> None:
        """Time-weighted statistics of ``dt_s`` seconds; a jump during which the queue grew passes its
        waiting area and its largest queue instead of one count."""
        self.area_running += running * dt_s
        self.area_waiting += waiting * dt_s if waiting_area_s is None else waiting_area_s
        self.area_kv_blocks += used_blocks * dt_s
        self.max_waiting_seen = max(self.max_waiting_seen, waiting)
        self.max_running_seen = max(self.max_running_seen, running)

    # ------------------------------------------------------------------ decode jumps
    def _decode_jump(self, next_arrival: float, t_stop: float) -> bool:
        """Advance k >= 2 identical pure-decode steps at once; False when the state does not allow it.

        Allowed when no waiting request can be admitted (:meth:`_admission`), every running request decodes
        (one token each, all within the token budget) and produced a token in the previous step, and no adapter
        of the batch awaits a reload (:attr:`LoraCache.must_reload`). k stops at the first finish (which may free
        an adapter slot), at the last step starting before ``t_stop`` or before an arrival that could be admitted
        (:meth:`_arrivals_matter_from`), and before KV blocks run out, so no event is skipped.
        """
        n, bs = len(self._order), self.block_size
        if n > self.budget or self._prefill or self.lora.must_reload:
            return False
        k = self._next_finish_tick() - self._tick
        if k < 2:
            return False
        admission = self._admission()
        if admission == ADMITS:
            return False
        context0 = self._decoding_context + n
        waiting = len(self.waiting)
        overhead_ms = self.timer.scheduler_ms(n, self.waiting.skipped(self.max_loras))
        d0 = self.timer.step_ms(n, 0, context0, len(self._active), self.lora.cached) + overhead_ms
        delta = self.timer.context_ms_per_token * n  # each step attends n more tokens
        k = min(k, _steps_before(t_stop - self.now, d0, delta))
        if next_arrival < t_stop and _steps_before(next_arrival - self.now, d0, delta) < k:
            k = min(k, _steps_before(self._arrivals_matter_from(admission, next_arrival) - self.now, d0, delta))
        if k < 2:
            return False
        if n * (k // bs + 1) > self.free_blocks:  # cheap bound failed: find the exact KV limit
            k = self._max_steps_within_blocks(k)
            if k < 2:
                return False
        durations_ms = d0 + delta * np.arange(k)
        self.last_step = (n, len(self._active), n)
        total_ms = float(durations_ms.sum())
        end = self.now + total_ms / 1000.0
        used_before = self.total_blocks - self.free_blocks
        self.free_blocks -= self._blocks_needed(k)
        self._tick += k
        self._decoding_context += n * k
        np.add.at(self.itl_hist, itl_bins(durations_ms), n)
        adapters = len(self._active)
        self._log_counts((k, k * n, 0, k * (context0 + n * (k - 1) / 2), k * adapters, k * adapters * n,
                          k * (n > self.timer.graph_max_tokens), k * adapters * self.lora.cached,
                          k * self.timer.exposed_adapters(adapters, n), k * overhead_ms), n)
        used_mean = (used_before + self.total_blocks - self.free_blocks) / 2.0
        last_start = end - float(durations_ms[-1]) / 1000.0
        if next_arrival <= last_start and waiting < self.max_waiting:  # the queue grew during the jump
            queued = self._queue_at_step_starts(durations_ms)
            self._account(total_ms / 1000.0, n, int(queued[-1]), used_mean, float(queued @ durations_ms) / 1000.0)
        else:
            self._account(total_ms / 1000.0, n, waiting, used_mean)
        if next_arrival <= last_start:  # what arrived by the last step's start is queued (or refused) by now
            self._take_arrivals(last_start)
        self.now = end
        self.steps += k
        self.jumped_steps += k
        self._finish_decoding(end)
        return True

    def _blocks_needed(self, k: int) -> int:
        """New KV blocks the decoding requests need over the next k steps: one whenever a request's computed
        tokens cross a multiple of the block size, which happens at ticks fixed by its residue."""
        bs, tick, total = self.block_size, self._tick, 0
        for residue, count in enumerate(self._residue_count):
            if count:
                first = -(residue + tick) % bs  # steps until its first crossing
                if first < k:
                    total += count * ((k - 1 - first) // bs + 1)
        return total

    def _max_steps_within_blocks(self, k_max: int) -> int:
        """Largest k <= k_max whose decode steps need at most the free KV blocks."""
        lo, hi = 0, k_max
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._blocks_needed(mid) <= self.free_blocks:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _admission(self) -> int:
        """Whether the next step admits a waiting request (``ADMITS``); if not, whether that holds whatever
        arrives (``BLOCKED``: the batch is full, the queue is full, or the next candidate lacks KV blocks and
        arrivals queue behind it) or an arrival could be admitted (``AWAITS_ARRIVAL``: no candidate waits).
        Until a request finishes, this stays so (the batch keeps its adapters and sequences, free KV blocks only
        shrink)."""
        n = self.n_running
        if n >= self.max_seqs or n >= self.budget:
            return BLOCKED
        rid = self.waiting.peek(self._adapter_of, self.max_loras) if len(self.waiting) else -1
        if rid >= 0:
            return BLOCKED if self._first_chunk(rid, self.budget - n)[1] > self.free_blocks else ADMITS
        return BLOCKED if len(self.waiting) >= self.max_waiting else AWAITS_ARRIVAL

    def _arrivals_matter_from(self, admission: int, next_arrival: float) -> float:
        """The first arrival time from which a jump must stop: one that could be admitted, or (when every slot
        is taken and skipped requests cost scheduler time) one that joins the queue."""
        if (self.timer.per_skipped_ms != 0.0 and len(self._active) >= self.max_loras
                and len(self.waiting) < self.max_waiting):
            return next_arrival
        if admission == BLOCKED:
            return math.inf
        if len(self._active) < self.max_loras:
            return next_arrival
        return self._next_arrival_of_active_adapter()

    def _next_arrival_of_active_adapter(self) -> float:
        """Arrival time of the next request whose adapter is in the batch: with every slot taken, only such a
        request could be admitted."""
        in_batch = np.zeros(len(self._run_count), bool)
        in_batch[list(self._active)] = True
        start, size = self.n_arrived, 16
        while start < self.n_requests:
            hits = np.flatnonzero(in_batch[self.adapter[start:min(start + size, self.n_requests)]])
            if hits.size:
                return float(self.arrival_s[start + hits[0]])
            start, size = start + size, size * 4
        return math.inf

    def _queue_at_step_starts(self, durations_ms: np.ndarray) -> np.ndarray:
        """Queue length at the start of each of a jump's steps, as the per-step loop would have it: arrivals up
        to a step's start join the queue (requests routed to other replicas do not) until it is full."""
        starts = self.now + np.concatenate(([0.0], np.cumsum(durations_ms[:-1]))) / 1000.0
        first = self.n_arrived
        arrived = np.searchsorted(self.arrival_s[first:self.n_requests], starts, side="right")
        last = first + int(arrived[-1])
        if self.flags.count(ROUTED_AWAY, first, last):
            ours = np.frombuffer(self.flags, np.uint8, last - first, first) != ROUTED_AWAY
            arrived = np.concatenate(([0], np.cumsum(ours)))[arrived]
        return np.minimum(len(self.waiting) + arrived, max(self.max_waiting, len(self.waiting)))

    def _first_chunk(self, rid: int, budget: int) -> tuple[int, int]:
        """Tokens and KV blocks of waiting request ``rid``'s first step within ``budget`` (a preempted request
        recomputes its generated tokens too)."""
        tokens = min(self._prompt[rid] + int(self.generated[rid]), budget)
        return tokens, -(-tokens // self.block_size)

    # ------------------------------------------------------------------ driving
    def run_until(self, t_stop: float) -> None:
        """Run the steps that start before ``t_stop`` (the last may end after it)."""
        while self.now < t_stop:
            next_arrival = float(self.arrival_s[self.n_arrived]) if self.n_arrived < self.n_requests else math.inf
            if next_arrival <= self.now:
                self._take_arrivals()
                continue
            if self.n_running == 0 and not len(self.waiting):
                if next_arrival == math.inf:
                    if math.isfinite(t_stop):
                        self.now = t_stop
                    return
                self.now = min(next_arrival, t_stop)
                continue
            if self.jumps and self.n_running and self._decode_jump(next_arrival, t_stop):
                continue
            if not self.step():  # nothing admissible and nothing running: wait for the next arrival
                if next_arrival == math.inf:
                    return
                self.now = min(next_arrival, t_stop)

    def flag_codes(self) -> np.ndarray:
        return np.frombuffer(bytes(self.flags), np.uint8)

    @property
    def loads_from_disk(self) -> int:
        return self.lora.loads_from_disk

    @property
    def loads_from_cpu(self) -> int:
        return self.lora.loads_from_cpu


def _steps_before(window_s: float, first_ms: float, delta_ms: float) -> int:
    """How many steps of durations first_ms, first_ms + delta_ms, ... start within ``window_s``."""
    if not math.isfinite(window_s):
        return 1 << 40
    window_ms = window_s * 1000.0
    if window_ms <= 0:
        return 0
    if delta_ms <= 1e-15:
        k = math.ceil(window_ms / first_ms)
    else:  # smallest k with k*first + delta*k*(k-1)/2 >= window
        b = first_ms - delta_ms / 2.0
        k = math.ceil((-b + math.sqrt(b * b + 2.0 * delta_ms * window_ms)) / delta_ms)
    start = lambda j: j * first_ms + delta_ms * j * (j - 1) / 2.0  # noqa: E731 - start time of step j, ms
    while k > 0 and start(k - 1) >= window_ms:
        k -= 1
    while start(k) < window_ms:
        k += 1
    return k


try:
    from adaptergym.twin.compiled_engine import CompiledEngine as ReplicaEngine
except ImportError:  # the extension is not built
    warnings.warn("adaptergym: the compiled engine is not built, so the twin runs its pure-Python reference "
                  "(about 20x slower); build it with `pip install -e .` or `python setup.py build_ext --inplace`",
                  RuntimeWarning, stacklevel=2)
    ReplicaEngine = ReferenceEngine  # type: ignore[misc,assignment]
