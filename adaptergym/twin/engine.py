"""One vLLM V1 replica: continuous batching, chunked prefill, KV blocks, recompute preemption, LoRA slots.

The engine is a step loop, like vLLM's engine core. Each step schedules running requests first (in admission
order) under the token budget, preempting the newest running request when a KV block cannot be allocated,
then admits waiting requests FCFS (preempted ones first) unless a preemption happened in that step. A waiting
request whose adapter would exceed ``max_loras`` distinct adapters in the batch is skipped, not blocking.
Running-request state lives in numpy arrays so a step costs a handful of vector operations, not one Python
iteration per request.
"""

from __future__ import annotations

import heapq
import math
from collections import deque

import numpy as np

from adaptergym.profile import TwinProfile
from adaptergym.twin.config import ServerConfig
from adaptergym.twin.lora_cache import LoraCache
from adaptergym.twin.record import RunRecord
from adaptergym.twin.startup import Startup
from adaptergym.twin.step_time import StepTimer
from adaptergym.workload.requests import RequestBatch

#: ITL histogram: log-spaced bins with 0.5% width from 0.01 ms upward.
ITL_BIN_WIDTH = math.log(1.005)
ITL_MIN_MS = 0.01
ITL_BINS = 4000
_NO_HEAD = 1 << 62


def _itl_bin(gaps_s: np.ndarray) -> np.ndarray:
    ms = np.maximum(gaps_s * 1000.0, ITL_MIN_MS)
    return np.minimum((np.log(ms / ITL_MIN_MS) / ITL_BIN_WIDTH).astype(np.int64), ITL_BINS - 1)


