"""The twin engine against hand-computed cases and invariants of vLLM's V1 scheduler."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptergym import ReplicaPlan, ServerConfig, simulate, simulate_placement
from adaptergym.metrics import summarize
from adaptergym.twin import check_startup
from adaptergym.twin.engine import ReplicaEngine
from adaptergym.workload import LengthSpec, RequestBatch, WorkloadSpec, cycled_workload, powerlaw_workload
from tests.conftest import toy_profile


def batch(arrivals, adapters, prompts, outputs, ranks=(16,), duration=100.0) -> RequestBatch:
    ids = tuple(f"a{i}" for i in range(len(ranks)))
    return RequestBatch(np.asarray(arrivals, float), np.asarray(adapters, np.int64), np.asarray(prompts, np.int64),
                        np.asarray(outputs, np.int64), ids, np.asarray(ranks, np.int64), duration)


def engine_for(profile, requests, jumps=True, **config) -> ReplicaEngine:
    cfg = ServerConfig(**{"max_loras": 4, "max_lora_rank": 16, **config}).resolved(profile)
    return ReplicaEngine(profile, cfg, requests, check_startup(profile, cfg), jumps=jumps)


def test_single_request_latency_is_the_sum_of_step_times():
    profile = toy_profile()
    m = simulate(batch([1.0], [0], [100], [3]), profile, ServerConfig(max_loras=1, max_lora_rank=16))
    # Step 1 prefills 100 tokens and loads the adapter (disk 20 ms + CPU->GPU 5 ms):
    # 10 base + 2 LoRA + 0.02*100 prefill + 0.5*0.100 context + 0.3 per adapter + 25 load.
    prefill = 10 + 2 + 2.0 + 0.05 + 0.3 + 25
    decode1 = 10 + 2 + 0.1 + 0.5 * 0.101 + 0.3  # one decode sequence attending 101 tokens
    decode2 = 10 + 2 + 0.1 + 0.5 * 0.102 + 0.3
    assert m.mean_ttft_ms == pytest.approx(prefill, rel=1e-9)
    assert m.mean_e2e_ms == pytest.approx(prefill + decode1 + decode2, rel=1e-9)
    assert m.mean_itl_ms == pytest.approx((decode1 + decode2) / 2, rel=1e-9)
    assert m.loads_from_disk == 1 and m.successful_requests == 1


@pytest.mark.parametrize(("hiding", "prefill_ms", "decode_ms"),
                         [(2.0, 0.0, 1.5 * (3 - 3 / 2)), (200.0, 1.5 * (3 - 300 / 200), 1.5 * (3 - 3 / 200))])
def test_adapters_whose_reads_the_tokens_do_not_hide_add_their_term(hiding, prefill_ms, decode_ms):
    # Three requests for three adapters run together: one step prefills 3 x 100 tokens, two decode 3 tokens, each
    # with 3 distinct adapters. lora_per_exposed_adapter_ms (1.5) is paid for max(0, 3 - tokens / hiding) of them.
    requests = batch([1.0] * 3, [0, 1, 2], [100] * 3, [3] * 3, ranks=(16, 16, 16))
    config = ServerConfig(max_loras=3, max_lora_rank=16)
    plain = simulate(requests, toy_profile(), config)
    profile = toy_profile(lora_per_exposed_adapter_ms=1.5)
    roofline = dataclasses.replace(profile, step_time=dataclasses.replace(profile.step_time,
                                                                          tokens_per_hidden_adapter=hiding))
    exposed = simulate(requests, roofline, config)
    assert exposed.mean_ttft_ms - plain.mean_ttft_ms == pytest.approx(prefill_ms, abs=1e-9)
    assert exposed.mean_itl_ms - plain.mean_itl_ms == pytest.approx(decode_ms, rel=1e-9)
    assert exposed.mean_e2e_ms - plain.mean_e2e_ms == pytest.approx(prefill_ms + 2 * decode_ms, rel=1e-9)


def test_requests_skipped_for_want_of_a_slot_cost_scheduler_time_each_step():
    # One slot: request 0 (adapter 0) runs three steps while requests 1-3 (adapter 1) wait; vLLM's scheduler
    # walks past those three in each of the three steps, then admits all three at once (nothing left to skip).
    requests = batch([0.0] * 4, [0, 1, 1, 1], [100] * 4, [3, 1, 1, 1], ranks=(16, 16))
    config = ServerConfig(max_loras=1, max_lora_rank=16)
    plain = simulate(requests, toy_profile(), config)
    skip_ms = dataclasses.replace(toy_profile(), scheduler=dataclasses.replace(toy_profile().scheduler,
                                                                               per_skipped_ms=1.0))
    walked = simulate(requests, skip_ms, config)
    assert walked.mean_ttft_ms - plain.mean_ttft_ms == pytest.approx((3 + 3 * 9) / 4, rel=1e-9)
    assert walked.mean_e2e_ms - plain.mean_e2e_ms == pytest.approx((9 + 3 * 9) / 4, rel=1e-9)


def test_preemption_happens_exactly_when_kv_blocks_run_out():
    profile = toy_profile(kv_tokens=160, max_model_len=128)  # 10 blocks of 16 tokens
    eng = engine_for(profile, batch([0.0, 0.0], [0, 0], [64, 64], [100, 100]))
    assert eng.total_blocks == 10
    for _ in range(17):  # prefill both (8 blocks), then decode until all 10 blocks hold tokens 1..80
        eng.run_until(eng.now + 1e-9)
    assert eng.free_blocks == 0 and eng.preemptions.sum() == 0 and eng.n_running == 2
    eng.run_until(eng.now + 1e-9)  # both need an 11th/12th block: the newest (request 1) is preempted
    assert eng.preemptions.tolist() == [0, 1]
    assert eng.n_running == 1 and eng.n_waiting == 1
    assert eng.free_blocks == 10 - 6  # request 0 now holds 6 blocks


def test_config_whose_kv_cannot_hold_max_model_len_reports_the_outcome():
    profile = toy_profile(kv_tokens=1000, max_model_len=4096)
    m = simulate(batch([0.0], [0], [10], [10]), profile, ServerConfig(max_loras=1, max_lora_rank=16))
    assert m.startup == "kv_insufficient_for_max_model_len"
    assert m.successful_requests == 0 and m.starved


def test_lora_slots_and_memory_decide_startup_on_the_shipped_profile():
    w = cycled_workload(8, [0.1], [32], duration_s=10)
    assert simulate(w, "llama-3.1-8b-instruct", ServerConfig(max_loras=8, max_lora_rank=32)).startup == "ok"
    big = simulate(w, "llama-3.1-8b-instruct", ServerConfig(max_loras=384, max_lora_rank=32))
    assert big.startup in ("oom", "no_kv_memory", "kv_insufficient_for_max_model_len")


def test_same_seed_identical_metrics_and_other_seed_differs():
    w = powerlaw_workload(20, 4.0, alpha=1.0, duration_s=120)
    cfg = ServerConfig(max_loras=8)
    a, b, c = (simulate(w, None, cfg, seed=s) for s in (5, 5, 6))
    assert a == b
    assert a.total_throughput != c.total_throughput


@pytest.mark.parametrize("adapters, rates, max_loras, pressure, skip_ms", [
    (6, [2.0, 1.0], 3, "kv", 0.0),  # KV pressure: preemptions inside and around jumps
    (16, [0.05], 2, "slots", 0.0),  # requests wait for a slot while the batch decodes: jumps with a waiting queue
    (16, [0.05], 2, "slots", 0.5),  # ...and each one the scheduler skips costs it time
    (8, [3.0], 8, "queue", 0.0),  # overloaded with a short queue: jumps over arrivals that join it or are refused
])
def test_decode_jumps_change_nothing(adapters, rates, max_loras, pressure, skip_ms):
    profile = toy_profile(kv_tokens=4000, max_model_len=512)
    profile = dataclasses.replace(profile, scheduler=dataclasses.replace(profile.scheduler, per_skipped_ms=skip_ms))
    if pressure == "queue":
        profile = dataclasses.replace(profile, engine=dataclasses.replace(profile.engine, max_waiting_requests=40))
    w = cycled_workload(adapters, rates, [8, 16], duration_s=60)
    from adaptergym.simulation import draw_requests

    req = draw_requests(w, seed=1)
    records, single_steps = [], []
    for jumps in (True, False):
        eng = engine_for(profile, req, jumps=jumps, max_loras=max_loras)
        eng.run_until(60.0)
        records.append(summarize(eng.record(60.0)))
        single_steps.append(eng.steps - eng.jumped_steps)
    if pressure == "kv":
        assert records[0].preemptions > 0
    elif pressure == "queue":
        assert records[0].refused_requests > 0 and records[0].max_waiting >= 40  # preempted requests may exceed it
    else:
        assert records[0].mean_waiting > 1.0
    assert single_steps[0] < 0.5 * single_steps[1]  # the jumps did most of the work
    for field in ("successful_requests", "preemptions", "steps", "loads_from_cpu", "loads_from_disk",
                  "refused_requests", "max_waiting"):
        assert getattr(records[0], field) == getattr(records[1], field)
    for field in ("total_throughput", "mean_ttft_ms", "mean_itl_ms", "p99_ttft_ms", "mean_waiting"):
        assert getattr(records[0], field) == pytest.approx(getattr(records[1], field), rel=1e-9)


def test_online_submission_matches_batch():
    profile = toy_profile()
    w = cycled_workload(4, [3.0], [16], duration_s=20)
    from adaptergym.simulation import draw_requests

    req = draw_requests(w, seed=2)
    offline = engine_for(profile, req)
    offline.run_until(20.0)
    empty = RequestBatch(np.empty(0), np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64),
                         req.adapter_ids, req.adapter_ranks, np.inf)
    online = engine_for(profile, empty)
    for i in range(len(req)):
        online.run_until(float(req.arrival_s[i]))
        online.submit(float(req.arrival_s[i]), int(req.adapter[i]), int(req.input_tokens[i]),
                      int(req.output_tokens[i]))
    online.run_until(20.0)
    assert np.allclose(online.finish_s[: len(req)], offline.finish_s, equal_nan=True)


workloads = st.builds(
    lambda n, rate, ranks, budget, max_loras, seqs: (n, rate, ranks, budget, max_loras, seqs),
    st.integers(1, 8), st.floats(0.5, 30.0), st.lists(st.sampled_from([8, 16]), min_size=1, max_size=3),
    st.sampled_from([64, 256, 2048]), st.integers(1, 4), st.sampled_from([4, 64, 2048]),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads, st.integers(0, 10_000))
def test_budget_max_loras_and_max_num_seqs_are_never_exceeded(case, seed):
    n, rate, ranks, budget, max_loras, seqs = case
    profile = toy_profile(kv_tokens=6000, max_model_len=1024)
    spec = cycled_workload(n, [rate / n], ranks, duration_s=15)
    spec = WorkloadSpec(spec.adapters, LengthSpec("lognormal", input_median=80, output_median=40,
                                                  max_input_tokens=900, max_total_tokens=1024), duration_s=15)
    from adaptergym.simulation import draw_requests

    eng = engine_for(profile, draw_requests(spec, seed), jumps=False, max_loras=max_loras,
                     max_num_batched_tokens=budget, max_num_seqs=seqs)
    for _ in range(200_000):  # bounded: a loop that stops advancing time fails instead of hanging
        if eng.now >= 15.0 or eng.drained:
            break
        idle = eng.n_running == 0 and eng.n_waiting == 0
        # exactly one step (an arrival during the last step is already due: the next step takes it)
        eng.run_until(max(eng.now, float(eng.arrival_s[eng.n_arrived]) if idle else eng.now) + 1e-9)
        tokens, adapters, sequences = eng.last_step
        assert tokens <= budget and adapters <= max_loras and sequences <= seqs
        assert 0 <= eng.free_blocks <= eng.total_blocks
    assert eng.now >= 15.0 or eng.drained
    m = summarize(eng.record(15.0))
    assert m.total_throughput <= m.offered_throughput + 1e-9
    assert m.successful_requests + m.refused_requests <= m.arrived_requests


def test_waiting_cap_refuses_arrivals_beyond_it():
    w = cycled_workload(4, [50.0], [16], duration_s=200)  # 40,000 arrivals, far beyond what one sequence serves
    # 4 slots: vLLM's API server keeps max(max_loras, max_num_seqs) adapters resolved, so after their first
    # requests every request reaches the engine at once (with 1 slot it would resolve one adapter per request,
    # holding the arrivals up in front of the engine: see adaptergym.twin.frontend)
    m = simulate(w, None, ServerConfig(max_loras=4, max_num_seqs=1))
    assert m.refused_requests > 0 and m.max_waiting <= 25_500 + 1 and m.starved


def test_fleet_even_split_and_least_loaded_route_every_request_once():
    w = cycled_workload(6, [1.0], [16], duration_s=120)
    plans = [ReplicaPlan(ServerConfig(max_loras=4), tuple(a.id for a in w.adapters[:4])),
             ReplicaPlan(ServerConfig(max_loras=4), tuple(a.id for a in w.adapters[2:]))]
    even = simulate_placement(w, plans, seed=3)
    least = simulate_placement(w, plans, seed=3, router="least-loaded")
    for result in (even, least):
        assert sum(r.arrived_requests for r in result.replicas) == result.fleet.arrived_requests
        assert result.fleet.successful_requests == sum(r.successful_requests for r in result.replicas)
    # Adapters 2 and 3 are shared: an even split gives both replicas some of their requests.
    assert "adapter-0002" in even.replicas[0].per_adapter and "adapter-0002" in even.replicas[1].per_adapter
    assert even.fleet.arrived_requests == least.fleet.arrived_requests
