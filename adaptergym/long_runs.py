"""The means of an hour-long run (throughput, mean ITL, TPOT and TTFT) without simulating all of it, so that
replaying the hour-long real runs takes minutes.

A run that keeps up with its load over its first ``WINDOW_S`` seconds, every adapter having a GPU slot, is its
window once (whose start holds the warm-up: every adapter's first load from disk), then the window's second half
repeated for the rest of the hour; it serves what arrives, so its throughput is the hour's offered load (the
window's share of it varies with the draw by about 1%). One whose adapters outnumber its slots and keeps up is
simulated to its end: its TTFT is mostly rare stalls of seconds when a swap meets a full batch, which one window
catches or misses (tens of percent off the hour), and a run that keeps up is cheap to simulate.
A run that has fallen behind is judged from its stationary service:

* every adapter has a slot, so the queue is first come, first served: once the window's second half kept a
  backlog, the rest of the hour is a fluid queue. Waiting requests get their first token in arrival order at the
  rate of that half, then decode at its time per token; arrivals that find the queue full are refused.
* adapters compete for slots, so the scheduler skips requests and the order depends on which adapters hold
  slots: once the queue has filled, and for as long again as serving a full queue takes (so that the requests
  it held then are no longer what is being served), a window of ``STATIONARY_S`` seconds stands for the rest.
  Requests finish at its rate, with its TPOT and ITL, and by Little's law their mean TTFT is the window's mean
  number of requests awaiting a first token over its first-token rate, whatever the order.

Any other run is simulated to its end, as is every run when ``full`` is asked for; docs/validation.md measures
how far the shortcuts land from the full simulation.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from adaptergym.metrics import Metrics, summarize
from adaptergym.profile import TwinProfile
from adaptergym.real_runs import METRICS
from adaptergym.twin.config import ServerConfig
from adaptergym.twin.frameworks import Engine, new_engine
from adaptergym.twin.record import RunRecord
from adaptergym.twin.replica import failed_record
from adaptergym.workload.requests import RequestBatch

#: A long run is first simulated this long (s); if it keeps up there, the window stands for the whole run.
WINDOW_S = 900.0
#: Keeping up: served throughput at least this share of the offered load...
KEEPS_UP = 0.98
#: ...and the waiting queue never longer than this share of the window's requests.
KEEPS_UP_WAITING_SHARE = 0.01
#: A run whose queue has filled is judged on a window this long (s), once the requests it held then are served.
STATIONARY_S = 450.0
#: First come, first served with a backlog: requests without a first token never fewer than this through the
#: window's second half (those in their prefill count too, and a 2,048-token budget holds a few dozen prompts).
BACKLOG_MIN = 256
#: Means reported per run, as named in ``Metrics``: the measured metrics plus the offered load.
MEANS = (*METRICS.values(), "offered_throughput")


def judge_run(profile: TwinProfile, config: ServerConfig, requests: RequestBatch, *,
              full: bool = False) -> tuple[dict[str, float], RunRecord]:
    """The run's means (``MEANS``) and the record of what was simulated."""
    engine = new_engine(profile, config, requests)
    if engine is None:
        return _means(failed_record(profile, config, requests, requests.duration_s))
    duration = requests.duration_s
    if full or requests.drain or duration <= WINDOW_S:
        engine.run_until(math.inf if requests.drain else duration)
        return _means(engine.record(max(engine.now, 1e-9) if requests.drain else duration))
    engine.run_until(WINDOW_S)
    window = engine.record(WINDOW_S).arrived_before(WINDOW_S)
    metrics = summarize(window)
    kept_up = (metrics.total_throughput >= KEEPS_UP * metrics.offered_throughput
               and window.max_waiting <= KEEPS_UP_WAITING_SHARE * len(window.arrival_s))
    if kept_up and engine.max_loras >= len(engine.adapter_ids):
        tokens = (requests.input_tokens + requests.output_tokens)[requests.arrival_s < duration]
        return kept_up_means(window, metrics, duration, float(tokens.sum()) / duration), window
    if kept_up:
        engine.run_until(duration)
        return _means(engine.record(duration))
    if engine.max_loras >= len(engine.adapter_ids) and _backlogged(engine.record(engine.now)):
        return _means(fluid_queue_record(engine, duration))
    while engine.now < duration:
        if engine.n_refused:  # the queue has filled: judge it once the requests it held then have been served
            record = engine.record(engine.now)
            first = record.first_token_s
            rate = np.count_nonzero(first > engine.now - STATIONARY_S) / STATIONARY_S
            settle = engine.max_waiting / rate if rate > 0 else math.inf
            end = max(float(record.arrival_s[np.argmax(record.refused)]) + settle + STATIONARY_S, engine.now)
            if end + STATIONARY_S >= duration:  # too little left to gain from a shortcut
                break
            engine.run_until(end)
            return stationary_means(engine, duration), engine.record(engine.now)
        engine.run_until(min(engine.now + STATIONARY_S, duration))
    engine.run_until(duration)
    return _means(engine.record(duration))


