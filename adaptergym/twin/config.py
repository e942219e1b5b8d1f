"""Server configuration of one vLLM replica (the knobs a placement decides)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from adaptergym.errors import ConfigError
from adaptergym.profile import TwinProfile


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """The vLLM serve flags the twin models. ``None`` means "the profile's default"."""

    max_loras: int = field(default=8, metadata={"help": "GPU adapter slots (--max-loras)"})
    max_cpu_loras: int | None = field(default=None, metadata={"help": "CPU adapter cache (--max-cpu-loras)"})
    max_lora_rank: int | None = field(default=None, metadata={"help": "--max-lora-rank; default: profile's"})
    max_num_seqs: int | None = field(default=None, metadata={"help": "--max-num-seqs"})
    max_num_batched_tokens: int | None = field(default=None, metadata={"help": "--max-num-batched-tokens"})
    enable_lora: bool = field(default=True, metadata={"help": "--enable-lora"})
    gpu_memory_utilization: float | None = field(
        default=None, metadata={"help": "--gpu-memory-utilization: share of GPU memory vLLM may use (weights, "
                                        "LoRA slots, activations, and the rest as KV cache); default: profile's"})
    max_model_len: int | None = field(
        default=None, metadata={"help": "--max-model-len: longest request (prompt + output) vLLM accepts; the KV "
                                        "cache must hold one; default: the model's context (profile's)"})

    def resolved(self, profile: TwinProfile) -> ServerConfig:
        """Fill unset fields from the profile (vLLM's own rule: max_cpu_loras defaults to max_loras)."""
        eng = profile.engine
        cfg = replace(
            self,
            max_cpu_loras=self.max_cpu_loras if self.max_cpu_loras is not None else self.max_loras,
            max_lora_rank=self.max_lora_rank or eng.max_lora_rank,
            max_num_seqs=self.max_num_seqs or eng.max_num_seqs,
            max_num_batched_tokens=self.max_num_batched_tokens or eng.max_num_batched_tokens,
            gpu_memory_utilization=(self.gpu_memory_utilization if self.gpu_memory_utilization is not None
                                    else profile.memory.gpu_memory_utilization),
            max_model_len=self.max_model_len or profile.memory.max_model_len,
        )
        cfg.validate()
        if cfg.max_model_len > profile.memory.max_model_len:
            raise ConfigError(f"max_model_len: {cfg.max_model_len} exceeds the model's context length "
                              f"{profile.memory.max_model_len} (profile memory.max_model_len), which vLLM refuses")
        return cfg

    def validate(self) -> None:
        """Reject values vLLM's argument parser itself rejects (start-up memory is the twin's job)."""
        if self.max_loras < 1:
            raise ConfigError(f"max_loras: {self.max_loras} must be >= 1")
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ConfigError(f"max_cpu_loras: {self.max_cpu_loras} must be >= max_loras ({self.max_loras}), "
                              "as vLLM requires")
        if self.max_lora_rank is not None and self.max_lora_rank not in VLLM_MAX_LORA_RANKS:
            raise ConfigError(f"max_lora_rank: {self.max_lora_rank} is not one vLLM accepts "
                              f"{VLLM_MAX_LORA_RANKS}")
        for name in ("max_num_seqs", "max_num_batched_tokens", "max_model_len"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name}: {value} must be >= 1")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(f"gpu_memory_utilization: {self.gpu_memory_utilization} must be in (0, 1], "
                              "a share of the GPU's memory (vLLM's default 0.9)")


VLLM_MAX_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def default_rank(config: ServerConfig, ranks: Sequence[int] | np.ndarray) -> ServerConfig:
    """Leave an explicit ``max_lora_rank`` alone; otherwise use the smallest vLLM value covering ``ranks``."""
    if config.max_lora_rank is not None or len(ranks) == 0:
        return config
    largest = int(max(ranks))
    return replace(config, max_lora_rank=next((r for r in VLLM_MAX_LORA_RANKS if r >= largest), largest))
