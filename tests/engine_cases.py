"""Short but varied engine runs and their fingerprints: what any engine change must reproduce.

``tests/data/engine_fingerprints.json`` holds the fingerprints of these cases as the pure-Python engine gave
them before the compiled engine existed (commit "tests: fingerprint today's engine records"). Regenerate it
(``python -m tests.engine_cases``) only for a deliberate change of the twin's mechanisms, and say so.

A fingerprint is exact where the engine's arithmetic is (a hash of the per-request arrays, the ITL histogram
and the integer counters) and a tolerance where the Python engine sums in numpy/BLAS blocks (step counts,
ITL-weighted counts, time-weighted means).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from adaptergym import ReplicaPlan, ServerConfig, load_profile
from adaptergym.simulation import draw_requests
from adaptergym.twin import check_startup
from adaptergym.twin.engine import ReplicaEngine
from adaptergym.twin.fleet import simulate_fleet
from adaptergym.twin.record import RunRecord
from adaptergym.workload import LengthSpec, RequestBatch, WorkloadSpec, cycled_workload, powerlaw_workload
from adaptergym.workload.spec import ArrivalSpec
from tests.conftest import toy_profile

FINGERPRINTS = Path(__file__).parent / "data" / "engine_fingerprints.json"
#: Relative tolerance of the block-summed floats (see the module docstring).
SUMS_RTOL = 1e-12
EngineFactory = Callable[..., ReplicaEngine]


def fingerprint(record: RunRecord) -> dict:
    """Exact hash of what the engine computes step by step, and the sums it folds in blocks."""
    digest = hashlib.sha256()
    for arr in (record.arrival_s, record.first_token_s, record.finish_s, record.preemptions, record.refused,
                record.itl_hist):
        digest.update(np.ascontiguousarray(arr).tobytes())
    exact = [record.steps, record.max_waiting, record.max_running, record.loads_from_disk, record.loads_from_cpu,
             record.sim_time_s, int(np.isfinite(record.finish_s).sum())]
    digest.update(repr(exact).encode())
    return {"hash": digest.hexdigest(), "exact": exact,
            "sums": [*record.step_counts.tolist(), *record.itl_counts.tolist(), record.mean_running,
                     record.mean_waiting, record.mean_kv_usage]}


def _engine(profile, config: ServerConfig, requests: RequestBatch, factory: EngineFactory) -> ReplicaEngine:
    cfg = config.resolved(profile)
    return factory(profile, cfg, requests, check_startup(profile, cfg))


def _batch(profile, config, spec, seed, factory, stride_s: float | None = None) -> list[RunRecord]:
    """One replica over drawn requests, run to the end in one call or in ``stride_s`` pieces."""
    requests = draw_requests(spec, seed)
    engine = _engine(profile, config, requests, factory)
    t = 0.0
    while stride_s and t < requests.duration_s:
        t = min(t + stride_s, requests.duration_s)
        engine.run_until(t)
    engine.run_until(requests.duration_s)
    return [engine.record(requests.duration_s)]


def _online(profile, config, spec, seed, factory) -> list[RunRecord]:
    """Requests submitted one by one at their arrival, one adapter registered online (as the server does)."""
    requests = draw_requests(spec, seed)
    empty = RequestBatch(np.empty(0), np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64),
                         requests.adapter_ids[:-1], requests.adapter_ranks[:-1], np.inf)
    engine = _engine(profile, config, empty, factory)
    engine.add_adapter(requests.adapter_ids[-1], int(requests.adapter_ranks[-1]))
    for i in range(len(requests)):
        t = float(requests.arrival_s[i])
        engine.run_until(t)
        engine.submit(t, int(requests.adapter[i]), int(requests.input_tokens[i]), int(requests.output_tokens[i]))
    engine.run_until(requests.duration_s)
    return [engine.record(requests.duration_s)]


def _drain(profile, config, spec, seed, factory) -> list[RunRecord]:
    requests = draw_requests(spec, seed)
    engine = _engine(profile, config, requests, factory)
    engine.run_until(float("inf"))
    return [engine.record(max(engine.now, 1e-9))]


def _skip_cost(profile, ms: float):
    return dataclasses.replace(profile, scheduler=dataclasses.replace(profile.scheduler, per_skipped_ms=ms))


def _queue_cap(profile, cap: int):
    return dataclasses.replace(profile, engine=dataclasses.replace(profile.engine, max_waiting_requests=cap))


LOGNORMAL = LengthSpec("lognormal", input_median=300, output_median=60, max_input_tokens=1500,
                       max_total_tokens=2000)


def cases() -> dict[str, Callable[[EngineFactory], list[RunRecord]]]:
    """Name -> run(engine factory) -> records. Each runs in well under a second with the compiled engine."""
    llama = load_profile(None)
    toy_kv = toy_profile(kv_tokens=4000, max_model_len=512)
    return {
        # Many adapters through few slots, CPU cache smaller than the adapters: disk and CPU loads, skipping.
        "few-slots-many-adapters": lambda f: _batch(
            llama, ServerConfig(max_loras=4, max_cpu_loras=12), powerlaw_workload(
                64, 6.0, alpha=1.0, rng=np.random.default_rng(7), duration_s=120.0), 1, f),
        # ... with scheduler time per skipped request (jumps stop at arrivals that join the queue).
        "skipped-requests-cost-time": lambda f: _batch(
            _skip_cost(toy_kv, 0.5), ServerConfig(max_loras=2, max_lora_rank=16),
            cycled_workload(16, [0.05], [8, 16], duration_s=60), 1, f),
        # KV pressure: preemptions inside and around jumps.
        "preemption": lambda f: _batch(
            toy_kv, ServerConfig(max_loras=3, max_lora_rank=16), cycled_workload(6, [2.0, 1.0], [8, 16],
                                                                                 duration_s=60), 1, f),
        # A small token budget: prompts are prefilled in chunks, the budget runs out inside them.
        "chunked-prefill": lambda f: _batch(
            llama, ServerConfig(max_loras=8, max_num_batched_tokens=256, max_num_seqs=48),
            WorkloadSpec(cycled_workload(8, [1.5], [16, 32]).adapters, LOGNORMAL, duration_s=60), 2, f),
        # Overloaded with a short queue: arrivals refused, jumps over arrivals that join or are refused.
        "queue-cap": lambda f: _batch(
            _queue_cap(toy_kv, 40), ServerConfig(max_loras=8, max_lora_rank=16),
            cycled_workload(8, [3.0], [8, 16], duration_s=60), 1, f),
        # The saturated reference workload, two minutes of it, run in pieces as the progress bar does.
        "saturated-384-stepwise": lambda f: _batch(
            llama, ServerConfig(max_loras=64, max_lora_rank=32),
            cycled_workload(384, [1.6, 0.8, 0.4], [8, 16, 32], duration_s=120), 0, f, stride_s=7.3),
        # Bursty arrivals, LoRA off.
        "gamma-no-lora": lambda f: _batch(
            llama, ServerConfig(max_loras=1, enable_lora=False),
            WorkloadSpec(cycled_workload(4, [5.0], [16]).adapters, LengthSpec(), ArrivalSpec("gamma", cv=3.0),
                         duration_s=90), 3, f),
        # A burst drained to the end (vLLM's benchmark shape).
        "burst-drain": lambda f: _drain(
            llama, ServerConfig(max_loras=16, max_lora_rank=32),
            WorkloadSpec(cycled_workload(32, [1.0], [8, 32]).adapters, LengthSpec(), ArrivalSpec("burst"),
                         duration_s=1.0, num_requests=600), 4, f),
        # Online use: one request at a time, an adapter added after start.
        "online-submit": lambda f: _online(
            toy_profile(kv_tokens=20000, max_model_len=2048), ServerConfig(max_loras=2, max_lora_rank=16),
            cycled_workload(5, [1.0], [16], duration_s=30), 5, f),
        # Two replicas sharing adapters behind the least-loaded router (``exclude`` at every shared arrival).
        "least-loaded-fleet": lambda f: _fleet(llama, f),
    }


def _fleet(profile, factory: EngineFactory) -> list[RunRecord]:
    import adaptergym.twin.fleet as fleet

    spec = cycled_workload(12, [2.0, 0.5], [8, 16], duration_s=60)
    ids = tuple(a.id for a in spec.adapters)
    plans = [ReplicaPlan(ServerConfig(max_loras=4), ids[:8]), ReplicaPlan(ServerConfig(max_loras=4), ids[4:])]
    saved = fleet.new_engine
    fleet.new_engine = lambda p, c, r: _engine(p, c, r, factory)
    try:
        return simulate_fleet(profile, draw_requests(spec, 6), plans, "least-loaded")
    finally:
        fleet.new_engine = saved


def run_case(name: str, factory: EngineFactory) -> list[dict]:
    return [fingerprint(r) for r in cases()[name](factory)]


if __name__ == "__main__":
    FINGERPRINTS.write_text(json.dumps({name: run_case(name, ReplicaEngine) for name in cases()}, indent=1) + "\n")
    print(f"wrote {FINGERPRINTS}")