def kept_up_means(window: RunRecord, metrics: Metrics, duration_s: float, offered: float) -> dict[str, float]:
    """``MEANS`` over ``duration_s`` of a run that kept up through ``window`` (a record of its first seconds,
    ``metrics`` its summary) and is offered ``offered`` tokens/s over the whole run: it serves what arrives, so its
    throughput is the window's share of its offered load times ``offered``; latencies count the window once and
    the requests that finished in its second half once more for each half-window left (same definitions as
    ``adaptergym.metrics``)."""
    half = window.duration_s / 2
    done = np.isfinite(window.finish_s) & (window.finish_s <= window.duration_s)
    weight = np.where(window.finish_s[done] > half, 1.0 + (duration_s - window.duration_s) / half, 1.0)
    ttft_s = (window.first_token_s - window.arrival_s)[done]
    gaps = window.output_tokens[done] - 1
    multi = gaps > 0
    decode_s = (window.finish_s - window.first_token_s)[done][multi]
    served_share = metrics.total_throughput / metrics.offered_throughput if metrics.offered_throughput > 0 else 1.0
    means = {"total_throughput": served_share * offered,
             "mean_itl_ms": float(1000 * (weight[multi] @ decode_s) / (weight[multi] @ gaps[multi])),
             "mean_tpot_ms": float(1000 * (weight[multi] @ (decode_s / gaps[multi])) / weight[multi].sum()),
             "mean_ttft_ms": float(1000 * (weight @ ttft_s) / weight.sum()),
             "offered_throughput": offered}
    return {name: means[name] for name in MEANS}


def _means(record: RunRecord) -> tuple[dict[str, float], RunRecord]:
    return _picked(summarize(record)), record


def _picked(metrics: Metrics) -> dict[str, float]:
    return {name: float(getattr(metrics, name)) for name in MEANS}


def _backlogged(record: RunRecord) -> bool:
    """Whether requests without a first token never fell below ``BACKLOG_MIN`` in the window's second half
    (checked at every first token there, where that count is lowest)."""
    half = WINDOW_S / 2
    first = np.sort(record.first_token_s[np.isfinite(record.first_token_s)])
    late = first[(first >= half) & (first < WINDOW_S)]
    if late.size == 0:
        return False
    accepted = np.sort(record.arrival_s[~record.refused])
    backlog = np.searchsorted(accepted, late, side="right") - np.searchsorted(first, late, side="right")
    return bool(backlog.min() >= BACKLOG_MIN)


