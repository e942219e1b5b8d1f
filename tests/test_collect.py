"""collect: end to end against the twin server (vs the twin itself), failures counted per kind, durable outputs,
adapters, the vLLM launcher's command line and refusal without vLLM, sweeps."""

from __future__ import annotations

import asyncio
import json
import math
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from aiohttp import web

from adaptergym import ServerConfig, load_profile, simulate
from adaptergym.cli import main
from adaptergym.collect import RunPlan, Target, collect_run, load_sweep
from adaptergym.collect.adapters import write_adapters, write_zero_adapter
from adaptergym.collect.client import RequestResult
from adaptergym.collect.launcher import LaunchSpec, classify_startup_failure, vllm_command
from adaptergym.collect.scrape import MetricsSeries
from adaptergym.collect.session import model_label
from adaptergym.collect.summary import RUN_COLUMNS
from adaptergym.collect.writer import RequestLog, append_run, requests_path
from adaptergym.errors import ConfigError
from adaptergym.serving import AdapterSource, build_server
from adaptergym.serving.background import serve_in_background
from adaptergym.serving.models import rank_of
from adaptergym.simulation import draw_requests
from adaptergym.twin.config import default_rank
from adaptergym.workload import WorkloadSpec

WORKLOAD = {"name": "e2e", "adapters": [{"id": "a0", "rank": 8, "rate": 1.5}, {"id": "a1", "rank": 16, "rate": 1.0},
                                        {"id": "a2", "rank": 8, "rate": 1.0}, {"id": "a3", "rank": 16, "rate": 0.5}],
            "lengths": {"kind": "fixed", "input_tokens": 256, "output_tokens": 32}, "duration_s": 60}


def write_json(path, data) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def test_collect_against_serve_reproduces_the_twin(tmp_path):
    """One simulated minute at speed 20 over HTTP: throughput within 5% of `simulate` on the same stream.

    TTFT can only grow over HTTP: wall-clock HTTP and event-loop delays are multiplied by the speed (2 ms of
    wall time is 40 ms of twin time here), more so on a busy machine; the bound allows 10 ms of wall time.
    """
    workload = write_json(tmp_path / "w.json", WORKLOAD)
    profile = load_profile(None)
    requests = draw_requests(workload, seed=0)
    config = default_rank(ServerConfig(max_loras=2), requests.adapter_ranks).resolved(profile)
    twin = simulate(workload, profile, config, seed=0)
    adapters = [AdapterSource(i, int(r)) for i, r in zip(requests.adapter_ids, requests.adapter_ranks, strict=True)]
    out = tmp_path / "runs.csv"
    with serve_in_background(build_server(profile, config, adapters, speed=20.0)) as url:
        row = collect_run(RunPlan(workload, seed=0, max_loras=2), Target(url), out)
    assert row["status"] == "ok" and row["speed"] == 20.0 and row["failed_requests"] == 0
    assert row["total_throughput_tok_s"] == pytest.approx(twin.total_throughput, rel=0.05)
    assert row["mean_itl_ms"] == pytest.approx(twin.mean_itl_ms, rel=0.15)
    assert twin.mean_ttft_ms * 0.95 <= row["mean_ttft_ms"] <= twin.mean_ttft_ms + 20.0 * 10.0
    assert row["successful_requests"] + row["unfinished_requests"] == twin.arrived_requests
    assert row["model"] == profile.model and "twin" in row["vllm_version"] and row["npy_samples"] > 10
    assert (row["srv_max_loras"], row["srv_max_lora_rank"], row["srv_max_num_seqs"]) == (2, 16, 2048)  # as served
    runs = pd.read_csv(out)
    assert list(runs.columns) == list(RUN_COLUMNS) and len(runs) == 1
    per_request = pd.read_csv(requests_path(out))
    assert len(per_request) == twin.arrived_requests and set(per_request["status"]) <= {"ok", "unfinished"}
    # The row describes the workload exactly, so calibrate/validate can replay it.
    assert json.loads(runs["bench_adapter_rates"][0]) == [1.5, 1.0, 1.0, 0.5]
    assert runs["dummy_lora_ranks_cycle"][0] == "8 16 8 16" and runs["bench_synthetic_output_length"][0] == 32


def test_ctrl_c_keeps_every_measured_request_and_marks_the_run(tmp_path):
    workload = write_json(tmp_path / "w.json", WORKLOAD)
    profile = load_profile(None)
    config = ServerConfig(max_loras=4, max_lora_rank=16).resolved(profile)
    adapters = [AdapterSource(a["id"], a["rank"]) for a in WORKLOAD["adapters"]]
    out = tmp_path / "runs.csv"
    # Speed 2: the minute takes 30 s of wall time, so a loaded box cannot finish it before the interrupt (at
    # speed 10 it once ended in 6 s, exit 0, before the loop below saw its requests).
    with serve_in_background(build_server(profile, config, adapters, speed=2.0)) as url:
        proc = subprocess.Popen([sys.executable, "-m", "adaptergym", "collect", "-q", "--workload", workload,
                                 "--endpoint", url, "--out", str(out)], stderr=subprocess.PIPE, text=True)
        # Interrupt once the first requests are measured (a fixed sleep raced start-up on a loaded box).
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline and proc.poll() is None:
            if requests_path(out).exists() and len(requests_path(out).read_text().splitlines()) > 3:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    run = pd.read_csv(out)
    per_request = pd.read_csv(requests_path(out))
    assert run["status"][0] == "interrupted" and 0 < run["successful_requests"][0] < 231
    assert (per_request["status"] == "ok").sum() == run["successful_requests"][0]


