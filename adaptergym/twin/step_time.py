"""Engine step time (ms) from a profile's linear step model plus scheduler overhead."""

from __future__ import annotations

from adaptergym.profile import STEP_FEATURES, TwinProfile

_RANK_UNIT = 16.0


class StepTimer:
    """Evaluates the profile's step model; built once per run so each step is a few multiplications."""

    def __init__(self, profile: TwinProfile, max_lora_rank: int, lora_enabled: bool) -> None:
        c = dict(zip(STEP_FEATURES, profile.step_time.vector(), strict=True))
        lora = 1.0 if lora_enabled else 0.0
        self._base = c["base_ms"] + lora * c["lora_base_ms"]
        self._per_decode = c["per_decode_seq_ms"] + lora * c["lora_per_token_ms"] * max_lora_rank / _RANK_UNIT
        self._per_prefill = c["per_prefill_token_ms"] + lora * c["lora_per_token_ms"] * max_lora_rank / _RANK_UNIT
        self._per_ctx = c["per_context_ktoken_ms"] / 1000.0
        self._per_adapter = lora * c["lora_per_adapter_ms"]
        self._per_rank = lora * c["lora_per_adapter_rank_ms"] / _RANK_UNIT
        sched = profile.scheduler
        self._sched = (sched.base_ms, sched.per_running_ms, sched.per_waiting_ms)

    @property
    def context_ms_per_token(self) -> float:
        """How much one more token of attended context adds to a step, ms."""
        return self._per_ctx

    def step_ms(
        self, decode_seqs: int, prefill_tokens: int, context_tokens: int, adapters: int, adapter_rank_sum: int
    ) -> float:
        """GPU time of one forward pass, ms."""
        return (
            self._base
            + self._per_decode * decode_seqs
            + self._per_prefill * prefill_tokens
            + self._per_ctx * context_tokens
            + self._per_adapter * adapters
            + self._per_rank * adapter_rank_sum
        )

    def scheduler_ms(self, running: int, waiting: int) -> float:
        """CPU time of one scheduler pass, ms."""
        base, per_running, per_waiting = self._sched
        return max(0.0, base + per_running * running + per_waiting * waiting)

    @staticmethod
    def features(
        decode_seqs: float, prefill_tokens: float, context_tokens: float, adapters: float, adapter_rank_sum: float,
        max_lora_rank: int, lora_enabled: bool,
    ) -> dict[str, float]:
        """The step model's feature vector (what calibration regresses on)."""
        lora = 1.0 if lora_enabled else 0.0
        return {
            "base_ms": 1.0,
            "per_decode_seq_ms": decode_seqs,
            "per_prefill_token_ms": prefill_tokens,
            "per_context_ktoken_ms": context_tokens / 1000.0,
            "lora_base_ms": lora,
            "lora_per_token_ms": lora * (decode_seqs + prefill_tokens) * max_lora_rank / _RANK_UNIT,
            "lora_per_adapter_ms": lora * adapters,
            "lora_per_adapter_rank_ms": lora * adapter_rank_sum / _RANK_UNIT,
        }
