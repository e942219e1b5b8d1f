"""What came out: throughput, latency percentiles, starvation, per-adapter figures from run records.

Definitions follow vLLM's ``benchmark_serving``: throughput counts tokens of requests finished within the
run's duration; TTFT is first token minus arrival; TPOT is (latency - TTFT) / (output tokens - 1) per request;
mean ITL is the mean of every inter-token gap (so sum of decode time over sum of gaps). Starvation is the
papers' definition: served throughput falls at least 10% short of the offered load.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from adaptergym.twin.record import ITL_BIN_WIDTH, ITL_BINS, ITL_MIN_MS, RunRecord

STARVATION_THRESHOLD = 0.1


@dataclass(frozen=True, slots=True)
class AdapterMetrics:
    requests: int
    finished: int
    offered_throughput: float
    total_throughput: float
    mean_ttft_ms: float

    @property
    def starved(self) -> bool:
        return is_starved(self.total_throughput, self.offered_throughput)


@dataclass(frozen=True, slots=True)
class Metrics:
    """Summary of one run (one replica or a whole fleet). Throughputs in tokens/s, latencies in ms."""

    startup: str
    starved: bool
    offered_throughput: float
    total_throughput: float
    input_throughput: float
    output_throughput: float
    request_throughput: float
    duration_s: float
    arrived_requests: int
    successful_requests: int
    refused_requests: int
    mean_ttft_ms: float
    median_ttft_ms: float
    p99_ttft_ms: float
    mean_tpot_ms: float
    median_tpot_ms: float
    p99_tpot_ms: float
    mean_itl_ms: float
    median_itl_ms: float
    p99_itl_ms: float
    mean_e2e_ms: float
    preemptions: int
    loads_from_disk: int
    loads_from_cpu: int
    mean_running: float
    mean_waiting: float
    max_waiting: int
    mean_kv_usage: float
    kv_cache_tokens: int
    steps: int
    starved_adapters: int
    startup_message: str = ""
    per_adapter: dict[str, AdapterMetrics] = field(default_factory=dict)

    def to_dict(self, per_adapter: bool = True) -> dict[str, Any]:
        out = asdict(self)
        out = {k: finite_or_none(v) for k, v in out.items()}
        if not per_adapter:
            out.pop("per_adapter")
        else:
            out["per_adapter"] = {
                k: {n: finite_or_none(x) for n, x in v.items()}
                for k, v in out["per_adapter"].items()
            }
        return out


def finite_or_none(value: Any) -> Any:
    """``value`` with an undefined float (nan, inf: no request to average over) replaced by None, for JSON and
    ``info`` dicts (NaN != NaN, so a NaN breaks equality checks such as gymnasium's determinism check)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def is_starved(total_throughput: float, offered_throughput: float) -> bool:
    """The papers' starvation rule: 1 - served/offered >= 0.1 (nothing offered is never starved)."""
    if offered_throughput <= 0:
        return False
    return 1.0 - total_throughput / offered_throughput >= STARVATION_THRESHOLD - 1e-12


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else math.nan


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else math.nan


def _hist_percentile(hist: np.ndarray, q: float) -> float:
    total = int(hist.sum())
    if total == 0:
        return math.nan
    k = int(np.searchsorted(np.cumsum(hist), q / 100.0 * total, side="left"))
    return ITL_MIN_MS * math.exp((k + 0.5) * ITL_BIN_WIDTH)


def summarize(records: RunRecord | Sequence[RunRecord]) -> Metrics:
    """Metrics of one replica, or of a fleet (records of its replicas, sharing one duration)."""
    recs = [records] if isinstance(records, RunRecord) else list(records)
    if not recs:
        raise ValueError("summarize needs at least one run record")
    duration = max(r.duration_s for r in recs)
    cat = {name: np.concatenate([getattr(r, name) for r in recs]) if len(recs) > 1 else getattr(recs[0], name)
           for name in ("arrival_s", "adapter", "input_tokens", "output_tokens", "first_token_s", "finish_s",
                        "preemptions", "refused")}
    ids = recs[0].adapter_ids
    arrived = cat["arrival_s"] < duration if not math.isinf(duration) else np.ones_like(cat["refused"])
    tokens = cat["input_tokens"] + cat["output_tokens"]
    offered = float(tokens[arrived].sum()) / duration if duration > 0 else 0.0
    failed = [r.startup for r in recs if not r.startup.ok]
    status = failed[0].status if failed else "ok"
    message = failed[0].message if failed else recs[0].startup.message
    done = np.isfinite(cat["finish_s"]) & (cat["finish_s"] <= duration + 1e-9)
    ttft = (cat["first_token_s"][done] - cat["arrival_s"][done]) * 1000.0
    e2e = (cat["finish_s"][done] - cat["arrival_s"][done]) * 1000.0
    out_tok = cat["output_tokens"][done]
    multi = out_tok > 1
    decode_ms = e2e[multi] - ttft[multi]
    tpot = decode_ms / (out_tok[multi] - 1)
    itl_hist = np.sum([r.itl_hist for r in recs], axis=0) if recs[0].itl_hist.size else np.zeros(ITL_BINS)
    total = float(tokens[done].sum()) / duration if duration > 0 else 0.0
    weights = np.array([max(r.sim_time_s, 1e-12) for r in recs])
    per_adapter = _per_adapter(cat, ids, arrived, done, tokens, duration)
    return Metrics(
        startup=status,
        starved=is_starved(total, offered) or bool(failed and offered > 0),
        offered_throughput=offered,
        total_throughput=total,
        input_throughput=float(cat["input_tokens"][done].sum()) / duration if duration > 0 else 0.0,
        output_throughput=float(out_tok.sum()) / duration if duration > 0 else 0.0,
        request_throughput=float(done.sum()) / duration if duration > 0 else 0.0,
        duration_s=duration,
        arrived_requests=int(arrived.sum()),
        successful_requests=int(done.sum()),
        refused_requests=int(cat["refused"].sum()),
        mean_ttft_ms=_mean(ttft),
        median_ttft_ms=_pct(ttft, 50),
        p99_ttft_ms=_pct(ttft, 99),
        mean_tpot_ms=_mean(tpot),
        median_tpot_ms=_pct(tpot, 50),
        p99_tpot_ms=_pct(tpot, 99),
        mean_itl_ms=float(decode_ms.sum() / (out_tok[multi] - 1).sum()) if multi.any() else math.nan,
        median_itl_ms=_hist_percentile(itl_hist, 50),
        p99_itl_ms=_hist_percentile(itl_hist, 99),
        mean_e2e_ms=_mean(e2e),
        preemptions=int(cat["preemptions"].sum()),
        loads_from_disk=sum(r.loads_from_disk for r in recs),
        loads_from_cpu=sum(r.loads_from_cpu for r in recs),
        mean_running=float(sum(r.mean_running for r in recs)),
        mean_waiting=float(sum(r.mean_waiting for r in recs)),
        max_waiting=max(r.max_waiting for r in recs),
        mean_kv_usage=float(np.average([r.mean_kv_usage for r in recs], weights=weights)),
        kv_cache_tokens=sum(r.startup.kv_cache_tokens for r in recs),
        steps=sum(r.steps for r in recs),
        starved_adapters=sum(1 for m in per_adapter.values() if m.starved),
        startup_message=message,
        per_adapter=per_adapter,
    )


def _per_adapter(cat: dict[str, np.ndarray], ids: tuple[str, ...], arrived: np.ndarray, done: np.ndarray,
                 tokens: np.ndarray, duration: float) -> dict[str, AdapterMetrics]:
    n = len(ids)
    of_arrived, of_done = cat["adapter"][arrived], cat["adapter"][done]
    count = np.bincount(of_arrived, minlength=n)
    finished = np.bincount(of_done, minlength=n)
    offered = np.bincount(of_arrived, weights=tokens[arrived], minlength=n) / max(duration, 1e-12)
    served = np.bincount(of_done, weights=tokens[done], minlength=n) / max(duration, 1e-12)
    ttft_sum = np.bincount(of_done, weights=(cat["first_token_s"][done] - cat["arrival_s"][done]) * 1000.0,
                           minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        ttft = np.where(finished > 0, ttft_sum / np.maximum(finished, 1), np.nan)
    return {
        ids[i]: AdapterMetrics(int(count[i]), int(finished[i]), float(offered[i]), float(served[i]), float(ttft[i]))
        for i in range(n) if count[i] > 0
    }