# A fake server misbehaving in one way per adapter name.
async def fake_completions(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    kind = body["model"]
    if kind == "boom":
        return web.json_response({"error": {"message": "engine dead", "type": "InternalServerError",
                                            "param": None, "code": 500}}, status=500)
    if kind == "hang":
        await asyncio.sleep(1.0)
        return web.Response()
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    good = b'data: {"choices": [{"index": 0, "text": " t", "finish_reason": null}]}\n\n'
    if kind == "garbage":
        await response.write(good + b"data: {not json\n\n")
    elif kind == "cut":
        await response.write(good)  # and close without data: [DONE]
    else:
        await response.write(good * body["max_tokens"] + b'data: {"choices": [], "usage": {"completion_tokens": '
                             + str(body["max_tokens"]).encode() + b"}}\n\ndata: [DONE]\n\n")
    return response


def fake_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/v1/completions", fake_completions)
    return app


def burst(tmp_path, names: list[str], per_adapter: int) -> str:
    return write_json(tmp_path / "burst.json", {
        "name": "burst", "adapters": [{"id": n, "rank": 8, "rate": 1.0} for n in names],
        "lengths": {"kind": "fixed", "input_tokens": 8, "output_tokens": 3}, "arrival": {"kind": "burst"},
        "num_requests": per_adapter * len(names), "duration_s": 1})


def test_failures_are_counted_per_kind_and_never_crash_the_run(tmp_path):
    workload = burst(tmp_path, ["fine", "boom", "garbage", "cut", "hang"], per_adapter=2)
    out = tmp_path / "runs.csv"
    with serve_in_background(fake_app()) as url:
        row = collect_run(RunPlan(workload), Target(url, model="fake", timeout_s=0.3), out)
    requests = pd.read_csv(requests_path(out))
    sent = requests["adapter"].value_counts().to_dict()  # a burst draws each request's adapter at random
    kinds = {"boom": "http_500", "cut": "incomplete_stream", "garbage": "malformed_reply", "hang": "timeout"}
    assert len(requests) == 10 and row["status"] == "ok"
    assert row["successful_requests"] == sent.get("fine", 0) and row["failed_requests"] == 10 - sent.get("fine", 0)
    assert json.loads(row["errors"]) == {kinds[a]: n for a, n in sent.items() if a != "fine"}
    assert row["total_generated_tokens"] == 3 * sent.get("fine", 0)
    assert row["metrics_scrape_failures"] >= 1  # the fake has no /metrics
    assert requests.loc[requests["error"] == "http_500", "detail"].eq("engine dead").all()
    assert requests.loc[requests["error"] == "http_500", "http_status"].eq(500).all()


def test_a_refused_connection_is_counted(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    row = collect_run(RunPlan(burst(tmp_path, ["a"], per_adapter=3)), Target(f"http://127.0.0.1:{port}", model="m"),
                      tmp_path / "runs.csv")
    assert row["successful_requests"] == 0 and json.loads(row["errors"]) == {"connection_refused": 3}
    assert math.isnan(row["mean_ttft_ms"]) and row["total_throughput_tok_s"] == 0


def test_runs_are_appended_without_losing_rows_or_columns(tmp_path):
    out = tmp_path / "runs.csv"
    pd.DataFrame({"run_id": ["old-1", "old-2"], "model": ["m", "m"], "legacy_note": ["x", "y"],
                  "mean_ttft_ms": [1.5, 2.5]}).to_csv(out, index=False)
    append_run(out, {"run_id": "new", "model": "m2", "mean_ttft_ms": 3.25, "errors": '{"timeout": 1}'})
    frame = pd.read_csv(out)
    assert list(frame["run_id"]) == ["old-1", "old-2", "new"] and list(frame["legacy_note"][:2]) == ["x", "y"]
    assert list(frame["mean_ttft_ms"]) == [1.5, 2.5, 3.25] and json.loads(frame["errors"][2]) == {"timeout": 1}
    assert not (tmp_path / "runs.csv.tmp").exists()


def test_each_request_row_is_on_disk_as_soon_as_it_is_written(tmp_path):
    log = RequestLog(tmp_path / "r.csv", "run-1")
    log.write(RequestResult(0, "a", 0.5, 10, 3, sent_s=0.5, ttft_ms=12.0, e2e_ms=30.0, generated_tokens=3,
                            itl_ms=[8.0, 10.0], status="ok"))
    frame = pd.read_csv(tmp_path / "r.csv")  # before close: a crash now loses nothing
    assert frame["tpot_ms"][0] == 9.0 and frame["mean_itl_ms"][0] == 9.0 and frame["run_id"][0] == "run-1"
    log.close()
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(Exception, match="not a requests CSV"):
        RequestLog(tmp_path / "other.csv", "run-2")


def test_zero_adapters_have_peft_names_shapes_and_zeros(tmp_path):
    safetensors = pytest.importorskip("safetensors.numpy")
    config = {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2}
    path = write_zero_adapter(tmp_path / "r8", "tiny-model", config, 8)
    tensors = safetensors.load_file(str(path / "adapter_model.safetensors"))
    assert len(tensors) == 2 * 4 * 2
    prefix = "base_model.model.model.layers.1.self_attn"
    assert tensors[f"{prefix}.q_proj.lora_A.weight"].shape == (8, 64)
    assert tensors[f"{prefix}.q_proj.lora_B.weight"].shape == (64, 8)
    assert tensors[f"{prefix}.k_proj.lora_B.weight"].shape == (32, 8)  # 2 KV heads of 16
    assert tensors[f"{prefix}.o_proj.lora_A.weight"].shape == (8, 64)
    assert all(not np.any(t) for t in tensors.values())
    adapter_config = json.loads((path / "adapter_config.json").read_text())
    assert adapter_config["r"] == 8 and adapter_config["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert rank_of(str(path)) == 8  # the twin server reads them as vLLM would
    shared = write_adapters(tmp_path / "many", "tiny-model", config, {"x": 8, "y": 16, "z": 8})
    assert shared["x"] == shared["z"] != shared["y"]


def test_vllm_command_uses_vllms_flags(tmp_path):
    cmd = vllm_command(LaunchSpec("org/model", port=9000, max_loras=4, max_cpu_loras=8, max_lora_rank=32,
                                  max_num_seqs=256, extra_args=("--max-model-len", "8192")),
                       {"a": tmp_path / "r8", "b": tmp_path / "r16"})
    text = " ".join(cmd)
    assert cmd[:3] == ["vllm", "serve", "org/model"]
    for flag in ("--enable-lora", "--max-loras 4", "--max-cpu-loras 8", "--max-lora-rank 32", "--max-num-seqs 256",
                 "--port 9000", "--no-enable-prefix-caching", f"--lora-modules a={tmp_path / 'r8'} b=",
                 "--max-model-len 8192"):
        assert flag in text


@pytest.mark.parametrize(("log", "status"), [
    ("ValueError: No available memory for the cache blocks. Try increasing", "no_kv_memory"),
    ("The model's max seq len (131072) is larger than the maximum number of tokens that can be stored in KV cache",
     "kv_insufficient_for_max_model_len"),
    ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate", "oom"),
    ("ModuleNotFoundError: No module named 'foo'", "launch_failed"),
])
def test_startup_failures_get_the_real_runs_statuses(log, status):
    assert classify_startup_failure(log) == status


def test_launch_without_vllm_says_so_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["collect", "--workload", burst(tmp_path, ["a"], 1), "--out", str(tmp_path / "r.csv"), "--launch",
                 "--model", "org/model"]) == 1
    err = capsys.readouterr().err.strip()
    assert "vllm" in err and len(err.splitlines()) == 1 and not (tmp_path / "r.csv").exists()


def test_model_names_follow_real_runs_csv():
    assert model_label("meta-llama/Llama-3.1-8B-Instruct") == "llama-3.1-8b-instruct"
    assert model_label("/models/Qwen2.5-7B-Instruct/") == "qwen2.5-7b-instruct" and model_label("") == ""


def test_sweep_runs_take_defaults_and_resolve_workload_paths(tmp_path):
    (tmp_path / "sub").mkdir()
    write_json(tmp_path / "sub" / "w.json", WORKLOAD)
    sweep = write_json(tmp_path / "sub" / "sweep.json", {"model": "m", "seed": 4, "max_lora_rank": 16, "runs": [
        {"workload": "w.json", "max_loras": 2}, {"workload": "w.json", "max_loras": 4, "seed": 5}]})
    plans = load_sweep(sweep)
    assert [(p.max_loras, p.seed, p.max_lora_rank) for p in plans] == [(2, 4, 16), (4, 5, 16)]
    assert WorkloadSpec.from_json(plans[0].workload).name == "e2e"
    write_json(tmp_path / "bad.json", {"runs": [{"workload": "w.json", "max_lora": 2}]})
    with pytest.raises(ConfigError, match=r"runs\[0\]: unknown key\(s\) \['max_lora'\]"):
        load_sweep(tmp_path / "bad.json")


def test_metrics_series_reduce_to_the_npy_columns():
    series = MetricsSeries()
    for running, waiting, kv, preempted in ((2, 0, 0.1, 5), (4, 3, 0.3, 7), (3, 1, 0.2, 9)):
        series.add({"vllm:num_requests_running": running, "vllm:num_requests_waiting": waiting,
                    "vllm:kv_cache_usage_perc": kv, "vllm:num_preemptions_total": preempted})
    cols = series.columns()
    assert cols["npy_samples"] == 3 and cols["npy_mean_running"] == 3 and cols["npy_max_waiting"] == 3
    assert cols["npy_mean_kv_usage"] == pytest.approx(0.2) and cols["npy_preemptions_total"] == 4
