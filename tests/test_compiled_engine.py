"""The compiled engine against its pure-Python reference on randomised servers and workloads.

Any change to the twin's mechanisms must be made in both (``engine.py`` and ``_engine.c``); this
test is what notices when one is forgotten. Records must agree exactly (per-request times, preemptions,
refusals, ITL histogram, counters); the sums the reference folds in numpy/BLAS blocks agree to rounding.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptergym import ServerConfig
from adaptergym.profile import STEP_FEATURES, LoadTimeModel, SchedulerOverhead, TwinProfile
from adaptergym.simulation import draw_requests
from adaptergym.twin import check_startup
from adaptergym.twin.compiled_engine import CompiledEngine
from adaptergym.twin.engine import ReferenceEngine, ReplicaEngine
from adaptergym.workload import LengthSpec, WorkloadSpec, cycled_workload
from adaptergym.workload.spec import ArrivalSpec
from tests.conftest import toy_profile
from tests.engine_cases import SUMS_RTOL, fingerprint


def test_the_compiled_engine_is_built_and_used():
    assert ReplicaEngine is CompiledEngine


#: Every step-time coefficient, load time and scheduler cost is drawn, so a term added to the Python step
#: model (``StepTimer``) or loading but not to ``_engine.c`` fails this test.
profiles = st.fixed_dictionaries({
    "coefficients": st.fixed_dictionaries({name: st.floats(0.0, 0.5) for name in STEP_FEATURES}),
    "base_ms": st.floats(2.0, 20.0),
    "cpu_to_gpu_ms": st.tuples(st.floats(0.0, 10.0), st.floats(0.0, 10.0)),
    "disk_to_cpu_ms": st.tuples(st.floats(0.0, 40.0), st.floats(0.0, 40.0)),
    "scheduler": st.tuples(st.floats(-0.5, 1.0), st.floats(0.0, 0.05), st.floats(0.0, 0.3)),
    "graph_max_tokens": st.sampled_from([8, 64, 512]),
    "tokens_per_hidden_adapter": st.sampled_from([0.5, 3.0, 40.0]),
})

servers = st.fixed_dictionaries({
    "adapters": st.integers(1, 12),
    "rate": st.floats(0.5, 40.0),
    "gamma": st.booleans(),
    "budget": st.sampled_from([16, 64, 256, 2048]),
    "max_seqs": st.sampled_from([2, 8, 64, 2048]),
    "max_loras": st.integers(1, 6),
    "extra_cpu_loras": st.integers(0, 4),
    "kv_tokens": st.sampled_from([800, 2000, 6000, 1 << 20]),
    "queue_cap": st.sampled_from([5, 40, 25_500]),
    "lora": st.booleans(),
    "stride_s": st.sampled_from([None, 0.7]),
    "seed": st.integers(0, 10_000),
})


def _profile(case: dict, model: dict) -> TwinProfile:
    profile = toy_profile(kv_tokens=case["kv_tokens"], max_model_len=768,
                          **{**model["coefficients"], "base_ms": model["base_ms"]})
    ranks = ("8", "16")
    return dataclasses.replace(
        profile, scheduler=SchedulerOverhead(*model["scheduler"]),
        loading=LoadTimeModel(dict(zip(ranks, model["cpu_to_gpu_ms"], strict=True)),
                              dict(zip(ranks, model["disk_to_cpu_ms"], strict=True))),
        engine=dataclasses.replace(profile.engine, max_waiting_requests=case["queue_cap"],
                                   cuda_graph_max_tokens=model["graph_max_tokens"]),
        step_time=dataclasses.replace(profile.step_time,
                                      tokens_per_hidden_adapter=model["tokens_per_hidden_adapter"]))


def _run(engine_class, case: dict, model: dict, loads: tuple[int, ...] = (), evictions: list[bool] | None = None):
    """Run a case; with ``loads``, load one adapter at runtime after each stride (cycling through ``loads``; an
    index past the workload's adapters adds a new one), noting in ``evictions`` whether the load evicted an
    adapter of the running batch (reference engine only)."""
    profile = _profile(case, model)
    lengths = LengthSpec("lognormal", input_median=120, output_median=40, max_input_tokens=600, max_total_tokens=700)
    arrival = ArrivalSpec("gamma", cv=3.0) if case["gamma"] else ArrivalSpec()
    adapters = cycled_workload(case["adapters"], [case["rate"] / case["adapters"]], [8, 16]).adapters
    requests = draw_requests(WorkloadSpec(adapters, lengths, arrival, duration_s=20.0), case["seed"])
    config = ServerConfig(max_loras=case["max_loras"], max_cpu_loras=case["max_loras"] + case["extra_cpu_loras"],
                          max_lora_rank=16, max_num_batched_tokens=case["budget"], max_num_seqs=case["max_seqs"],
                          enable_lora=case["lora"]).resolved(profile)
    engine = engine_class(profile, config, requests, check_startup(profile, config))
    t = 0.0
    while case["stride_s"] and t < 20.0:
        t += case["stride_s"]
        engine.run_until(t)
        if loads:
            wanted = loads[round(t / case["stride_s"]) % len(loads)]
            engine.load_adapter(wanted if wanted < case["adapters"] else engine.add_adapter(f"new-{t:.1f}", 16))
            if evictions is not None:
                evictions.append(engine.lora.must_reload)
    engine.run_until(20.0)
    return engine.record(20.0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(servers, profiles)
def test_compiled_and_reference_engines_give_the_same_records(case, model):
    compiled, reference = (fingerprint(_run(cls, case, model)) for cls in (CompiledEngine, ReferenceEngine))
    assert compiled["exact"] == reference["exact"]
    assert compiled["hash"] == reference["hash"]
    assert compiled["sums"] == pytest.approx(reference["sums"], rel=SUMS_RTOL, abs=1e-9)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(servers, profiles, st.lists(st.integers(0, 15), min_size=1, max_size=6))
def test_both_engines_load_adapters_at_runtime_alike(case, model, loads):
    """Runtime loads between strides (vLLM's load_lora_adapter), some evicting adapters of the running batch that
    the next step must reload: the records agree as without loads."""
    case = {**case, "stride_s": 0.7, "lora": True}
    compiled, reference = (fingerprint(_run(cls, case, model, tuple(loads)))
                           for cls in (CompiledEngine, ReferenceEngine))
    assert compiled["exact"] == reference["exact"]
    assert compiled["hash"] == reference["hash"]
    assert compiled["sums"] == pytest.approx(reference["sums"], rel=SUMS_RTOL, abs=1e-9)


def test_both_engines_reload_running_adapters_a_runtime_load_evicted_alike():
    """A busy server with two slots and no spare CPU memory, an adapter loaded every 0.7 s: many loads evict an
    adapter of the running batch (the reference says which), and both engines' records agree."""
    case = {"adapters": 6, "rate": 30.0, "gamma": False, "budget": 2048, "max_seqs": 64, "max_loras": 2,
            "extra_cpu_loras": 0, "kv_tokens": 1 << 20, "queue_cap": 25_500, "lora": True, "stride_s": 0.7,
            "seed": 3}
    model = {"coefficients": dict.fromkeys(STEP_FEATURES, 0.1), "base_ms": 10.0, "cpu_to_gpu_ms": (3.0, 5.0),
             "disk_to_cpu_ms": (15.0, 20.0), "scheduler": (0.0, 0.01, 0.1), "graph_max_tokens": 512,
             "tokens_per_hidden_adapter": 3.0}
    evictions: list[bool] = []
    reference = fingerprint(_run(ReferenceEngine, case, model, (0, 3, 7, 5, 1), evictions))
    compiled = fingerprint(_run(CompiledEngine, case, model, (0, 3, 7, 5, 1)))
    assert sum(evictions) >= 5, evictions
    assert compiled["exact"] == reference["exact"] and compiled["hash"] == reference["hash"]
    assert compiled["sums"] == pytest.approx(reference["sums"], rel=SUMS_RTOL, abs=1e-9)


@pytest.mark.parametrize("line", [100, 154, 194])
def test_both_engines_replay_hour_long_real_rows_alike(line, shared_data):
    """Whole hours of real runs (Llama: 64 adapters through 16 slots, light; 320 through 64, overloaded; Qwen:
    320 through 64, light): the compiled engine's records are the reference's."""
    from adaptergym import load_profile
    from adaptergym.real_runs import read_runs, replays

    item = next(i for i in replays(read_runs(shared_data / "real_runs.csv"))[0] if i.line == line)
    profile = load_profile(item.model)
    config = item.config.resolved(profile)
    requests = draw_requests(item.workload, 0)
    records = []
    for cls in (CompiledEngine, ReferenceEngine):
        engine = cls(profile, config, requests, check_startup(profile, config))
        engine.run_until(requests.duration_s)
        records.append(fingerprint(engine.record(requests.duration_s)))
    compiled, reference = records
    assert compiled["exact"] == reference["exact"] and compiled["hash"] == reference["hash"]
    assert compiled["sums"] == pytest.approx(reference["sums"], rel=SUMS_RTOL)
