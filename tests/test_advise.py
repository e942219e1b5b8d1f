"""``adaptergym advise``: recommendations the printed simulate command reproduces, the does-not-fit answer, bad input,
and the pieces it is built from (utilization floor, flag spelling, the BCA study)."""

from __future__ import annotations

import json
import math
import shlex

import pytest

from adaptergym import ServerConfig, WorkloadSpec, load_profile
from adaptergym.advise import advise
from adaptergym.advise.bca import budget_sets_kv, study
from adaptergym.advise.knobs import Space, utilization_floor, vllm_serve_command
from adaptergym.cli import main
from adaptergym.errors import ConfigError
from adaptergym.twin import lora_memory_gib
from adaptergym.workload import AdapterSpec, LengthSpec
from tests.conftest import toy_profile

#: Six adapters, short fixed requests: a light GPU whose 600-s twin runs take a fraction of a second.
SMALL = {"name": "small", "adapters": [{"id": f"a{i}", "rank": 8 * (1 + i % 2), "rate": 0.5 + 0.25 * i}
                                       for i in range(6)],
         "lengths": {"kind": "fixed", "input_tokens": 200, "output_tokens": 60}, "duration_s": 120}
#: SMALL whose rates triple for its second minute.
SMALL_VARYING = {**SMALL, "name": "small-varying",
                 "schedule": [{"kind": "piecewise", "times_s": [0, 60], "multipliers": [1, 3]}]}


def write(tmp_path, spec, name="w.json"):
    path = tmp_path / name
    path.write_text(json.dumps(spec))
    return str(path)


@pytest.fixture(scope="module")
def advised():
    """advise on SMALL for the throughput and memory objectives, and on SMALL_VARYING (computed once)."""
    workload = WorkloadSpec.from_dict(SMALL)
    out = {o: advise(workload, objective=o, trials=25, duration_s=150) for o in ("throughput", "memory")}
    out["varying"] = advise(WorkloadSpec.from_dict(SMALL_VARYING), trials=15, duration_s=120)
    return out


@pytest.mark.parametrize(("case", "spec"), [("throughput", SMALL), ("memory", SMALL), ("varying", SMALL_VARYING)])
def test_the_printed_simulate_command_reproduces_the_recommendation(tmp_path, capsys, advised, case, spec):
    path = write(tmp_path, spec)
    advice = json.loads(json.dumps(advised[case].to_dict(path)))  # what `advise --json` prints
    assert advice["fits_one_gpu"] and advice["vllm_serve"].startswith("vllm serve llama-3.1-8b-instruct --enable-lora")
    command = shlex.split(advice["simulate_command"])
    assert command[:2] == ["adaptergym", "simulate"]
    for flag, value in advice["flags"].items():
        assert command[command.index("--" + flag.replace("_", "-")) + 1] == f"{value:g}"
    assert main(command[1:]) == 0
    rerun = json.loads(capsys.readouterr().out)
    predicted = advice["predicted"]
    assert (rerun["startup"], rerun["starved"]) == (predicted["startup"], predicted["starved"]) == ("ok", False)
    for key in ("total_throughput", "p99_ttft_ms", "mean_itl_ms", "kv_cache_tokens"):
        assert rerun[key] == predicted[key], key
    assert rerun["config"]["gpu_memory_utilization"] == advice["flags"]["gpu_memory_utilization"]


def test_a_time_varying_workload_is_sized_for_its_peak_and_predicted_as_it_varies(advised):
    advice = advised["varying"]
    # the search ran the busiest minute (rates x 3) at constant rates; the prediction is the varying workload
    peak = max(v.metrics.offered_throughput for v in advice.curve if v.metrics.startup == "ok")
    assert advice.best.metrics.offered_throughput == pytest.approx(peak * 2 / 3, rel=0.1)
    assert not advice.best.metrics.starved and advice.duration_s == 120


def test_objectives_trade_memory_for_capacity(advised):
    fast, lean = advised["throughput"], advised["memory"]
    assert lean.best.free_gib > fast.best.free_gib
    assert fast.best.capacity_tok_s > lean.best.capacity_tok_s
    # memory serves what the workload offers as well as throughput does (its 99% rule), within the latency slack
    assert lean.best.metrics.total_throughput >= 0.99 * fast.best.metrics.total_throughput
    assert lean.best.p99_ttft_ms <= 2 * min(v.p99_ttft_ms for v in lean.curve + lean.finalists if v.serves())
    # every curve point is the recommendation's flags at another KV budget, ordered by it
    others = {(v.config.max_loras, v.config.max_cpu_loras, v.config.max_num_seqs) for v in lean.curve}
    assert others == {(lean.best.config.max_loras, lean.best.config.max_cpu_loras, lean.best.config.max_num_seqs)}
    budgets = [v.kv_cache_gib for v in lean.curve]
    assert budgets == sorted(budgets)


