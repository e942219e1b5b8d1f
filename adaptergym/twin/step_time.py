"""Engine step time (ms) from a profile's linear step model plus scheduler overhead."""

from __future__ import annotations

import numpy as np

from adaptergym.profile import STEP_FEATURES, TwinProfile

_RANK_UNIT = 16.0

#: What the engine counts per step (summed, weighted by the inter-token gaps each step closes); the step
#: model's features are linear in these for a fixed server config, so sums of raw counts give sums of features.
RAW_COUNTS = ("steps", "decode_seqs", "prefill_tokens", "context_tokens", "adapters", "adapter_tokens", "eager",
              "adapter_cached", "exposed_adapters", "overhead_ms")


class StepTimer:
    """Evaluates the profile's step model; built once per run so each step is a few multiplications."""

    def __init__(self, profile: TwinProfile, max_lora_rank: int, lora_enabled: bool, max_loras: int = 0) -> None:
        c = dict(zip(STEP_FEATURES, profile.step_time.vector(), strict=True))
        lora = 1.0 if lora_enabled else 0.0
        self.max_lora_rank, self.max_loras, self.lora_enabled = max_lora_rank, max_loras, lora_enabled
        self._base = c["base_ms"] + lora * (c["lora_base_ms"] + c["lora_per_slot_ms"] * max_loras)
        per_token = lora * (c["lora_per_token_ms"] * max_lora_rank / _RANK_UNIT + c["lora_per_ktoken_ms"] / 1000.0
                            + c["lora_per_slot_ktoken_ms"] * max_loras / 1000.0)
        self._per_decode = c["per_decode_seq_ms"] + per_token
        self._per_prefill = c["per_prefill_token_ms"] + per_token
        self._per_ctx = c["per_context_ktoken_ms"] / 1000.0
        self._per_adapter = lora * (c["lora_per_adapter_ms"]
                                    + c["lora_per_adapter_max_rank_ms"] * max_lora_rank / _RANK_UNIT)
        self._per_adapter_token = lora * c["lora_per_adapter_ktoken_ms"] / 1000.0
        self._per_adapter_cached = lora * c["lora_per_adapter_kcached_ms"] / 1000.0
        self._per_exposed_adapter = lora * c["lora_per_exposed_adapter_ms"]
        self.tokens_per_hidden_adapter = float(profile.step_time.tokens_per_hidden_adapter)
        self._eager = c["eager_ms"]
        self.graph_max_tokens = profile.engine.cuda_graph_max_tokens
        sched = profile.scheduler
        self._sched = (sched.base_ms, sched.per_running_ms, sched.per_skipped_ms)

    def coefficients(self) -> tuple[float, ...]:
        """What the compiled engine evaluates :meth:`step_ms` and :meth:`scheduler_ms` from: base, eager, per
        decode sequence, per prefill token, per context token, per adapter, per adapter and token, per adapter
        and CPU-cached adapter, per exposed adapter (ms), the tokens that hide one adapter, the CUDA-graph token
        limit, and the scheduler's base, per running and per skipped request (ms)."""
        return (self._base, self._eager, self._per_decode, self._per_prefill, self._per_ctx, self._per_adapter,
                self._per_adapter_token, self._per_adapter_cached, self._per_exposed_adapter,
                self.tokens_per_hidden_adapter,
                self.graph_max_tokens, *self._sched)

    @property
    def context_ms_per_token(self) -> float:
        """How much one more token of attended context adds to a step, ms."""
        return self._per_ctx

    @property
    def per_skipped_ms(self) -> float:
        """How much one more skipped waiting request (its adapter has no slot) adds to a scheduler pass, ms."""
        return self._sched[2]

    def step_ms(self, decode_seqs: float, prefill_tokens: float, context_tokens: float, adapters: float,
                cached: float = 0.0) -> float:
        """Time of one forward pass with its LoRA bookkeeping, ms (``cached``: adapters in the CPU cache)."""
        eager = self._eager if decode_seqs + prefill_tokens > self.graph_max_tokens else 0.0
        return (
            self._base
            + eager
            + self._per_decode * decode_seqs
            + self._per_prefill * prefill_tokens
            + self._per_ctx * context_tokens
            + (self._per_adapter + self._per_adapter_token * (decode_seqs + prefill_tokens)
               + self._per_adapter_cached * cached) * adapters
            + self._per_exposed_adapter * self.exposed_adapters(adapters, decode_seqs + prefill_tokens)
        )

    def exposed_adapters(self, adapters: float, tokens: float) -> float:
        """The step's distinct adapters whose weight reads its token work does not hide (a roofline: today's
        per-token terms stand for the compute side, this for what the adapters' reads add beyond it)."""
        return max(0.0, adapters - tokens / self.tokens_per_hidden_adapter)

    def scheduler_ms(self, running: float, skipped: float) -> float:
        """CPU time of one scheduler pass over ``running`` requests and ``skipped`` waiting ones, ms."""
        base, per_running, per_skipped = self._sched
        return max(0.0, base + per_running * running + per_skipped * skipped)

    def design(self, raw: np.ndarray) -> np.ndarray:
        """The step model's features (``STEP_FEATURES`` order) of summed raw counts (``RAW_COUNTS`` order).

        Summed over steps (or weighted by tokens), so ``design(raw) @ coefficients`` is the summed step time
        without scheduler overhead and loading: what calibration regresses measured latency on.
        """
        steps, decode, prefill, context, adapters, adapter_tokens, eager, adapter_cached, exposed, _ = np.moveaxis(
            np.asarray(raw, float), -1, 0)
        lora = 1.0 if self.lora_enabled else 0.0
        columns = {
            "base_ms": steps,
            "per_decode_seq_ms": decode,
            "per_prefill_token_ms": prefill,
            "per_context_ktoken_ms": context / 1000.0,
            "lora_base_ms": lora * steps,
            "lora_per_token_ms": lora * (decode + prefill) * self.max_lora_rank / _RANK_UNIT,
            "lora_per_ktoken_ms": lora * (decode + prefill) / 1000.0,
            "lora_per_adapter_ms": lora * adapters,
            "lora_per_adapter_max_rank_ms": lora * adapters * self.max_lora_rank / _RANK_UNIT,
            "lora_per_slot_ms": lora * self.max_loras * steps,
            "lora_per_slot_ktoken_ms": lora * self.max_loras * (decode + prefill) / 1000.0,
            "lora_per_adapter_ktoken_ms": lora * adapter_tokens / 1000.0,
            "lora_per_adapter_kcached_ms": lora * adapter_cached / 1000.0,
            "lora_per_exposed_adapter_ms": lora * exposed,
            "eager_ms": eager,
        }
        return np.stack([columns[name] for name in STEP_FEATURES], axis=-1)
