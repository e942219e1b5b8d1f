"""The twin server: vLLM's wire format, errors, LoRA load/unload, metrics, refusals, and timing vs the twin."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import aiohttp
import numpy as np
import pytest

from adaptergym import ServerConfig
from adaptergym.collect.scrape import parse_prometheus
from adaptergym.serving import AdapterSource, build_server
from adaptergym.serving.background import serve_in_background
from adaptergym.serving.protocol import text_tokens
from adaptergym.twin import check_startup
from adaptergym.twin.engine import ReplicaEngine
from adaptergym.workload import RequestBatch
from tests.conftest import toy_profile
from tests.test_cli import EXAMPLE


def toy_server(speed: float = 5.0, max_loras: int = 2, **kwargs):
    profile = toy_profile(max_model_len=4096)
    config = ServerConfig(max_loras=max_loras, max_lora_rank=16, **kwargs.pop("config", {})).resolved(profile)
    return build_server(profile, config, [AdapterSource("a", 16), AdapterSource("b", 8)], speed=speed,
                        served_model_name="toy-base", **kwargs)


def post(url: str, path: str, body: object) -> tuple[int, bytes]:
    async def go() -> tuple[int, bytes]:
        async with aiohttp.ClientSession() as session, session.post(url + path, json=body) as response:
            return response.status, await response.read()
    return asyncio.run(go())


def get(url: str, path: str) -> tuple[int, str]:
    async def go() -> tuple[int, str]:
        async with aiohttp.ClientSession() as session, session.get(url + path) as response:
            return response.status, await response.text()
    return asyncio.run(go())


def events(raw: bytes) -> list[object]:
    """The SSE ``data:`` payloads of a stream, JSON-decoded ([DONE] kept as a string)."""
    out = []
    for line in raw.decode().split("\n"):
        if line.startswith("data: "):
            payload = line[6:]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def test_completion_stream_has_vllms_shape_one_chunk_per_token_and_usage():
    with serve_in_background(toy_server()) as url:
        status, raw = post(url, "/v1/completions", {"model": "a", "prompt": list(range(100)), "max_tokens": 5,
                                                    "stream": True, "stream_options": {"include_usage": True}})
    assert status == 200
    chunks = events(raw)
    assert chunks[-1] == "[DONE]"
    tokens = [c for c in chunks[:-1] if c["choices"]]
    assert len(tokens) == 5 and all(c["object"] == "text_completion" and c["model"] == "a" for c in tokens)
    assert [c["choices"][0]["finish_reason"] for c in tokens] == [None] * 4 + ["length"]
    assert chunks[-2]["usage"] == {"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105}


def test_chat_stream_opens_with_the_role_and_counts_text_by_the_documented_rule():
    with serve_in_background(toy_server()) as url:
        messages = [{"role": "user", "content": "x" * 40}]
        status, raw = post(url, "/v1/chat/completions", {"model": "b", "messages": messages, "max_tokens": 3,
                                                         "stream": True, "stream_options": {"include_usage": True}})
        _, whole = post(url, "/v1/chat/completions", {"model": "b", "messages": messages, "max_tokens": 2})
    chunks = events(raw)
    assert status == 200 and chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert sum(1 for c in chunks[1:-2] if c["choices"][0]["delta"].get("content")) == 3
    assert chunks[-2]["usage"]["prompt_tokens"] == 3 + 4 + 10  # reply header + one message header + 40 chars / 4
    reply = json.loads(whole)
    assert reply["object"] == "chat.completion" and reply["usage"]["completion_tokens"] == 2
    assert text_tokens("abcde") == 2 and text_tokens("") == 1


def test_streamed_timing_is_the_twins():
    """A lone request's TTFT and latency over HTTP equal the twin's own run of it (plus wall-clock slack)."""
    profile = toy_profile(max_model_len=4096)
    config = ServerConfig(max_loras=2, max_lora_rank=16).resolved(profile)
    one = RequestBatch(np.zeros(1), np.zeros(1, np.int64), np.array([300]), np.array([20]), ("a", "b"),
                       np.array([16, 8]), 100.0)
    engine = ReplicaEngine(profile, config, one, check_startup(profile, config))
    engine.run_until(100.0)
    twin_ttft, twin_e2e = engine.first_token_s[0], engine.finish_s[0]
    speed = 4.0

    async def measure(url: str) -> tuple[float, float]:
        async with aiohttp.ClientSession() as session:
            start = asyncio.get_running_loop().time()
            first = None
            async with session.post(url + "/v1/completions", json={"model": "a", "prompt": [7] * 300,
                                                                   "max_tokens": 20, "stream": True}) as r:
                async for line in r.content:
                    if first is None and line.startswith(b"data: {"):
                        first = asyncio.get_running_loop().time()
            end = asyncio.get_running_loop().time()
        return (first - start) * speed, (end - start) * speed

    with serve_in_background(toy_server(speed=speed)) as url:
        ttft, e2e = asyncio.run(measure(url))
    # Over HTTP the times can only be later than the twin's; at speed 4, 40 ms of wall slack is 0.16 s.
    assert twin_ttft - 0.01 <= ttft <= twin_ttft + 0.16
    assert twin_e2e - 0.01 <= e2e <= twin_e2e + 0.16


def test_errors_are_vllms():
    with serve_in_background(toy_server()) as url:
        status, body = post(url, "/v1/completions", {"model": "nope", "prompt": "hi", "max_tokens": 2})
        assert status == 404
        assert json.loads(body) == {"error": {"message": "The model `nope` does not exist.", "type": "NotFoundError",
                                              "param": "model", "code": 404}}
        cases = [
            ({"model": "a", "prompt": "hi", "max_tokens": 0}, "max_tokens must be at least 1"),
            ({"model": "a", "prompt": [1] * 4000, "max_tokens": 200}, "maximum context length is 4096"),
            ({"model": "a", "prompt": "hi", "n": 2}, "n=1"),
            ({"model": "a", "prompt": ["x", "y"]}, "batched prompts"),
            ({"prompt": "hi"}, "LoRA requests only"),
        ]
        for request, message in cases:
            status, body = post(url, "/v1/completions", request)
            error = json.loads(body)["error"]
            assert status == 400 and error["code"] == 400 and message in error["message"], (request, error)
        async def not_json() -> int:
            async with aiohttp.ClientSession() as s, s.post(url + "/v1/completions", data=b"{oops") as r:
                return r.status
        assert asyncio.run(not_json()) == 400


def test_load_and_unload_lora_adapters_as_vllm_does(tmp_path):
    adapter = tmp_path / "c"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 16, "peft_type": "LORA"}))
    big = tmp_path / "big"
    big.mkdir()
    (big / "adapter_config.json").write_text(json.dumps({"r": 64}))
    with serve_in_background(toy_server()) as url:
        assert post(url, "/v1/load_lora_adapter", {"lora_name": "c", "lora_path": str(adapter)}) == (
            200, b"Success: LoRA adapter 'c' added successfully.")
        listed = json.loads(get(url, "/v1/models")[1])["data"]
        assert [m["id"] for m in listed] == ["toy-base", "a", "b", "c"]
        assert listed[0]["parent"] is None and all(m["parent"] == listed[0]["id"] for m in listed[1:])
        assert post(url, "/v1/completions", {"model": "c", "prompt": "hello", "max_tokens": 2})[0] == 200
        status, body = post(url, "/v1/load_lora_adapter", {"lora_name": "c", "lora_path": str(adapter)})
        assert status == 400 and "has already been loaded" in json.loads(body)["error"]["message"]
        status, body = post(url, "/v1/load_lora_adapter", {"lora_name": "d", "lora_path": str(tmp_path / "none")})
        assert status == 404 and "No adapter found" in json.loads(body)["error"]["message"]
        status, body = post(url, "/v1/load_lora_adapter", {"lora_name": "e", "lora_path": str(big)})
        assert status == 400 and "greater than max_lora_rank 16" in json.loads(body)["error"]["message"]
        assert post(url, "/v1/unload_lora_adapter", {"lora_name": "c"}) == (
            200, b"Success: LoRA adapter 'c' removed successfully.")
        assert post(url, "/v1/completions", {"model": "c", "prompt": "hello", "max_tokens": 2})[0] == 404
        assert post(url, "/v1/unload_lora_adapter", {"lora_name": "c"})[0] == 404


def test_adapter_added_online_behaves_like_one_known_up_front():
    profile = toy_profile()
    config = ServerConfig(max_loras=1, max_lora_rank=32).resolved(profile)
    arrivals, adapters = np.array([0.0, 0.01, 0.02, 0.5]), np.array([0, 1, 0, 1])
    both = RequestBatch(arrivals, adapters, np.full(4, 200), np.full(4, 30), ("x", "y"), np.array([8, 32]), 10.0)
    upfront = ReplicaEngine(profile, config, both, check_startup(profile, config))
    upfront.run_until(10.0)
    empty = RequestBatch(np.empty(0), np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64), ("x",),
                         np.array([8]), np.inf)
    online = ReplicaEngine(profile, config, empty, check_startup(profile, config))
    assert online.add_adapter("y", 32) == 1
    for t, a in zip(arrivals, adapters, strict=True):
        online.run_until(t)
        online.submit(t, int(a), 200, 30)
    online.run_until(10.0)
    assert np.allclose(online.finish_s[:4], upfront.finish_s)
    # One slot: x's two requests share a batch, then y's two (the y at 0.01 is skipped, not blocking): 2 loads.
    assert online.record(10.0).loads_from_disk == upfront.record(10.0).loads_from_disk == 2


def test_metrics_use_vllms_names_and_count_what_happened():
    with serve_in_background(toy_server()) as url:
        assert post(url, "/v1/completions", {"model": "a", "prompt": [1] * 50, "max_tokens": 4})[0] == 200
        assert get(url, "/health")[0] == 200
        status, text = get(url, "/metrics")
    values = parse_prometheus(text)
    assert status == 200
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:gpu_cache_usage_perc",
                 "vllm:num_preemptions_total", "vllm:time_to_first_token_seconds_count"):
        assert name in values
    assert values["vllm:prompt_tokens_total"] == 50 and values["vllm:generation_tokens_total"] == 4
    assert values["vllm:request_success_total"] == 1 and values["vllm:num_requests_running"] == 0


def test_a_full_waiting_queue_gets_http_503():
    """One sequence at a time and room for one waiting request: while one runs, of two more one is refused."""
    server = toy_server(speed=10.0, config={"max_num_seqs": 1}, max_waiting_queue_length=1)
    body = {"model": "a", "prompt": "hi", "max_tokens": 300, "stream": True}

    async def scenario(url: str) -> list[tuple[int, dict | None]]:
        async def rest(response: aiohttp.ClientResponse) -> tuple[int, dict | None]:
            payload = await response.read()
            return response.status, (json.loads(payload) if response.status != 200 else None)

        async def one(session: aiohttp.ClientSession) -> tuple[int, dict | None]:
            async with session.post(url + "/v1/completions", json=body) as response:
                return await rest(response)

        async with aiohttp.ClientSession() as session, session.post(url + "/v1/completions", json=body) as first:
            await first.content.readline()  # its first token: it is running
            others = await asyncio.gather(one(session), one(session))
            return [await rest(first), *others]

    with serve_in_background(server) as url:
        results = asyncio.run(scenario(url))
    assert sorted(status for status, _ in results) == [200, 200, 503]
    error = next(body for status, body in results if status == 503)["error"]
    assert error["type"] == "ServiceUnavailableError" and "waiting queue is full" in error["message"]


def test_a_config_vllm_refuses_exits_non_zero_with_one_line():
    proc = subprocess.run([sys.executable, "-m", "adaptergym", "serve", "--workload", str(EXAMPLE), "--max-loras",
                           "512", "--max-lora-rank", "64", "--port", "0"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 1
    assert "would not start" in proc.stderr and "oom" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


@pytest.mark.parametrize(("args", "message"), [(["--speed", "-1"], "--speed"),
                                               (["--lora-modules", "x=/no/such/dir"], "No adapter found")])
def test_bad_serve_arguments_give_one_line_errors(capsys, args, message):
    from adaptergym.cli import main

    assert main(["serve", "--workload", str(EXAMPLE), *args]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
