"""How prompt and output lengths of ShareGPT go together, fitted from the KV cache real runs filled.

The shipped ShareGPT table fixes each length's distribution from published quantiles and means, but not how the
two are linked. The link sets how much context a running request holds (a long answer to a long prompt holds
the most for the longest), hence how full the KV cache gets, when vLLM preempts and how large a saturated batch
can grow. A real run that keeps up measures it directly: its mean KV usage times the cache size, over its mean
number of running requests. The copula correlation is the value at which the length model holds as much.
"""

from __future__ import annotations

import re
from functools import cache

import numpy as np
import pandas as pd
from scipy.optimize import brentq

from adaptergym.profile import TwinProfile
from adaptergym.twin.config import ServerConfig
from adaptergym.twin.frameworks import check_startup
from adaptergym.workload.lengths import sample_sharegpt, sharegpt_table

#: A run keeps up when it serves this share of its offered load, never preempts and keeps almost no queue...
KEEPS_UP = 0.97
MAX_MEAN_WAITING = 5.0
#: ...and runs enough requests at once for the mean to settle.
MIN_MEAN_RUNNING = 20.0
#: What the measurement reads from a real-runs CSV (the ``npy_*`` columns come from vLLM's Prometheus series).
MEASURED_COLUMNS = ("status", "bench_dataset_path", "bench_sharegpt_output_len", "total_throughput_tok_s",
                    "est_offered_load_tok_s", "npy_preemptions_total", "npy_mean_waiting", "npy_mean_running",
                    "npy_mean_kv_usage")
#: Draws of the length model per evaluation (fixed seed: the fit is deterministic).
DRAWS = 400_000


def kv_tokens_per_running(frame: pd.DataFrame, configs: dict[int, ServerConfig], profile: TwinProfile
                          ) -> pd.Series:
    """KV tokens held per running request in each ShareGPT run of ``frame`` (rows with a server config in
    ``configs``, by line) that kept up: vLLM's mean KV usage times its KV cache size, over the mean running
    requests."""
    if any(column not in frame.columns for column in MEASURED_COLUMNS):
        return pd.Series(dtype=float)
    frame = frame[frame["line"].isin(list(configs))]
    ok = frame[(frame["status"] == "ok")
               & frame["bench_dataset_path"].astype(str).str.contains("sharegpt", flags=re.IGNORECASE)
               & frame["bench_sharegpt_output_len"].isna()
               & (frame["total_throughput_tok_s"] >= KEEPS_UP * frame["est_offered_load_tok_s"])
               & (frame["npy_preemptions_total"] == 0) & (frame["npy_mean_waiting"] < MAX_MEAN_WAITING)
               & (frame["npy_mean_running"] >= MIN_MEAN_RUNNING)]
    held = {}
    for row in ok.itertuples():
        startup = check_startup(profile, configs[row.line].resolved(profile))
        if startup.ok:
            held[row.line] = row.npy_mean_kv_usage * startup.kv_cache_tokens / row.npy_mean_running
    return pd.Series(held, dtype=float)


@cache
def held_tokens(correlation: float, block_size: int) -> float:
    """Mean KV tokens a running request holds under the length model: over its decode steps it holds its
    prompt plus the tokens generated so far, rounded up to whole blocks (half a block on average). Cached: the
    fit checks the ends of its bracket before root-finding evaluates them again, and fits of other models reuse
    the same evaluations."""
    prompt, output = sample_sharegpt(DRAWS, np.random.default_rng(0), correlation)
    prompt, output = prompt.astype(float), output.astype(float)
    return float((output * prompt + output * (output + 1) / 2).sum() / output.sum() + (block_size - 1) / 2)


def fit_copula_correlation(frame: pd.DataFrame, configs: dict[int, ServerConfig], profile: TwinProfile
                           ) -> dict[str, float] | None:
    """The copula correlation at which the length model holds the median KV per running request measured in
    the runs of ``configs`` (None without such runs)."""
    measured = kv_tokens_per_running(frame, configs, profile)
    if measured.empty:
        return None
    target, block = float(measured.median()), profile.engine.block_size
    low, high = -0.95, 0.95
    if not held_tokens(low, block) <= target <= held_tokens(high, block):
        return None
    correlation = brentq(lambda rho: held_tokens(rho, block) - target, low, high, xtol=1e-3)
    return {"runs": len(measured), "kv_tokens_per_running_median": target,
            "copula_correlation": round(float(correlation), 2),
            "shipped_copula_correlation": sharegpt_table()["copula_correlation"]}