def fluid_queue_record(engine: Engine, duration_s: float) -> RunRecord:
    """The record of a first-come-first-served backlogged run to ``duration_s``, from the engine's state at the
    end of its window."""
    now, half = engine.now, WINDOW_S / 2
    record = engine.record(now)
    first, finish = record.first_token_s.copy(), record.finish_s.copy()
    arrival, output = record.arrival_s, record.output_tokens
    rate = np.count_nonzero((first >= half) & (first < WINDOW_S)) / (WINDOW_S - half)  # first tokens per s
    recent = (finish >= half) & (finish < WINDOW_S) & (output > 1)
    per_token_s = float((finish - first)[recent].sum() / (output[recent] - 1).sum())
    started = np.isfinite(first) & ~np.isfinite(finish)  # decode their remaining tokens
    finish[started] = now + (output - engine.generated_tokens())[started] * per_token_s
    refused = record.refused.copy()
    later = np.arange(engine.n_arrived, len(arrival))  # arrivals the engine has not taken yet
    refused[later] = refused_arrivals(min(engine.n_waiting, engine.max_waiting), arrival[later] - now, rate,
                                      engine.max_waiting)
    waiting = np.flatnonzero(~np.isfinite(first) & ~refused)
    first[waiting] = np.maximum(now + np.arange(1, waiting.size + 1) / rate, arrival[waiting])
    finish[waiting] = first[waiting] + (output[waiting] - 1) * per_token_s
    return dataclasses.replace(record, duration_s=duration_s, first_token_s=first, finish_s=finish,
                               refused=refused)


def refused_arrivals(queued: int, arrival_s: np.ndarray, drain_rate: float, capacity: int) -> np.ndarray:
    """Which of the arrivals at ``arrival_s`` (s from now, increasing) find a queue of ``capacity`` full, when
    ``queued`` wait now and the queue drains continuously at ``drain_rate`` per second.

    Were every arrival let in, arrival j would find ``y_j = queued + j - drain_rate * t_j`` waiting; with refusals
    it finds ``y_j - r_j``, ``r_j`` the refusals before it, and is refused when that reaches ``capacity``. Since
    ``y`` rises by at most one per arrival, ``r_{j+1} = max(0, max_{k<=j} floor(y_k - capacity) + 1)``.
    """
    y = queued + np.arange(arrival_s.size) - drain_rate * arrival_s
    after = np.maximum.accumulate(np.maximum(0.0, np.floor(y - capacity) + 1.0))
    return np.diff(after, prepend=0.0) > 0


def stationary_means(engine: Engine, duration_s: float) -> dict[str, float]:
    """``MEANS`` over ``duration_s`` of a settled run whose last ``STATIONARY_S`` seconds stand for the rest
    (same definitions as ``adaptergym.metrics``)."""
    end = engine.now
    start, rest = end - STATIONARY_S, duration_s - end
    record = engine.record(end)
    arrival, first, finish = record.arrival_s, record.first_token_s, record.finish_s
    tokens = record.input_tokens + record.output_tokens
    gaps = record.output_tokens - 1
    done = np.isfinite(finish)
    recent = done & (finish > start)
    scale = rest / STATIONARY_S  # the rest of the run, in windows
    # Little's law on requests awaiting their first token: mean wait = mean number waiting / first-token rate.
    awaiting_s = (_area(arrival[~record.refused], start, end) - _area(first[np.isfinite(first)], start, end))
    first_tokens = np.count_nonzero((first > start) & (first <= end))
    ttft_rest_s = awaiting_s / first_tokens if first_tokens else math.nan
    served = done.sum() + scale * recent.sum()
    ttft_s = ((first - arrival)[done].sum() + scale * recent.sum() * ttft_rest_s) / served
    multi, recent_multi = done & (gaps > 0), recent & (gaps > 0)
    decode_s = finish - first
    tpot_s = (decode_s[multi] / gaps[multi]).sum() + scale * (decode_s[recent_multi] / gaps[recent_multi]).sum()
    itl_s = (decode_s[multi].sum() + scale * decode_s[recent_multi].sum()) / (
        gaps[multi].sum() + scale * gaps[recent_multi].sum())
    offered = tokens[arrival < duration_s].sum() / duration_s
    return {"total_throughput": float((tokens[done].sum() + scale * tokens[recent].sum()) / duration_s),
            "mean_itl_ms": float(1000 * itl_s),
            "mean_tpot_ms": float(1000 * tpot_s / (multi.sum() + scale * recent_multi.sum())),
            "mean_ttft_ms": float(1000 * ttft_s), "offered_throughput": float(offered)}


def _area(event_s: np.ndarray, start: float, end: float) -> float:
    """Integral over [start, end] of how many of the events have happened."""
    before = event_s[event_s < end]
    return float((end - np.maximum(before, start)).sum())
