"""``/metrics``: the twin's state in Prometheus text format under vLLM's V1 metric names.

Times are simulated seconds (with ``--speed 10`` a TTFT of 1 s of twin time passes in 0.1 s of wall time).
Histograms use vLLM's bucket bounds, so dashboards built for vLLM read the twin unchanged.
``vllm:lora_requests_info`` lists the running adapters; its ``waiting_lora_adapters`` label is left empty
(the engine does not expose its waiting queue by adapter).
"""

from __future__ import annotations

import numpy as np

from adaptergym.serving.models import ServedModels
from adaptergym.twin.engine import ReplicaEngine

TTFT_BUCKETS_S = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                  20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
E2E_BUCKETS_S = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
                 480.0, 960.0, 1920.0, 7680.0)


def _labels(**labels: object) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def _metric(lines: list[str], name: str, kind: str, doc: str, samples: list[tuple[str, float]]) -> None:
    """One metric family: HELP and TYPE lines, then ``sample{labels} value`` lines."""
    lines += [f"# HELP {name} {doc}", f"# TYPE {name} {kind}"]
    lines += [f"{sample} {float(value)!r}" for sample, value in samples]


def _histogram(lines: list[str], name: str, doc: str, values: np.ndarray, buckets: tuple[float, ...],
               base: dict[str, str]) -> None:
    counts = np.searchsorted(np.sort(values), buckets, side="right")
    samples = [(f"{name}_bucket" + _labels(**base, le=b), float(c)) for b, c in zip(buckets, counts, strict=True)]
    samples.append((f"{name}_bucket" + _labels(**base, le="+Inf"), float(values.size)))
    samples += [(f"{name}_sum" + _labels(**base), float(values.sum())), (f"{name}_count" + _labels(**base),
                                                                         float(values.size))]
    _metric(lines, name, "histogram", doc, samples)


def render(engine: ReplicaEngine, models: ServedModels, max_loras: int, now: float) -> str:
    """The exposition text of the engine's current state at simulated time ``now`` (requests still held at the
    API server are not the engine's yet, so they are not counted as waiting)."""
    base = {"model_name": models.base_model, "engine": "0"}
    lb = _labels(**base)
    n = engine.n_requests
    first, finish, arrival = engine.first_token_s[:n], engine.finish_s[:n], engine.arrival_s[:n]
    started = np.isfinite(first)
    done = np.isfinite(finish)
    not_taken = int(np.count_nonzero(arrival[engine.n_arrived:] <= now))  # reached the engine, not yet taken
    lines: list[str] = []
    _metric(lines, "vllm:num_requests_running", "gauge", "Number of requests in model execution batches.",
            [("vllm:num_requests_running" + lb, engine.n_running)])
    _metric(lines, "vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.",
            [("vllm:num_requests_waiting" + lb, engine.n_waiting + not_taken)])
    for name in ("vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc"):
        _metric(lines, name, "gauge", "KV-cache usage. 1 means 100 percent usage.", [(name + lb, engine.kv_usage)])
    counters = (
        ("vllm:num_preemptions", "Cumulative number of preemption from the engine.",
         int(engine.preemptions[:n].sum())),
        ("vllm:prompt_tokens", "Number of prefill tokens processed.", int(engine.input_tokens[:n][started].sum())),
        ("vllm:generation_tokens", "Number of generation tokens processed.", int(engine.generated_tokens().sum())),
    )
    for name, doc, value in counters:
        _metric(lines, name, "counter", doc, [(f"{name}_total" + lb, value)])
    _metric(lines, "vllm:request_success", "counter", "Count of successfully processed requests.",
            [("vllm:request_success_total" + _labels(**base, finished_reason="length"), int(done.sum()))])
    _histogram(lines, "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
               (first - arrival)[started], TTFT_BUCKETS_S, base)
    _histogram(lines, "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
               (finish - arrival)[done], E2E_BUCKETS_S, base)
    if models.enable_lora:
        ids = engine.adapter_ids
        running = ",".join(ids[a] for a in engine.running_adapters())
        _metric(lines, "vllm:lora_requests_info", "gauge", "Running stats on lora requests.",
                [("vllm:lora_requests_info" + _labels(max_lora=max_loras, waiting_lora_adapters="",
                                                      running_lora_adapters=running), engine.now)])
    return "\n".join(lines) + "\n"
