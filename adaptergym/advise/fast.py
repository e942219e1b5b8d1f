"""A fast estimate of one GPU serving a workload under a server config: what the search ranks configs by.

It is a ranking aid, never printed as a prediction (the twin predicts the recommendation). Per config:

- start-up: the twin's exact memory check (:func:`adaptergym.twin.check_startup`);
- capacity: the analytic scorer's full-batch throughput (:func:`adaptergym.scoring.full_batch_capacity_tok_s`:
  ``max_num_seqs``, the KV cache and the token budget bound the batch), less the share of GPU time adapter
  loads take: requests of adapters beyond the hottest ``max_loras`` load from CPU, beyond the hottest
  ``max_cpu_loras`` from disk too (as if the caches held the hottest adapters; LRU does worse, so this is
  optimistic);
- served: ``min(offered, capacity)``, and no more than the surrogate predicts at that ``max_loras`` when one
  ships for the profile (trained on twin runs at the profile's default memory settings; it sees slot churn that
  the closed form misses); starved by the papers' rule or the surrogate's verdict;
- adapter slots: a request holds its adapter's GPU slot for its output tokens' steps, so adapter ``i`` needs a
  slot a share ``1 - exp(-rate_i x holding time)`` of the time; more busy adapters on average than
  ``max_loras`` is starved (requests wait for slots without end);
- latency: the batch that Little's law keeps running at the offered rate (each request holds a sequence for
  its output tokens' steps), its step time as ITL, and a TTFT proxy of one step inflated by ``1 / (1 - load)``
  for the GPU and for the slots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from adaptergym.metrics import STARVATION_THRESHOLD
from adaptergym.profile import TwinProfile
from adaptergym.scoring import cpu_cached, full_batch, full_batch_capacity_tok_s
from adaptergym.server_capacity import mean_lengths
from adaptergym.twin import ServerConfig, check_startup
from adaptergym.twin.lora_cache import load_ms_by_rank
from adaptergym.twin.step_time import StepTimer
from adaptergym.workload import WorkloadSpec

#: Fixed-point iterations of the Little's-law batch (it converges geometrically well before).
LITTLE_ITERATIONS = 40
#: Load (offered / capacity) at which the TTFT proxy stops growing, so it stays finite.
MAX_LOAD = 0.99


@dataclass(frozen=True, slots=True)
class Estimate:
    """The fast model's view of one config (tokens/s, ms, GiB)."""

    capacity_tok_s: float
    served_tok_s: float
    starved: bool
    itl_ms: float
    ttft_ms: float
    free_gib: float


class FastModel:
    """Estimates (module doc) for one workload on one profile; build once, call :meth:`estimate` per config."""

    def __init__(self, workload: WorkloadSpec, profile: TwinProfile) -> None:
        order = np.argsort([-a.rate for a in workload.adapters], kind="stable")
        self.profile = profile
        self.lengths = workload.lengths
        self.rates = np.array([workload.adapters[i].rate for i in order])
        self.ranks = np.array([workload.adapters[i].rank for i in order])
        self.prompt, self.output = mean_lengths(workload.lengths)
        self.offered_tok_s = float(self.rates.sum()) * (self.prompt + self.output)
        self.cpu_to_gpu_ms = load_ms_by_rank(profile.loading.cpu_to_gpu_ms, self.ranks)
        self.disk_to_cpu_ms = load_ms_by_rank(profile.loading.disk_to_cpu_ms, self.ranks)
        self.surrogate = _shipped_surrogate(profile)
        self._surrogate_at: dict[int, tuple[float, bool]] = {}
        self._timers: dict[tuple[int, int], StepTimer] = {}

    def estimate(self, config: ServerConfig) -> Estimate | None:
        """The estimate for a resolved ``config``; None when vLLM would not start with it."""
        startup = check_startup(self.profile, config)
        if not startup.ok:
            return None
        rank, slots = int(config.max_lora_rank or 0), config.max_loras
        timer = self._timers.setdefault((rank, slots), StepTimer(self.profile, rank, True, slots))
        distinct, cached = min(slots, self.rates.size), cpu_cached(config, self.rates.size)
        capacity = full_batch_capacity_tok_s(timer, config, startup.kv_cache_tokens, distinct, cached, self.lengths)
        load_s_per_s = (self.rates[slots:] @ self.cpu_to_gpu_ms[slots:]
                        + self.rates[config.max_cpu_loras:] @ self.disk_to_cpu_ms[config.max_cpu_loras:]) / 1000.0
        capacity *= max(0.0, 1.0 - load_s_per_s)
        served = min(self.offered_tok_s, capacity)
        starved = served < (1.0 - STARVATION_THRESHOLD) * self.offered_tok_s
        if self.surrogate is not None:
            surrogate_served, surrogate_starved = self._surrogate(slots)
            served, starved = min(served, surrogate_served), starved or surrogate_starved
        batch = self._little_batch(timer, config, startup.kv_cache_tokens, distinct, cached)
        itl = timer.step_ms(batch, batch * self.prompt / self.output, batch * (self.prompt + self.output / 2),
                            min(distinct, math.ceil(batch)), cached) + timer.scheduler_ms(batch, 0)
        busy_adapters = float(np.sum(-np.expm1(-self.rates * self.output * itl / 1000.0)))
        starved = starved or busy_adapters > slots
        load = min(self.offered_tok_s / capacity, MAX_LOAD) if capacity > 0 else MAX_LOAD
        slot_load = min(busy_adapters / slots, MAX_LOAD)
        prefill_steps = 1.0 + self.prompt / (config.max_num_batched_tokens or 1)
        ttft = math.inf if starved else itl * prefill_steps / (1 - load) / (1 - slot_load)
        free = self.profile.memory.gpu_memory_gib * (1.0 - (config.gpu_memory_utilization or 0.0))
        return Estimate(capacity, served, starved, itl, ttft, free)

    def _little_batch(self, timer: StepTimer, config: ServerConfig, kv_tokens: int, distinct: int,
                      cached: int) -> float:
        """Sequences running at the offered rate: ``n = rate x output tokens x step time(n)``, capped at the full
        batch."""
        cap = full_batch(config, kv_tokens, self.lengths)
        rate = float(self.rates.sum())
        n = 1.0
        for _ in range(LITTLE_ITERATIONS):
            step_ms = timer.step_ms(n, n * self.prompt / self.output, n * (self.prompt + self.output / 2),
                                    min(distinct, math.ceil(n)), cached) + timer.scheduler_ms(n, 0)
            n = min(cap, max(1.0, rate * self.output * step_ms / 1000.0))
        return n

    def _surrogate(self, max_loras: int) -> tuple[float, bool]:
        """The surrogate's served tokens/s and starvation verdict at ``max_loras`` (cached)."""
        if max_loras not in self._surrogate_at:
            from adaptergym.surrogate import gpu_features

            row = gpu_features(self.rates, self.ranks, max_loras, self.lengths)[None]
            predicted = self.surrogate.predict(row)
            self._surrogate_at[max_loras] = (float(predicted["throughput"][0]),
                                             bool(predicted["starved_prob"][0] >= 0.5))
        return self._surrogate_at[max_loras]


def _shipped_surrogate(profile: TwinProfile) -> Any:
    """The profile's shipped surrogate, or None when none ships."""
    from adaptergym.surrogate import load_surrogate

    return load_surrogate(profile)
