"""The S-LoRA twin: hand-computed cases of its unified pool, fetches and router, profile selection by data, and
validation against real S-LoRA runs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from adaptergym import ServerConfig
from adaptergym.cli import main
from adaptergym.errors import ConfigError, UnknownName
from adaptergym.metrics import summarize
from adaptergym.profile import EngineDefaults, LoadTimeModel, find_profile, load_profile
from adaptergym.real_runs import read_runs
from adaptergym.simulation import draw_requests
from adaptergym.twin import ReplicaEngine, SLoraEngine, check_startup, framework_of, new_engine
from adaptergym.validation import resolve_profiles
from adaptergym.workload import cycled_workload
from tests.conftest import toy_profile
from tests.test_twin import batch

SLORA = "h100-64gb__llama-2-7b__slora"
SAMPLE = Path(__file__).parent / "data" / "slora_runs_sample.csv"


def slora_profile(pool: int = 1000, fetch_ms: float = 0.0, poll_ms: float = 0.0, **coefficients: float):
    """The toy profile's round numbers on S-LoRA's engine: a pool of ``pool`` token slots, 4 per unit of rank."""
    toy = toy_profile(**coefficients)
    return dataclasses.replace(
        toy, framework="slora", memory=dataclasses.replace(toy.memory, kv_pool_tokens=pool),
        engine=EngineDefaults(max_num_batched_tokens=4096, max_num_seqs=1000, admit_every_steps=10,
                              idle_poll_ms=poll_ms),
        loading=LoadTimeModel({"8": fetch_ms, "32": 4 * fetch_ms}, {"8": 0.0}))


def slora_engine(profile, requests, jumps=True) -> SLoraEngine:
    config = ServerConfig(max_lora_rank=32).resolved(profile)
    engine = new_engine(profile, config, requests)
    assert isinstance(engine, SLoraEngine)
    engine.jumps = jumps
    return engine


@pytest.mark.parametrize("adapters, admitted, budget", [
    ([0, 1, 2, 3, 4, 5, 6, 7], 5, 1000 - 5 * 32),  # eight adapters: each admitted one takes 32 slots of the pool
    ([0] * 8, 6, 1000 - 32),  # one adapter: its 32 slots once, so the pool holds one request more
])
def test_adapter_pages_come_out_of_the_kv_pool(adapters, admitted, budget):
    # Pool 1,000 slots; rank 8 -> 4 * 8 = 32 slots per adapter. A new request holds its prompt and one token
    # (101) with 50 still to come, so k of them peak at 151 k: admitted while 151 k < 1000 - adapter slots, i.e.
    # 183 k < 1000 (k = 5) with a new adapter each, 151 k < 968 (k = 6) with one shared adapter.
    requests = batch([0.0] * 8, adapters, [100] * 8, [51] * 8, ranks=(8,) * 8)
    engine = slora_engine(slora_profile(pool=1000), requests)
    engine.run_until(1e-9)  # the first step admits and prefills a batch
    assert engine.n_running == admitted
    assert engine.kv_budget_tokens() == budget


def test_one_more_resident_adapter_leaves_exactly_its_pages_fewer_for_kv():
    one = slora_engine(slora_profile(pool=5000), batch([0.0, 0.0], [0, 0], [100, 100], [51, 51], ranks=(8, 32)))
    two = slora_engine(slora_profile(pool=5000), batch([0.0, 0.0], [0, 1], [100, 100], [51, 51], ranks=(8, 32)))
    for engine in (one, two):
        engine.run_until(1e-9)
        assert engine.n_running == 2
    assert one.kv_budget_tokens() - two.kv_budget_tokens() == 4 * 32  # the rank-32 adapter's slots


def test_fetch_stalls_the_step_by_the_profiles_time_for_the_adapters_rank():
    # One request at a time; step time 10 ms base + 0.02 ms per prompt token + attention + 0.3 ms per adapter.
    requests = batch([0.0, 5.0, 10.0], [0, 0, 1], [100] * 3, [2] * 3, ranks=(8, 32))
    ttft = {}
    for fetch in (0.0, 7.0):
        engine = slora_engine(slora_profile(fetch_ms=fetch), requests)
        engine.run_until(20.0)
        ttft[fetch] = (engine.first_token_s - requests.arrival_s) * 1000
    prefill = 10 + 2 + 0.02 * 100 + 0.5 * 0.1 + 0.3  # no CUDA-graph or slot terms; LoRA always on
    assert ttft[0.0] == pytest.approx([prefill] * 3, rel=1e-9)
    # Every request finds its adapter dropped (the previous one finished): rank 8 costs 7 ms, rank 32 four times.
    assert ttft[7.0] - ttft[0.0] == pytest.approx([7.0, 7.0, 28.0], rel=1e-9)


def test_waiting_requests_are_admitted_every_tenth_decode_step_and_idle_polls_wait():
    # Request 0 decodes 30 tokens alone; request 1 arrives just after its prefill and waits for the 10th decode
    # step since that admission. Each decode step: 10 + 2 + 0.1 + 0.0005 * context + 0.3 ms.
    profile = slora_profile(poll_ms=10.0)
    requests = batch([0.004, 0.0431], [0, 0], [100, 100], [30, 5], ranks=(8,))
    engine = slora_engine(profile, requests)
    engine.run_until(5.0)
    prefill = 10 + 2 + 0.02 * 100 + 0.5 * 0.1 + 0.3
    decodes = [10 + 2 + 0.1 + 0.5 * (101 + j) / 1000 + 0.3 for j in range(10)]
    first0 = 0.010 + prefill / 1000  # the idle router wakes 10 ms after start, then prefills request 0
    assert engine.first_token_s[0] == pytest.approx(first0, rel=1e-12)
    admitted_at = first0 + sum(decodes) / 1000  # ten decode steps later it admits request 1
    assert engine.first_token_s[1] == pytest.approx(admitted_at + prefill / 1000, rel=1e-9)


@pytest.mark.parametrize("adapters, rate, pool", [
    (4, 2.0, 20_000),  # a busy batch with a queue and few adapters
    (40, 0.2, 6_000),  # many adapters, the pool binding, a blocked queue head
    (8, 0.05, 50_000),  # light: idle polls and arrivals inside decode stretches
])
def test_decode_jumps_change_nothing(adapters, rate, pool):
    profile = slora_profile(pool=pool, fetch_ms=3.0, poll_ms=10.0)
    requests = draw_requests(cycled_workload(adapters, [rate], [8, 32], duration_s=60), seed=2)
    records = []
    for jumps in (True, False):
        engine = slora_engine(profile, requests, jumps=jumps)
        engine.run_until(60.0)
        records.append(summarize(engine.record(60.0)))
    for field in ("successful_requests", "steps", "loads_from_cpu", "max_waiting"):
        assert getattr(records[0], field) == getattr(records[1], field)
    for field in ("total_throughput", "mean_ttft_ms", "mean_itl_ms", "p99_itl_ms", "mean_waiting", "mean_running",
                  "mean_kv_usage"):
        assert getattr(records[0], field) == pytest.approx(getattr(records[1], field), rel=1e-9)


def test_pool_startup_counts_weights_pool_and_working_memory():
    profile = slora_profile(pool=1000)
    assert check_startup(profile, ServerConfig()).kv_cache_tokens == 1000
    # toy memory: 10 GiB, 1 GiB working memory, weights sized for 2**20 KV tokens of 1 KiB (1 GiB) -> 8 GiB
    too_big = dataclasses.replace(profile, memory=dataclasses.replace(profile.memory, kv_pool_tokens=(1 << 20) + 1))
    assert check_startup(too_big, ServerConfig()).status == "oom"
    assert check_startup(dataclasses.replace(too_big, memory=dataclasses.replace(
        too_big.memory, kv_pool_tokens=0)), ServerConfig()).status == "no_kv_memory"


def test_the_engine_is_picked_by_the_profiles_framework_field():
    vllm = load_profile("h100-64gb__llama-2-7b__vllm-0.8.5")
    requests = batch([0.0], [0], [10], [5])
    config = ServerConfig(max_loras=1, max_lora_rank=16).resolved(vllm)
    assert isinstance(new_engine(vllm, config, requests), ReplicaEngine)
    as_slora = dataclasses.replace(vllm, framework="slora",
                                   memory=dataclasses.replace(vllm.memory, kv_pool_tokens=20_000))
    assert isinstance(new_engine(as_slora, config, requests), SLoraEngine)  # same model, other framework
    with pytest.raises(UnknownName, match="Did you mean 'slora'"):
        framework_of(dataclasses.replace(vllm, framework="s-lora"))


def test_profiles_are_resolved_by_their_own_model_and_framework_fields():
    assert find_profile("llama-2-7b", "slora").name == SLORA
    assert load_profile("llama-2-7b").framework == "vllm-v1"  # a bare model name keeps meaning vLLM's profile
    found, missing = resolve_profiles([("llama-2-7b", "slora"), ("llama-2-7b", "vllm-v1"),
                                       ("llama-2-13b", "slora")], "auto")
    assert {system: p.framework for system, p in found.items()} == {("llama-2-7b", "slora"): "slora",
                                                                   ("llama-2-7b", "vllm-v1"): "vllm-v1"}
    assert "no shipped profile for model 'llama-2-13b' on framework 'slora'" in missing[("llama-2-13b", "slora")]


def test_the_slora_profile_maps_flags_and_is_calibrated_on_stated_rows():
    profile = load_profile(SLORA)
    assert profile.memory.kv_pool_tokens == 82_528 and profile.engine.admit_every_steps == 10
    provenance = profile.provenance
    assert provenance["framework"] == "slora" and provenance["train_rows"] == 46
    assert "rate_0.025" not in " ".join(provenance["train_groups"])  # held out
    assert all(value == 0 for name, value in profile.step_time.coefficients.items()
               if name not in provenance["terms"]["kept_from_base"]["free_step_terms"])


def test_adaptergym_serve_refuses_a_framework_it_cannot_run_online():
    from adaptergym.serving.app import build_server

    with pytest.raises(ConfigError, match="adaptergym serve needs"):
        build_server(load_profile(SLORA), ServerConfig().resolved(load_profile(SLORA)), [])


def test_slora_benchmark_rows_map_onto_real_runs_columns():
    # First row of shared/data/slora_llama2_7b_runs.csv: 32 adapters at 0.0125 req/s, 576 prompts sent over
    # 1,454.04 s, 575 finished; the benchmark gave the unfinished one a TTFT of the whole duration.
    row = read_runs(SAMPLE).iloc[0]
    assert (row["model"], row["framework"], row["status"]) == ("llama-2-7b", "slora", "ok")
    assert row["dataset_group"].endswith("mean_dataset/rank_32/rate_0.0125")
    assert row["total_throughput_tok_s"] == pytest.approx((143_750 + 575 * 231) / 1454.0378716710256)
    assert row["mean_ttft_ms"] == pytest.approx((2583.873051133196 * 576 - 1 * 1454037.8716710256) / 575)
    assert row["adapter_rate_values"] == pytest.approx(576 / (1454.0378716710256 * 32))


def test_validate_replays_held_out_slora_rows(capsys):
    # Rows of the rate groups held out of the profile's calibration (0.025 and 0.2 req/s per adapter): light,
    # busy, just saturated, and saturated with 640 adapters (its TTFT is not comparable: measured at 1,200 s).
    assert main(["validate", "--runs", str(SAMPLE), "--group", r"rate_0\.(025|2)$", "--workers", "1",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    errors = report["models"]["llama-2-7b@slora"]
    assert report["startup_accuracy"] == 1.0 and report["startup_rows"] == 4
    assert errors["total_throughput"]["n"] == 4 and errors["total_throughput"]["mape"] < 5.0
    assert errors["mean_itl"]["mape"] < 10.0
    assert errors["mean_ttft"]["n"] == 3 and errors["mean_ttft"]["mape"] < 40.0
