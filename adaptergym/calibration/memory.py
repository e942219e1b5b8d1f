"""GPU memory model from vLLM start-ups: KV capacity vs (max_loras, max_lora_rank), and what refuses to start.

vLLM profiles memory at start-up: weights plus LoRA buffers (every slot sized for ``max_lora_rank``) are
resident; of ``gpu_memory_utilization`` x GPU memory, what activations leave becomes KV cache. So across
start-ups ``weights(G, r) + kv_tokens x bytes_per_token`` is constant. Fitting the reported weights linearly in
``G*r`` and ``G``, then that constant against KV tokens, recovers every term (no per-model constants needed).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from adaptergym.errors import DataError
from adaptergym.profile import GIB, MemoryModel


def fit_memory(kv: pd.DataFrame, model: str, base: MemoryModel) -> tuple[MemoryModel, dict[str, Any]]:
    """Fit the memory model of ``model`` from ``kv_capacity.csv`` rows; returns it with fit errors."""
    rows = kv[kv["model"] == model]
    measured = rows["gpu_kv_cache_tokens"].notna() & rows["model_plus_lora_weights_GiB"].notna()
    ok = rows[(rows["status"] == "ok") & measured]
    if len(ok) < 4:
        raise DataError(f"kv_capacity: {len(ok)} ok start-ups of {model!r}; need >= 4 to fit the memory model")
    weighed = rows[rows["model_plus_lora_weights_GiB"].notna()]
    design = np.c_[np.ones(len(weighed)), weighed["max_loras"] * weighed["max_lora_rank"], weighed["max_loras"]]
    (weights_gib, per_rank, per_slot), *_ = np.linalg.lstsq(design, weighed["model_plus_lora_weights_GiB"],
                                                            rcond=None)
    # weights + tokens * bytes/token = budget  ->  weights = budget - bytes/token * tokens
    tokens = ok["gpu_kv_cache_tokens"].to_numpy(float)
    (budget_gib, slope), *_ = np.linalg.lstsq(np.c_[np.ones(len(ok)), -tokens], ok["model_plus_lora_weights_GiB"],
                                              rcond=None)
    bytes_per_token = round(float(slope) * GIB / 1024) * 1024
    usable_gib = base.gpu_memory_gib * base.gpu_memory_utilization
    memory = dataclasses.replace(
        base, weights_gib=float(weights_gib), lora_slot_gib_per_rank=float(per_rank),
        lora_slot_gib_fixed=float(per_slot),
        activation_gib=float(usable_gib - budget_gib), kv_bytes_per_token=bytes_per_token,
        max_model_len=int(ok["max_model_len"].max()))
    predicted = kv_tokens(memory, ok["max_loras"].to_numpy(), ok["max_lora_rank"].to_numpy())
    error = np.abs(predicted - tokens) / tokens
    return memory, {"rows": len(rows), "ok_rows": len(ok), "kv_tokens_mape": float(100 * error.mean()),
                    "kv_tokens_max_error_pct": float(100 * error.max())}


def kv_tokens(memory: MemoryModel, max_loras: np.ndarray, max_lora_rank: np.ndarray) -> np.ndarray:
    """KV cache tokens the memory model leaves for each (max_loras, max_lora_rank)."""
    lora = max_loras * (memory.lora_slot_gib_fixed + memory.lora_slot_gib_per_rank * max_lora_rank)
    free = memory.gpu_memory_gib * memory.gpu_memory_utilization - memory.weights_gib - lora - memory.activation_gib
    return np.maximum(free, 0) * GIB / memory.kv_bytes_per_token
