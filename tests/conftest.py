"""Shared fixtures: profiles small enough to hand-compute, and the real-data location."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from adaptergym.profile import LoadTimeModel, MemoryModel, SchedulerOverhead, StepTimeModel, TwinProfile

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def toy_profile(kv_tokens: int = 1 << 20, max_model_len: int = 4096, **coefficients: float) -> TwinProfile:
    """A profile with round numbers: KV capacity of ``kv_tokens`` and a simple step model."""
    coeffs = {"base_ms": 10.0, "per_decode_seq_ms": 0.1, "per_prefill_token_ms": 0.02,
              "per_context_ktoken_ms": 0.5, "lora_base_ms": 2.0, "lora_per_adapter_ms": 0.3}
    coeffs.update(coefficients)
    bytes_per_token = 1024
    memory = MemoryModel(gpu_memory_gib=10.0, gpu_memory_utilization=1.0, weights_gib=1.0, activation_gib=1.0,
                         lora_slot_gib_per_rank=0.0, lora_slot_gib_fixed=0.0, kv_bytes_per_token=bytes_per_token,
                         max_model_len=max_model_len)
    # Choose weights so that exactly kv_tokens fit (rounded to blocks).
    kv_gib = kv_tokens * bytes_per_token / 1024**3
    memory = dataclasses.replace(memory, weights_gib=10.0 - 1.0 - kv_gib)
    return TwinProfile(name="toy", memory=memory, step_time=StepTimeModel(coeffs),
                       loading=LoadTimeModel({"16": 5.0}, {"16": 20.0}),
                       scheduler=SchedulerOverhead(base_ms=0.0, per_running_ms=0.0, per_skipped_ms=0.0))


def with_api_server_hold(profile: TwinProfile, hold_ms: float) -> TwinProfile:
    """``profile`` whose vLLM API server holds a request of an adapter it has not resolved lately for ``hold_ms``."""
    return dataclasses.replace(profile, loading=dataclasses.replace(profile.loading, api_server_new_adapter_ms=hold_ms))


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real measurements not present at {SHARED_DATA}")
    return SHARED_DATA