def test_a_workload_one_gpu_cannot_serve_gets_the_gpu_count(tmp_path, capsys):
    # ShareGPT lengths: the capacity model behind the GPU count ships its edges for them (others measure first)
    heavy = {"name": "heavy", "adapters": [{"id": f"h{i}", "rank": 16, "rate": 15.0} for i in range(4)],
             "lengths": {"kind": "sharegpt"}, "duration_s": 60}
    path = write(tmp_path, heavy)
    assert main(["advise", "--workload", path, "--trials", "20", "--duration", "60", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fits_one_gpu"] is False and "flags" not in out
    assert out["closest"]["starved"] and out["closest"]["total_throughput"] < 0.9 * out["closest"]["offered_throughput"]
    assert out["gpus"] >= out["lower_bound_gpus"] >= 2 and out["verified"]["starved_gpus"] == 0


@pytest.mark.parametrize(("change", "args", "message"), [
    ({"adapters": [{"id": "big", "rank": 1024, "rate": 1.0}]}, [], "rank 1024 fits on no GPU"),
    ({}, ["--objective", "speed"], "objective: 'speed' is not one of throughput, latency, memory"),
    ({}, ["--slo-ttft-ms", "1"], "slo_ttft_ms: no configuration meets a p99 TTFT of 1 ms"),
    ({}, ["--slo-ttft-ms", "-3"], "slo_ttft_ms: -3.0 must be a number of milliseconds > 0"),
    ({"arrival": {"kind": "burst"}, "num_requests": 10}, [], "arrival.kind: advise sizes a server for request rates"),
    ({"adapters": [{"id": "idle", "rank": 8, "rate": 0.0}]}, [], "all rates are 0 req/s"),
])
def test_bad_input_gets_one_line(tmp_path, capsys, change, args, message):
    path = write(tmp_path, {**SMALL, **change})
    assert main(["advise", "--workload", path, "--trials", "10", "--duration", "100", *args]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_utilization_floor_is_weights_slots_activations_and_one_longest_request():
    # toy GPU: 10 GiB, weights 8, activations 1, free slots; 4,096 tokens x 1,024 bytes = 4 MiB of KV:
    # (9 + 4 / 1024) / 10 = 0.9004 -> 0.91 on the 0.01 grid, and 0.90 leaves no KV cache
    profile = toy_profile()
    config = ServerConfig(max_loras=1, max_lora_rank=16).resolved(profile)
    assert utilization_floor(profile, config) == 0.91
    # the shipped Llama-3.1 profile at max_model_len 2048 (0.25 GiB of KV) and 8 rank-16 slots:
    llama = load_profile(None)
    config = ServerConfig(max_loras=8, max_lora_rank=16, max_model_len=2048).resolved(llama)
    mem = llama.memory
    share = (mem.weights_gib + lora_memory_gib(llama, 8, 16) + mem.activation_gib + 0.25) / mem.gpu_memory_gib
    assert utilization_floor(llama, config) == math.ceil(share * 100) / 100


def test_flags_are_spelled_as_vllm_spells_them():
    config = ServerConfig(max_loras=6, max_cpu_loras=12, max_lora_rank=16, max_num_seqs=128,
                          gpu_memory_utilization=0.55, max_model_len=2048).resolved(load_profile(None))
    assert vllm_serve_command(load_profile(None), config) == (
        "vllm serve llama-3.1-8b-instruct --enable-lora --max-loras 6 --max-cpu-loras 12 --max-lora-rank 16 "
        "--max-num-seqs 128 --max-num-batched-tokens 2048 --gpu-memory-utilization 0.55 --max-model-len 2048")


def test_bca_budgets_shrink_as_the_tolerance_grows_and_freed_memory_is_hand_computable():
    result = study(load_profile(None), utilization_grid=0.1, batches=(64, 2048))
    throughput = [p.throughput_tok_s for p in result.kv_curve]
    assert throughput[-1] > 2 * throughput[0]  # the smallest budget that starts serves far less
    assert result.peak_tok_s == max(throughput)
    utilizations = [b.point.gpu_memory_utilization for b in result.budgets]
    assert utilizations == sorted(utilizations, reverse=True)  # 1%, 5%, 10%: ever smaller budgets
    slot = lora_memory_gib(load_profile(None), 1, 16)
    for b in result.budgets:
        assert b.throughput_share >= 1 - b.tolerance
        assert b.freed_gib == pytest.approx(64.0 * (0.9 - b.point.gpu_memory_utilization))
        assert b.extra_slots == int(b.freed_gib // slot)
    assert not result.colocation_modeled


def test_bca_refuses_a_profile_whose_kv_cache_the_budget_does_not_size(capsys):
    # S-LoRA's KV pool is a fixed number of tokens: sweeping --gpu-memory-utilization measures nothing (the study
    # divided by its zero slot memory). The default run studies the vLLM profiles alone.
    assert not budget_sets_kv("h100-64gb__llama-2-7b__slora") and budget_sets_kv(load_profile(None))
    with pytest.raises(ConfigError, match="gpu-memory-utilization"):
        study("h100-64gb__llama-2-7b__slora")
    assert main(["advise", "--bca", "--profile", "h100-64gb__llama-2-7b__slora"]) == 1
    assert "--gpu-memory-utilization" in capsys.readouterr().err


def test_a_trace_is_refused_and_max_model_len_covers_the_longest_request(tmp_path, capsys):
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,adapter_id,input_tokens,output_tokens\n0.0,a,10,10\n")
    assert main(["advise", "--workload", str(trace)]) == 1
    assert "not a trace CSV" in capsys.readouterr().err
    llama, llama2 = load_profile(None), load_profile("llama-2-7b")
    for lengths, profile, cover in ((LengthSpec("lognormal", max_total_tokens=3000), llama, 4096),
                                    (LengthSpec("sharegpt"), llama, 2048),
                                    (LengthSpec("fixed", input_tokens=3000, output_tokens=2000), llama2, 4096)):
        spec = WorkloadSpec((AdapterSpec("a", 8, 1.0),), lengths)
        assert Space.of(spec, profile).max_model_len == cover  # capped at the model's context (Llama-2: 4,096)