class ReplicaEngine:
    """Simulates one replica over a fixed set of requests (``run_until`` may be called repeatedly)."""

    def __init__(self, profile: TwinProfile, config: ServerConfig, requests: RequestBatch, startup: Startup):
        self.config = config
        self.startup = startup
        self.requests = requests
        self.block_size = profile.engine.block_size
        self.max_waiting = profile.engine.max_waiting_requests
        self.budget = int(config.max_num_batched_tokens or profile.engine.max_num_batched_tokens)
        self.max_seqs = int(config.max_num_seqs or profile.engine.max_num_seqs)
        self.max_loras = config.max_loras if config.enable_lora else 1 << 30
        self.total_blocks = startup.kv_blocks
        self.free_blocks = startup.kv_blocks
        self.timer = StepTimer(profile, int(config.max_lora_rank or 0), config.enable_lora)
        n = len(requests)
        n_adapters = len(requests.adapter_ids)
        self._arrival = requests.arrival_s
        self._adapter = requests.adapter.tolist()
        self._prompt = requests.input_tokens.tolist()
        self._ranks = requests.adapter_ranks.tolist()
        self.lora = LoraCache(config.max_loras, int(config.max_cpu_loras or config.max_loras),
                              requests.adapter_ranks, profile.loading)
        # Per-request results.
        self.first_token_s = np.full(n, np.nan)
        self.finish_s = np.full(n, np.nan)
        self.preemptions = np.zeros(n, np.int64)
        self.refused = bytearray(n)  # 0: ours, 1: refused (queue full), 2: routed to another replica
        self._gen_saved = np.zeros(n, np.int64)
        self._last_saved = np.full(n, np.nan)
        # Waiting queue: preempted requests (front), then per-adapter FCFS queues of arrived requests.
        self._preempted: deque[int] = deque()
        order = np.argsort(requests.adapter, kind="stable")
        bounds = np.searchsorted(requests.adapter[order], np.arange(n_adapters + 1))
        self._queue = order.tolist()
        self._ptr = bounds[:-1].tolist()
        self._end = bounds[1:].tolist()
        self._head = [self._queue[p] if p < e else _NO_HEAD for p, e in zip(self._ptr, self._end, strict=True)]
        self._heap = [(h, a) for a, h in enumerate(self._head) if h != _NO_HEAD]
        heapq.heapify(self._heap)
        self.n_arrived = 0
        self._admitted_fresh = 0
        self.n_refused = 0
        self._n_excluded = 0
        # Running batch, in admission order.
        cap = max(1, min(self.max_seqs, n))
        # One int matrix (a row per field) so finishing requests compacts every field in one operation.
        self._r = np.zeros((7, cap), np.int64)
        self._r_id = self._r[0]
        self._r_ntok = self._r[1]  # tokens known: prompt + generated
        self._r_comp = self._r[2]  # tokens whose KV is computed
        self._r_out = self._r[3]
        self._r_gen = self._r[4]
        self._r_blocks = self._r[5]
        self._r_adapter = self._r[6]
        self._r_last = np.zeros(cap)  # time of the last token, s
        self.n_running = 0
        self._run_count = [0] * n_adapters
        self._active: set[int] = set()
        self._rank_sum = 0
        self._output = requests.output_tokens
        # Clock and statistics.
        self.now = 0.0
        self.steps = 0
        self.itl_hist = np.zeros(ITL_BINS, np.int64)
        self.busy_s = 0.0
        self.area_running = 0.0
        self.area_waiting = 0.0
        self.area_kv_blocks = 0.0
        self.max_waiting_seen = 0
        self.max_running_seen = 0

    # ------------------------------------------------------------------ queue helpers
    @property
    def n_waiting(self) -> int:
        return len(self._preempted) + self.n_arrived - self._admitted_fresh - self.n_refused - self._n_excluded

    @property
    def n_outstanding(self) -> int:
        """Requests in the replica (running + waiting): what a least-loaded router compares."""
        return self.n_running + self.n_waiting

    def _take_arrivals(self) -> None:
        """Move requests that arrived by ``now`` into the waiting queue, refusing those over the cap."""
        arrived = int(np.searchsorted(self._arrival, self.now, side="right"))
        if arrived <= self.n_arrived:
            return
        flags = self.refused
        excluded = flags.count(2, self.n_arrived, arrived)
        incoming = arrived - self.n_arrived - excluded
        over = min(incoming, self.n_waiting + incoming - self.max_waiting)
        if over > 0:
            if excluded == 0:
                flags[arrived - over : arrived] = b"\x01" * over
            else:
                remaining = over
                for rid in range(arrived - 1, self.n_arrived - 1, -1):
                    if remaining == 0:
                        break
                    if flags[rid] == 0:
                        flags[rid] = 1
                        remaining -= 1
            self.n_refused += over
        self._n_excluded += excluded
        self.n_arrived = arrived

    def exclude(self, rid: int) -> None:
        """Mark a request as routed to another replica (it must not have been taken from arrivals yet)."""
        self.refused[rid] = 2

    def _eligible(self, adapter: int) -> bool:
        return self._run_count[adapter] > 0 or len(self._active) < self.max_loras

    def _advance(self, adapter: int, step: int = 1) -> None:
        """Move an adapter's queue head ``step`` places, then past refused or routed-away requests."""
        p, end, q, refused = self._ptr[adapter] + step, self._end[adapter], self._queue, self.refused
        while p < end and refused[q[p]]:
            p += 1
        self._ptr[adapter] = p
        head = q[p] if p < end else _NO_HEAD
        self._head[adapter] = head
        if head != _NO_HEAD:
            heapq.heappush(self._heap, (head, adapter))

    def _fresh_head(self) -> tuple[int, int]:
        """(request id, adapter) of the oldest arrived, eligible, not-yet-admitted request, or (-1, -1)."""
        head = self._head
        while True:
            if len(self._active) < self.max_loras:
                heap = self._heap
                while heap and heap[0][0] != head[heap[0][1]]:
                    heapq.heappop(heap)
                if not heap:
                    return -1, -1
                rid, adapter = heap[0]
            else:
                adapter = min(self._active, key=head.__getitem__)
                rid = head[adapter]
            if rid >= self.n_arrived:
                return -1, -1
            if not self.refused[rid]:
                return rid, adapter
            self._advance(adapter, 0)

    # ------------------------------------------------------------------ running-batch helpers
    def _append_running(self, rid: int, chunk_tokens: int) -> None:
        k = self.n_running
        gen = int(self._gen_saved[rid])
        self._r_id[k] = rid
        self._r_ntok[k] = self._prompt[rid] + gen
        self._r_comp[k] = 0
        self._r_out[k] = self._output[rid]
        self._r_gen[k] = gen
        self._r_blocks[k] = 0
        self._r_last[k] = self._last_saved[rid]
        self._r_adapter[k] = self._adapter[rid]
        self.n_running = k + 1

    def _enter_batch(self, adapter: int) -> float:
        """Count a request of ``adapter`` into the batch; return LoRA load time in ms."""
        load_ms = 0.0
        if self._run_count[adapter] == 0:
            self._active.add(adapter)
            self._rank_sum += self._ranks[adapter]
            if self.config.enable_lora:
                load_ms = self.lora.activate(adapter, self._run_count)
        self._run_count[adapter] += 1
        return load_ms

    def _leave_batch(self, adapter: int) -> None:
        self._run_count[adapter] -= 1
        if self._run_count[adapter] == 0:
            self._active.discard(adapter)
            self._rank_sum -= self._ranks[adapter]

    # ------------------------------------------------------------------ scheduling
    def _schedule_running(self) -> tuple[np.ndarray, int, bool]:
        """Token counts for running requests [0, len) this step, remaining budget, and whether any preempted."""
        n, bs = self.n_running, self.block_size
        if n == 0:
            return np.zeros(0, np.int64), self.budget, False
        new = self._r_ntok[:n] - self._r_comp[:n]
        cum = np.cumsum(new)
        if cum[-1] > self.budget:
            s = int(np.searchsorted(cum, self.budget, side="left")) + 1
            new = new[:s].copy()
            new[-1] -= int(cum[s - 1]) - self.budget
            budget_left = 0
        else:
            s, budget_left = n, self.budget - int(cum[-1])
        need = (self._r_comp[:s] + new + bs - 1) // bs - self._r_blocks[:s]
        total_need = int(need.sum())
        if total_need <= self.free_blocks:
            self.free_blocks -= total_need
            return new, budget_left, False
        return self._schedule_running_with_preemption(new, need)

    def _schedule_running_with_preemption(self, new: np.ndarray, need: np.ndarray) -> tuple[np.ndarray, int, bool]:
        """KV blocks ran out: preempt from the newest end, exactly as vLLM's request-by-request loop would.

        Request ``i`` (in order) is scheduled if its blocks, plus those of the requests scheduled before it,
        fit in the free blocks plus the blocks of the newest requests preempted so far; vLLM preempts the
        newest running request until that holds, or preempts request ``i`` itself and stops.
        """
        n = self.n_running
        held_suffix = np.concatenate([np.cumsum(self._r_blocks[:n][::-1])[::-1], [0]])  # blocks of [m, n)
        required = np.cumsum(need) - self.free_blocks
        # Largest m with held_suffix[m] >= required[i]  (held_suffix is non-increasing in m).
        keep = n - np.searchsorted(held_suffix[::-1], required, side="left")
        failing = np.flatnonzero(keep <= np.arange(new.size))
        scheduled = int(failing[0]) if failing.size else new.size
        first_preempted = scheduled if failing.size else int(keep[scheduled - 1])
        self._preempt_from(first_preempted)
        self.free_blocks -= int(need[:scheduled].sum())
        return new[:scheduled], 0, True

    def _preempt_from(self, first: int) -> None:
        """Recompute-preempt running requests [first, n): free their blocks; they go first in line."""
        n = self.n_running
        if first >= n:
            return
        ids = self._r_id[first:n]
        self.free_blocks += int(self._r_blocks[first:n].sum())
        self._gen_saved[ids] = self._r_gen[first:n]
        self._last_saved[ids] = self._r_last[first:n]
        self.preemptions[ids] += 1
        self._preempted.extendleft(ids[::-1].tolist())
        for adapter in self._r_adapter[first:n].tolist():
            self._leave_batch(adapter)
        self.n_running = first

    def _admit_waiting(self, budget: int) -> tuple[list[int], float]:
        """Admit waiting requests FCFS under the budget, KV blocks, max_num_seqs and max_loras."""
        chunks: list[int] = []
        load_ms = 0.0
        bs = self.block_size
        while budget > 0 and self.n_running < self.max_seqs:
            rid, position, fresh_adapter = -1, -1, -1
            for i, candidate in enumerate(self._preempted):
                if self._eligible(self._adapter[candidate]):
                    rid, position = candidate, i
                    break
            if rid < 0:
                rid, fresh_adapter = self._fresh_head()
                if rid < 0:
                    break
            tokens = min(self._prompt[rid] + int(self._gen_saved[rid]), budget)
            blocks = -(-tokens // bs)
            if blocks > self.free_blocks:
                break
            if position >= 0:
                del self._preempted[position]
            else:
                self._admitted_fresh += 1
                self._advance(fresh_adapter)
            self.free_blocks -= blocks
            self._append_running(rid, tokens)
            load_ms += self._enter_batch(self._adapter[rid])
            chunks.append(tokens)
            budget -= tokens
        return chunks, load_ms

    # ------------------------------------------------------------------ the step
    def step(self) -> bool:
        """Run one engine step at ``now``; return False if nothing could be scheduled."""
        waiting_before = self.n_waiting
        running_before = self.n_running
        new, budget, preempted = self._schedule_running()
        load_ms = 0.0
        if not preempted and budget > 0 and new.size == self.n_running:
            chunks, load_ms = self._admit_waiting(budget)
            if chunks:
                new = np.concatenate([new, np.asarray(chunks, np.int64)])
        s = new.size
        if s == 0:
            return False
        comp = self._r_comp[:s]
        tokens = int(new.sum())
        decode = int(np.count_nonzero(new == 1))
        context = int(comp.sum()) + tokens
        step_ms = (
            self.timer.step_ms(decode, tokens - decode, context, len(self._active), self._rank_sum)
            + self.timer.scheduler_ms(running_before, waiting_before)
            + load_ms
        )
        dt = step_ms / 1000.0
        end = self.now + dt
        comp += new
        self._r_blocks[:s] = (comp + self.block_size - 1) // self.block_size
        produced_mask = comp == self._r_ntok[:s]
        if produced_mask.all():  # common case (no partial prefill chunk): slices, no gathers
            self._record_tokens(slice(0, s), end)
        elif produced_mask.any():
            self._record_tokens(np.flatnonzero(produced_mask), end)
        self._account(dt, running_before, waiting_before)
        self.now = end
        self.steps += 1
        return True

    def _record_tokens(self, produced: slice | np.ndarray, end: float) -> None:
        """Each request in ``produced`` sampled a token at ``end``: ITL, first token, finishes."""
        gen = self._r_gen[produced]
        last = self._r_last[produced]
        # Requests that also produced a token in the previous step all share the gap ``end - now``.
        same = last == self.now
        n_same = int(np.count_nonzero(same))
        if n_same:
            self.itl_hist[_itl_bin(np.array([end - self.now]))] += n_same
        stalled = last[(gen > 0) & ~same]
        if stalled.size:
            np.add.at(self.itl_hist, _itl_bin(end - stalled), 1)
        firsts = np.flatnonzero(gen == 0)
        if firsts.size:
            ids = self._r_id[produced][firsts]
            unset = np.isnan(self.first_token_s[ids])
            self.first_token_s[ids[unset]] = end
        if isinstance(produced, slice):
            gen += 1  # a view: updates the running batch in place
            self._r_ntok[produced] += 1
            self._r_last[produced] = end
            done = np.flatnonzero(gen >= self._r_out[produced])
        else:
            gen += 1
            self._r_gen[produced] = gen
            self._r_ntok[produced] += 1
            self._r_last[produced] = end
            done = produced[gen >= self._r_out[produced]]
        if done.size:
            self._finish(done, end)

    def _finish(self, done: np.ndarray, end: float) -> None:
        n = self.n_running
        self.finish_s[self._r_id[done]] = end
        self.free_blocks += int(self._r_blocks[done].sum())
        for adapter in self._r_adapter[done].tolist():
            self._leave_batch(adapter)
        keep = np.ones(n, bool)
        keep[done] = False
        m = n - done.size
        self._r[:, :m] = self._r[:, :n][:, keep]
        self._r_last[:m] = self._r_last[:n][keep]
        self.n_running = m

    def _account(self, dt: float, running: int, waiting: int) -> None:
        self.busy_s += dt
        self.area_running += running * dt
        self.area_waiting += waiting * dt
        self.area_kv_blocks += (self.total_blocks - self.free_blocks) * dt
        self.max_waiting_seen = max(self.max_waiting_seen, waiting)
        self.max_running_seen = max(self.max_running_seen, running)

    # ------------------------------------------------------------------ driving
    def run_until(self, t_stop: float) -> None:
        """Run steps that start before ``t_stop`` (the last may end after it)."""
        n = len(self.requests)
        while self.now < t_stop:
            self._take_arrivals()
            if self.n_running == 0 and self.n_waiting == 0:
                if self.n_arrived >= n:
                    self.now = t_stop if math.isfinite(t_stop) else self.now
                    return
                self.now = max(self.now, float(self._arrival[self.n_arrived]))
                if self.now >= t_stop:
                    return
                continue
            if not self.step():
                if self.n_arrived >= n:
                    return
                self.now = max(self.now, float(self._arrival[min(self.n_arrived, n - 1)]))

    def record(self, duration_s: float) -> RunRecord:
        """Everything the metrics layer needs, as arrays (requests routed elsewhere are left out)."""
        flags = np.frombuffer(self.refused, np.uint8)
        mine = flags != 2
        req = self.requests
        return RunRecord(
            startup=self.startup,
            duration_s=duration_s,
            arrival_s=req.arrival_s[mine],
            adapter=req.adapter[mine],
            input_tokens=req.input_tokens[mine],
            output_tokens=req.output_tokens[mine],
            first_token_s=self.first_token_s[mine],
            finish_s=self.finish_s[mine],
            preemptions=self.preemptions[mine],
            refused=flags[mine] == 1,
            adapter_ids=req.adapter_ids,
            itl_hist=self.itl_hist,
            steps=self.steps,
            busy_s=self.busy_s,
            mean_running=self.area_running / max(self.now, 1e-12),
            mean_waiting=self.area_waiting / max(self.now, 1e-12),
            max_waiting=self.max_waiting_seen,
            max_running=self.max_running_seen,
            mean_kv_usage=self.area_kv_blocks / max(self.now, 1e-12) / max(self.total_blocks, 1),
            loads_from_disk=self.lora.loads_from_disk,
            loads_from_cpu=self.lora.loads_from_cpu,
            sim_time_s=self.now,
        )

    @property
    def drained(self) -> bool:
        return self.n_arrived >= len(self.requests) and self.n_running == 0 and self.n_waiting == 0
