"""The twin server holds requests up at vLLM's API server as static runs do (``adaptergym.twin.frontend``).

Times are taken by the client over HTTP (wall seconds times the speed) and compared with hand-computed ones: the
twin's own run of the request plus the hold-ups. The hold-up is set large (2 s of twin time) so that the wall-clock
slack of a shared box (50 ms of wall time, 0.4 s of twin time at speed 8) cannot hide or fake it.
"""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import pytest

from adaptergym import ServerConfig
from adaptergym.serving import AdapterSource, build_server
from adaptergym.serving.background import serve_in_background
from adaptergym.twin import check_startup
from adaptergym.twin.engine import ReplicaEngine
from adaptergym.twin.frameworks import FRAMEWORKS
from adaptergym.workload import RequestBatch
from tests.conftest import toy_profile, with_api_server_hold

HOLD_S = 2.0
SPEED = 8.0
SLACK_S = 0.4  # twin seconds: 50 ms of wall time at SPEED
PROMPT, MAX_TOKENS = 300, 5


def held_profile():
    return with_api_server_hold(toy_profile(max_model_len=4096), HOLD_S * 1000.0)


def held_config(enable_lora: bool = True) -> ServerConfig:
    lora = {"max_loras": 3, "max_lora_rank": 16} if enable_lora else {"enable_lora": False}
    return ServerConfig(**lora).resolved(held_profile())


def server(enable_lora: bool = True):
    profile, config = held_profile(), held_config(enable_lora)
    adapters = [AdapterSource(name, 16) for name in "abc"]
    return build_server(profile, config, adapters, speed=SPEED, served_model_name="toy-base")


def twin_ttfts(arrivals: list[float], adapters: list[int], enable_lora: bool = True) -> np.ndarray:
    """TTFTs of requests reaching a bare engine (no API server) at ``arrivals``: what the server adds nothing to."""
    profile, config = held_profile(), held_config(enable_lora)
    n = len(arrivals)
    batch = RequestBatch(np.array(arrivals), np.array(adapters, np.int64), np.full(n, PROMPT),
                         np.full(n, MAX_TOKENS), ("a", "b", "c"), np.full(3, 16), 100.0)
    engine = ReplicaEngine(profile, config, batch, check_startup(profile, config))
    engine.run_until(100.0)
    return engine.first_token_s[:n] - engine.arrival_s[:n]


async def ttft(session: aiohttp.ClientSession, url: str, model: str) -> float:
    """One streamed request's TTFT as the client sees it, in twin seconds."""
    loop = asyncio.get_running_loop()
    start, first = loop.time(), None
    async with session.post(url + "/v1/completions", json={"model": model, "prompt": [7] * PROMPT,
                                                           "max_tokens": MAX_TOKENS, "stream": True}) as r:
        assert r.status == 200
        async for line in r.content:
            if first is None and line.startswith(b"data: {"):
                first = loop.time()
    return (first - start) * SPEED


def test_an_adapters_first_request_is_held_up_once_and_the_loop_sleeps_meanwhile():
    served = server()
    engine = served.driver.engine
    calls = 0
    run_until = engine.run_until

    def counted(t: float) -> None:
        nonlocal calls
        calls += 1
        run_until(t)

    engine.run_until = counted

    async def scenario(url: str) -> tuple[float, float]:
        async with aiohttp.ClientSession() as session:
            return await ttft(session, url, "a"), await ttft(session, url, "a")

    with serve_in_background(served) as url:
        first, second = asyncio.run(scenario(url))
    # The twin alone: a's first request loads it, the second (sent after the first ended) finds it on the GPU.
    twin_first, twin_second = twin_ttfts([0.0, 10.0], [0, 0])
    assert twin_first > twin_second
    assert twin_first + HOLD_S - 0.01 <= first <= twin_first + HOLD_S + SLACK_S
    assert twin_second - 0.01 <= second <= twin_second + SLACK_S
    # While the first request was held (0.25 s of wall time) the loop slept until it reached the engine: a busy
    # loop would have run the engine thousands of times.
    assert calls < 50


def test_new_adapters_first_requests_sent_together_come_out_one_hold_up_apart():
    served = server()

    async def scenario(url: str) -> list[float]:
        async with aiohttp.ClientSession() as session:
            return await asyncio.gather(*(ttft(session, url, m) for m in "abc"))

    with serve_in_background(served) as url:
        ttfts = sorted(asyncio.run(scenario(url)))
    engine = served.driver.engine
    # The engine receives them exactly one hold-up apart (the server takes them first come, first served).
    assert np.diff(engine.arrival_s[:3]) == pytest.approx([HOLD_S, HOLD_S])
    # Each reaches an idle engine (the previous one has finished its 5 tokens) and loads its adapter.
    alone = twin_ttfts([0.0], [0])[0]
    for k, seen in enumerate(ttfts, start=1):
        assert alone + k * HOLD_S - 0.01 <= seen <= alone + k * HOLD_S + SLACK_S, (k, ttfts)


def test_without_lora_nothing_is_held_up():
    async def scenario(url: str) -> list[float]:
        async with aiohttp.ClientSession() as session:
            return await asyncio.gather(*(ttft(session, url, "toy-base") for _ in range(2)))

    with serve_in_background(server(enable_lora=False)) as url:
        ttfts = asyncio.run(scenario(url))
    # Both at once on a bare engine: they share the first step.
    expected = twin_ttfts([0.0, 0.0], [0, 0], enable_lora=False)
    assert all(e - 0.01 <= seen <= e + SLACK_S for e, seen in zip(expected, ttfts, strict=True))


def test_slora_gets_its_frameworks_server_which_holds_nothing_up():
    profile, config = held_profile(), held_config()
    assert not FRAMEWORKS.get("slora")().api_server(profile, config, ()).holds
    assert FRAMEWORKS.get("vllm-v1")().api_server(profile, config, ()).hold_s == HOLD_S


def test_an_adapter_loaded_at_run_time_is_still_new_to_the_api_server(tmp_path):
    """vLLM's ``/v1/load_lora_adapter`` does not fill the API server's tokenizer cache: the first request waits."""
    (tmp_path / "adapter_config.json").write_text('{"r": 16}')

    async def scenario(url: str) -> float:
        async with aiohttp.ClientSession() as session:
            body = {"lora_name": "d", "lora_path": str(tmp_path)}
            async with session.post(url + "/v1/load_lora_adapter", json=body) as r:
                assert r.status == 200
            return await ttft(session, url, "d")

    with serve_in_background(server()) as url:
        seen = asyncio.run(scenario(url))
    alone = twin_ttfts([0.0], [0])[0]  # d has a's rank
    assert alone + HOLD_S - 0.01 <= seen <= alone + HOLD_S + SLACK_S
