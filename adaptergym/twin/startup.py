"""Start-up feasibility: does vLLM start with this config, and how many KV tokens does it get?

(S-LoRA's accounting, a fixed pool, is ``adaptergym.twin.slora.pool_startup``; ``adaptergym.twin.check_startup``
picks by the profile's framework.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adaptergym.profile import GIB, MemoryModel, TwinProfile
from adaptergym.twin.config import ServerConfig

OK = "ok"
OOM = "oom"
NO_KV_MEMORY = "no_kv_memory"
KV_TOO_SMALL = "kv_insufficient_for_max_model_len"


@dataclass(frozen=True, slots=True)
class Startup:
    """Outcome of vLLM's start-up memory profiling."""

    status: str
    kv_cache_tokens: int
    kv_blocks: int
    lora_gib: float
    message: str

    @property
    def ok(self) -> bool:
        return self.status == OK


def lora_memory_gib(profile: TwinProfile, max_loras: int, max_lora_rank: int) -> float:
    """GPU memory vLLM reserves for LoRA slots: every slot is sized for ``max_lora_rank``."""
    mem = profile.memory
    return max_loras * (mem.lora_slot_gib_fixed + mem.lora_slot_gib_per_rank * max_lora_rank)


def kv_cache_gib(memory: MemoryModel, lora_gib: float | np.ndarray,
                 gpu_memory_utilization: float | None = None) -> float | np.ndarray:
    """GiB vLLM leaves for KV cache: its ``gpu_memory_utilization`` share of GPU memory (the profile's when None)
    minus weights, LoRA slots (``lora_gib``, a number or an array) and peak activations; negative when they do
    not fit in that share."""
    share = memory.gpu_memory_utilization if gpu_memory_utilization is None else gpu_memory_utilization
    return memory.gpu_memory_gib * share - memory.weights_gib - lora_gib - memory.activation_gib


def vllm_startup(profile: TwinProfile, config: ServerConfig) -> Startup:
    """Replay vLLM's start-up memory accounting.

    Weights, LoRA slots and peak activations must fit in physical memory (else ``oom``); what is left of
    ``gpu_memory_utilization`` becomes KV cache in whole blocks (none left: ``no_kv_memory``); the KV cache must
    hold one ``max_model_len`` sequence (else ``kv_insufficient_for_max_model_len``). Both come from the config,
    else the profile: a lower utilization is a smaller KV budget, down to a refusal that a shorter
    ``max_model_len`` can lift.
    """
    mem = profile.memory
    lora = lora_memory_gib(profile, config.max_loras, config.max_lora_rank or 0) if config.enable_lora else 0.0
    resident = mem.weights_gib + lora + mem.activation_gib
    if resident > mem.gpu_memory_gib:
        return Startup(OOM, 0, 0, lora, f"weights+LoRA+activations need {resident:.1f} GiB > "
                                        f"{mem.gpu_memory_gib:.1f} GiB of GPU memory")
    kv_gib = kv_cache_gib(mem, lora, config.gpu_memory_utilization)
    block = profile.engine.block_size
    blocks = int(kv_gib * GIB // (mem.kv_bytes_per_token * block)) if kv_gib > 0 else 0
    tokens = blocks * block
    if blocks <= 0:
        return Startup(NO_KV_MEMORY, 0, 0, lora, f"no memory left for KV cache ({kv_gib:.2f} GiB)")
    longest = config.max_model_len or mem.max_model_len
    if tokens < longest:
        return Startup(KV_TOO_SMALL, tokens, blocks, lora, f"KV cache holds {tokens} tokens < max_model_len {longest}")
    return Startup(OK, tokens, blocks, lora, f"KV cache {tokens} tokens")
