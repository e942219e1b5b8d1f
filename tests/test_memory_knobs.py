"""The KV budget as a server knob: ``gpu_memory_utilization`` and ``max_model_len`` in start-up and in runs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from adaptergym import ServerConfig, load_profile, simulate
from adaptergym.cli import main
from adaptergym.errors import ConfigError
from adaptergym.twin import check_startup
from adaptergym.workload import AdapterSpec, LengthSpec, WorkloadSpec
from tests.conftest import toy_profile


def startup_at(profile, utilization, max_model_len=None, max_loras=1):
    return check_startup(profile, ServerConfig(max_loras=max_loras, max_lora_rank=16,
                                               gpu_memory_utilization=utilization,
                                               max_model_len=max_model_len).resolved(profile))


def test_kv_blocks_follow_utilization_as_hand_computed():
    # toy GPU: 10 GiB, weights 8 GiB, activations 1 GiB, LoRA slots free, 1,024 bytes per KV token, blocks of 16.
    profile = toy_profile()
    assert profile.memory.weights_gib == pytest.approx(8.0)
    # u=1: 10 - 8 - 1 = 1 GiB = 2**20 tokens = 65,536 blocks
    assert (startup_at(profile, 1.0).kv_blocks, startup_at(profile, 1.0).kv_cache_tokens) == (65_536, 2**20)
    # u=0.95: 9.5 - 9 = 0.5 GiB = 2**19 tokens = 32,768 blocks
    assert startup_at(profile, 0.95).kv_blocks == 32_768
    # u=0.9001: 0.001 GiB = 1,073,741.8 bytes = 1,048.6 tokens -> 65 whole blocks = 1,040 tokens < 4,096
    tight = startup_at(profile, 0.9001)
    assert (tight.status, tight.kv_blocks, tight.kv_cache_tokens) == ("kv_insufficient_for_max_model_len", 65, 1040)
    # the same budget starts once max_model_len fits in it
    assert startup_at(profile, 0.9001, max_model_len=1040).status == "ok"
    assert startup_at(profile, 0.9001, max_model_len=1041).status == "kv_insufficient_for_max_model_len"
    # u=0.9 leaves nothing, u=0.5 less than nothing: vLLM's "no available memory for the cache blocks"
    assert startup_at(profile, 0.9).status == startup_at(profile, 0.5).status == "no_kv_memory"


def test_memory_beyond_the_gpu_is_oom_whatever_the_utilization():
    toy = toy_profile()
    profile = dataclasses.replace(toy, memory=dataclasses.replace(toy.memory, lora_slot_gib_fixed=0.6))
    for utilization in (0.5, 1.0):  # 8 + 1 + 4 x 0.6 GiB > 10 GiB
        config = ServerConfig(max_loras=4, max_lora_rank=16, gpu_memory_utilization=utilization)
        assert check_startup(profile, config.resolved(profile)).status == "oom"


def test_default_utilization_reproduces_kv_capacity_and_its_start_up_verdicts(shared_data):
    """Explicit 0.9 (vLLM's default, the setting of every kv_capacity.csv start-up) is the profile's default,
    every start-up verdict is the measured one, and KV tokens are the measured ones as closely as the profile's
    provenance states (mean error under 2%; the largest, Qwen's smallest cache, 8.7%)."""
    kv = pd.read_csv(shared_data / "kv_capacity.csv")
    for model, rows in kv.groupby("model"):
        profile = load_profile(model)
        predicted = [check_startup(profile, ServerConfig(max_loras=int(r.max_loras), max_lora_rank=int(r.max_lora_rank),
                                                         gpu_memory_utilization=0.9).resolved(profile))
                     for r in rows.itertuples()]
        defaults = [check_startup(profile, ServerConfig(max_loras=int(r.max_loras),
                                                        max_lora_rank=int(r.max_lora_rank)).resolved(profile))
                    for r in rows.itertuples()]
        assert predicted == defaults
        assert [p.status for p in predicted] == list(rows["status"]), model
        ok = rows["status"].eq("ok").to_numpy()
        tokens = np.array([p.kv_cache_tokens for p in predicted])[ok]
        error = 100 * np.abs(tokens / rows["gpu_kv_cache_tokens"].to_numpy()[ok] - 1)
        stated = profile.provenance["terms"]["memory"]
        assert error.mean() < 2.0 and error.max() <= stated["kv_tokens_max_error_pct"] + 0.05, model


def test_a_utilization_step_moves_the_kv_cache_by_that_share_of_the_gpu():
    # Llama-3.1-8B: 0.1 x 64 GiB / 131,072 bytes per token = 52,428.8 tokens, to within one 16-token block
    profile = load_profile(None)
    high, low = (startup_at(profile, u, max_model_len=2048, max_loras=8) for u in (0.8, 0.7))
    assert abs(high.kv_cache_tokens - low.kv_cache_tokens - 52_428.8) <= 16


def test_a_smaller_kv_budget_runs_fewer_sequences_and_a_refused_one_serves_nothing():
    # 5 req/s of 400 + 400 tokens keeps about 28 sequences (22,000 KV tokens) running
    workload = WorkloadSpec((AdapterSpec("a", 16, 5.0),), LengthSpec("fixed", input_tokens=400, output_tokens=400),
                            duration_s=60.0)
    profile = load_profile(None)
    roomy, tight = (simulate(workload, profile, ServerConfig(max_loras=1, gpu_memory_utilization=u,
                                                             max_model_len=1024)) for u in (0.9, 0.34))
    assert roomy.kv_cache_tokens > 20 * tight.kv_cache_tokens > 0
    assert tight.preemptions > roomy.preemptions == 0
    assert tight.mean_running < roomy.mean_running and tight.starved and not roomy.starved
    refused = simulate(workload, profile, ServerConfig(max_loras=1, gpu_memory_utilization=0.3))
    assert refused.startup == "no_kv_memory" and refused.total_throughput == 0 and refused.starved


def test_bad_memory_flags_are_one_line_errors(capsys, tmp_path):
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"adapters": [{"id": "a", "rank": 8, "rate": 1.0}],
                                "lengths": {"kind": "fixed", "input_tokens": 300, "output_tokens": 100},
                                "duration_s": 10}))
    cases = {("--gpu-memory-utilization", "1.5"): "gpu_memory_utilization: 1.5 must be in (0, 1]",
             ("--gpu-memory-utilization", "0"): "gpu_memory_utilization: 0.0 must be in (0, 1]",
             ("--max-model-len", "399"): "400 tokens exceed max_model_len 399",
             ("--max-model-len", "200000"): "exceeds the model's context length 131072"}
    for flags, message in cases.items():
        assert main(["simulate", "--workload", str(path), *flags]) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    with pytest.raises(ConfigError, match="max_model_len"):
        ServerConfig(max_model_len=0).validate()
