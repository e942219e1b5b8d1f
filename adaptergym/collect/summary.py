"""One run as one row in the columns of ``shared/data/real_runs.csv`` (same names, same meaning).

Metrics follow vLLM's ``benchmark_serving.py``: throughput counts the tokens of requests that finished within
the run, divided by its duration; TTFT, TPOT and ITL as in :mod:`adaptergym.collect.client`, in ms.
The workload is written so that ``adaptergym calibrate`` / ``validate`` replay exactly it: per-adapter rates
in ``bench_adapter_rates`` and per-adapter ranks in ``dummy_lora_ranks_cycle`` (both in adapter order),
ShareGPT lengths as a ``bench_dataset_path`` naming ShareGPT, fixed lengths as vLLM's synthetic dataset, and
the drawn prompt pool's token totals in ``pool_*``. Columns after the real-runs ones say what went wrong:
``failed_requests`` and ``errors`` (a JSON object: error kind -> count), ``unfinished_requests``.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from adaptergym.collect.client import ERROR, OK, UNFINISHED
from adaptergym.collect.runner import RunOutcome
from adaptergym.workload import RequestBatch, WorkloadSpec

#: The columns of shared/data/real_runs.csv, in its order.
REAL_RUN_COLUMNS = (
    "run_id", "dataset_group", "exp_name", "model", "srv_max_loras", "srv_max_cpu_loras", "srv_max_lora_rank",
    "srv_max_num_seqs", "enable_lora", "dummy_lora_ranks_cycle", "bench_total_time", "bench_adapter_rates",
    "bench_dataset_path", "bench_lora_pre_loading", "num_adapters", "adapter_rate_values", "adapter_rate_counts",
    "pool_prompts", "pool_input_tokens", "pool_output_tokens", "successful_requests", "duration_s",
    "total_input_tokens", "total_generated_tokens", "request_throughput", "input_throughput", "output_throughput",
    "mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "median_tpot_ms", "p99_tpot_ms",
    "mean_itl_ms", "median_itl_ms", "p99_itl_ms", "aggregate_rate_req_s", "pool_mean_tokens_per_req",
    "est_offered_load_tok_s", "total_throughput_tok_s", "status", "est_throughput_over_offered", "npy_samples",
    "npy_mean_running", "npy_max_running", "npy_mean_waiting", "npy_max_waiting", "npy_preemptions_total",
    "npy_mean_kv_usage", "npy_max_kv_usage", "bench_request_rate", "bench_num_prompts", "bench_request_rate_by_lora",
    "bench_disable_loras_users", "bench_sharegpt_output_len", "bench_use_synthetic_dataset",
    "bench_synthetic_input_length", "bench_synthetic_output_length", "gpu", "vllm_version", "max_num_batched_tokens",
)
#: Columns collect adds after them.
EXTRA_COLUMNS = ("failed_requests", "unfinished_requests", "errors", "metrics_scrape_failures", "endpoint", "seed",
                 "speed", "workload", "started_at")
RUN_COLUMNS = REAL_RUN_COLUMNS + EXTRA_COLUMNS


@dataclass(frozen=True, slots=True)
class ServerDescription:
    """What a row says about the server (flags it was started with, GPU, versions); ``None`` = unknown."""

    model: str
    max_loras: int | None = None
    max_cpu_loras: int | None = None
    max_lora_rank: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    enable_lora: bool = True
    gpu: str = ""
    vllm_version: str = ""


def _stats(prefix: str, values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {f"mean_{prefix}_ms": math.nan, f"median_{prefix}_ms": math.nan, f"p99_{prefix}_ms": math.nan}
    return {f"mean_{prefix}_ms": float(values.mean()), f"median_{prefix}_ms": float(np.median(values)),
            f"p99_{prefix}_ms": float(np.percentile(values, 99))}


def workload_columns(spec: WorkloadSpec, requests: RequestBatch) -> dict[str, Any]:
    """The columns that describe the workload and the drawn prompt pool."""
    rates = [a.rate for a in spec.adapters]
    values, counts = np.unique(np.asarray(rates), return_counts=True) if rates else ([], [])
    pool_in, pool_out, n = int(requests.input_tokens.sum()), int(requests.output_tokens.sum()), len(requests)
    aggregate = float(sum(rates))
    mean_tokens = (pool_in + pool_out) / n if n else math.nan
    burst = spec.arrival.kind == "burst"
    lengths = spec.lengths
    return {
        "exp_name": spec.name,
        "dummy_lora_ranks_cycle": " ".join(str(int(r)) for r in requests.adapter_ranks),
        "num_adapters": len(requests.adapter_ids),
        "bench_total_time": math.nan if burst else spec.duration_s,
        "bench_adapter_rates": json.dumps(rates) if rates and not burst else "",
        "adapter_rate_values": " ".join(f"{v:g}" for v in values) if not burst else "",
        "adapter_rate_counts": " ".join(str(int(c)) for c in counts) if not burst else "",
        "bench_dataset_path": "adaptergym:sharegpt" if lengths.kind == "sharegpt" else lengths.path,
        "bench_use_synthetic_dataset": lengths.kind == "fixed" or "",
        "bench_synthetic_input_length": lengths.input_tokens if lengths.kind == "fixed" else math.nan,
        "bench_synthetic_output_length": lengths.output_tokens if lengths.kind == "fixed" else math.nan,
        "bench_lora_pre_loading": False,
        "bench_request_rate": "inf" if burst else "",
        "bench_num_prompts": n if burst else math.nan,
        "pool_prompts": n, "pool_input_tokens": pool_in, "pool_output_tokens": pool_out,
        "aggregate_rate_req_s": math.nan if burst else aggregate,
        "pool_mean_tokens_per_req": mean_tokens,
        "est_offered_load_tok_s": math.nan if burst else aggregate * mean_tokens,
    }


def server_columns(server: ServerDescription) -> dict[str, Any]:
    def number(value: int | None) -> float:
        return math.nan if value is None else float(value)

    return {"model": server.model, "srv_max_loras": number(server.max_loras),
            "srv_max_cpu_loras": number(server.max_cpu_loras), "srv_max_lora_rank": number(server.max_lora_rank),
            "srv_max_num_seqs": number(server.max_num_seqs),
            "max_num_batched_tokens": number(server.max_num_batched_tokens), "enable_lora": server.enable_lora,
            "gpu": server.gpu, "vllm_version": server.vllm_version}


def result_columns(outcome: RunOutcome) -> dict[str, Any]:
    """Measured columns of a run that started (``status`` ``ok``)."""
    done = [r for r in outcome.results if r.status == OK]
    errors = Counter(r.error for r in outcome.results if r.status == ERROR)
    duration = max(outcome.duration_s, 1e-9)  # a run interrupted at once measured nothing
    inputs = sum(r.input_tokens for r in done)
    outputs = sum(r.generated_tokens for r in done)
    row: dict[str, Any] = {
        "status": "ok", "successful_requests": len(done), "duration_s": duration,
        "total_input_tokens": inputs, "total_generated_tokens": outputs,
        "request_throughput": len(done) / duration, "input_throughput": inputs / duration,
        "output_throughput": outputs / duration, "total_throughput_tok_s": (inputs + outputs) / duration,
        "failed_requests": sum(errors.values()),
        "unfinished_requests": sum(r.status == UNFINISHED for r in outcome.results),
        "errors": json.dumps(dict(sorted(errors.items()))), "metrics_scrape_failures": outcome.metrics.failures,
    }
    row |= _stats("ttft", np.array([r.ttft_ms for r in done]))
    row |= _stats("tpot", np.array([r.tpot_ms for r in done if math.isfinite(r.tpot_ms)]))
    row |= _stats("itl", np.array([gap for r in done for gap in r.itl_ms]))
    row |= outcome.metrics.columns()
    return row


def run_row(base: dict[str, Any]) -> dict[str, Any]:
    """Order a row's columns as RUN_COLUMNS (missing ones empty), adding the derived ratio."""
    offered, served = base.get("est_offered_load_tok_s"), base.get("total_throughput_tok_s")
    if offered and served is not None and math.isfinite(offered) and offered > 0:
        base["est_throughput_over_offered"] = served / offered
    return {col: base.get(col, "") for col in RUN_COLUMNS}
