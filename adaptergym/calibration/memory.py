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
from scipy.optimize import linprog

from adaptergym.errors import DataError
from adaptergym.profile import GIB, MemoryModel
from adaptergym.twin.startup import kv_cache_gib


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
    return np.maximum(kv_cache_gib(memory, lora), 0) * GIB / memory.kv_bytes_per_token


def fit_memory_from_startups(outcomes: pd.DataFrame, base: MemoryModel) -> tuple[MemoryModel, dict[str, Any]]:
    """Fit activations and LoRA slot sizes to which configurations started and which did not.

    For a model without ``kv_capacity.csv`` rows, vLLM's start-up verdicts (``ok``, ``oom``, ``no_kv_memory``,
    ``kv_insufficient_for_max_model_len`` over ``max_loras`` x ``max_lora_rank``) still bracket the memory
    each slot takes. Weights, bytes per KV token and ``max_model_len`` are the model's architecture and come
    from ``base``; activations and the per-slot terms are chosen by a linear program that puts every verdict
    well inside its region (:func:`adaptergym.twin.startup.vllm_startup` draws the regions), activations as
    close to ``base``'s as that allows.

    Args:
        outcomes: one row per start-up with ``max_loras``, ``max_lora_rank``, ``status``.
    """
    rows = outcomes[outcomes["status"].isin(("ok", "oom", "no_kv_memory", "kv_insufficient_for_max_model_len"))]
    if rows["status"].eq("ok").all() or not rows["status"].eq("ok").any():
        raise DataError(f"start-ups: {len(rows)} rows, need both configurations that started and ones that did "
                        "not to bracket the memory model")
    usable = base.gpu_memory_gib * base.gpu_memory_utilization
    longest = base.max_model_len * base.kv_bytes_per_token / GIB
    slots = rows["max_loras"].to_numpy(float)
    # resident = weights + activation + slots * (fixed + per_rank * rank), linear in (activation, fixed, per_rank)
    design = np.c_[np.ones(len(rows)), slots, slots * rows["max_lora_rank"].to_numpy(float)]
    # (lower, upper) bounds on resident GiB per verdict; the margin (last variable) pushes each inside
    regions = {"ok": (-np.inf, usable - longest), "kv_insufficient_for_max_model_len": (usable - longest, usable),
               "no_kv_memory": (usable, base.gpu_memory_gib), "oom": (base.gpu_memory_gib, np.inf)}
    lower = rows["status"].map(lambda s: regions[s][0]).to_numpy(float) - base.weights_gib
    upper = rows["status"].map(lambda s: regions[s][1]).to_numpy(float) - base.weights_gib
    a_ub, b_ub = [], []
    for k in range(len(rows)):
        if np.isfinite(upper[k]):
            a_ub.append([*design[k], 1.0])
            b_ub.append(upper[k])
        if np.isfinite(lower[k]):
            a_ub.append([*(-design[k]), 1.0])
            b_ub.append(-lower[k])
    a_ub, b_ub = np.array(a_ub), np.array(b_ub)
    widest = linprog([0, 0, 0, -1], A_ub=a_ub, b_ub=b_ub, bounds=[(0, None), (0, None), (0, None), (None, 1.0)])
    if not widest.success:
        raise DataError(f"start-ups: no memory model explains them ({widest.message})")
    # Activations and the per-slot constant trade off against each other at the boundaries: among models
    # keeping half the widest margin, take the one whose activations are closest to the base's.
    widest_margin = widest.x[3]
    keep = np.c_[a_ub, np.zeros(len(a_ub))]
    closeness = np.array([[1, 0, 0, 0, -1], [-1, 0, 0, 0, -1]], float)
    solution = linprog([0, 0, 0, 0, 1], A_ub=np.vstack([keep, closeness]),
                       b_ub=np.r_[b_ub, base.activation_gib, -base.activation_gib],
                       bounds=[(0, None), (0, None), (0, None), (widest_margin / 2, 1.0), (0, None)])
    activation, fixed, per_rank, margin = solution.x[:4] if solution.success else widest.x
    memory = dataclasses.replace(base, activation_gib=float(activation), lora_slot_gib_fixed=float(fixed),
                                 lora_slot_gib_per_rank=float(per_rank))
    resident = base.weights_gib + design @ np.array([activation, fixed, per_rank])
    agree = (resident >= lower + base.weights_gib - 1e-9) & (resident <= upper + base.weights_gib + 1e-9)
    return memory, {"rows": len(rows), "failed_rows": int((rows["status"] != "ok").sum()),
                    "margin_gib": float(margin), "verdicts_right_pct": float(100 * agree.mean())}
