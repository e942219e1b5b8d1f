"""One streamed completion request, timed as vLLM's ``benchmark_serving.py`` times it.

TTFT is the first chunk carrying a choice, ITL the gaps between such chunks, the output length the server's
``usage.completion_tokens`` (chunks counted when the server sends no usage). Every failure becomes an error
kind on the result instead of an exception: ``connection_refused``, ``connection_error`` (reset, closed
mid-reply), ``timeout`` (no byte for ``timeout_s``), ``http_<status>``, ``malformed_reply`` (a chunk that is
not the OpenAI format), ``incomplete_stream`` (ended without ``data: [DONE]``), ``stream_error`` (an error
object inside the stream).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

OK = "ok"
ERROR = "error"
UNFINISHED = "unfinished"  # still running when the run ended


@dataclass(slots=True)
class RequestResult:
    """One request of a run. Times are run time: wall-clock seconds times the run's ``speed``."""

    index: int
    adapter: str
    arrival_s: float  # when the workload says it arrives
    input_tokens: int
    output_tokens: int  # requested (max_tokens, ignore_eos)
    sent_s: float = math.nan
    ttft_ms: float = math.nan
    e2e_ms: float = math.nan
    generated_tokens: int = 0
    itl_ms: list[float] = field(default_factory=list)
    status: str = "pending"
    error: str = ""
    detail: str = ""
    http_status: int | None = None

    @property
    def tpot_ms(self) -> float:
        """(e2e - TTFT) / (output tokens - 1), as vLLM's benchmark defines it."""
        if self.status != OK or self.generated_tokens < 2:
            return math.nan
        return (self.e2e_ms - self.ttft_ms) / (self.generated_tokens - 1)

    def fail(self, kind: str, detail: str = "") -> None:
        self.status, self.error, self.detail = ERROR, kind, detail[:200]


def completion_body(model: str, prompt: list[int], max_tokens: int) -> dict[str, Any]:
    """The request vLLM's benchmark sends for exact lengths: token ids in, exactly ``max_tokens`` out."""
    return {"model": model, "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True, "temperature": 0.0,
            "stream": True, "stream_options": {"include_usage": True}}


async def send(session: aiohttp.ClientSession, url: str, body: dict[str, Any], result: RequestResult,
               speed: float, t0: float, timeout_s: float) -> None:
    """Send one streamed request and fill ``result``; never raises except on cancellation."""
    start = time.monotonic()
    result.sent_s = (start - t0) * speed
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout_s / speed, sock_read=timeout_s / speed)
    try:
        async with session.post(url, json=body, timeout=timeout) as response:
            result.http_status = response.status
            if response.status >= 400:
                result.fail(f"http_{response.status}", _error_message(await response.text()))
                return
            await _read_stream(response, result, start, speed)
    except aiohttp.ClientConnectorError as exc:
        refused = isinstance(exc.os_error, ConnectionRefusedError)
        result.fail("connection_refused" if refused else "connection_error", str(exc))
    except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
        result.fail("timeout", f"no reply within {timeout_s:g} s")
    except aiohttp.ClientError as exc:  # disconnected, payload errors, ...
        result.fail("connection_error", f"{type(exc).__name__}: {exc}")


async def _read_stream(response: aiohttp.ClientResponse, result: RequestResult, start: float, speed: float) -> None:
    chunks = 0
    last = start
    usage_tokens: int | None = None
    async for raw in response.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue  # blank separators and SSE comments
        payload = line[5:].strip()
        if payload == b"[DONE]":
            result.generated_tokens = usage_tokens if usage_tokens is not None else chunks
            result.e2e_ms = (time.monotonic() - start) * speed * 1000.0
            result.status = OK
            return
        try:
            data = json.loads(payload)
        except json.JSONDecodeError:
            result.fail("malformed_reply", f"not JSON: {payload[:80]!r}")
            return
        if not isinstance(data, dict):
            result.fail("malformed_reply", f"not a JSON object: {payload[:80]!r}")
            return
        if "error" in data:
            result.fail("stream_error", _error_message(json.dumps(data)))
            return
        choices = data.get("choices")
        if choices:
            now = time.monotonic()
            if chunks == 0:
                result.ttft_ms = (now - start) * speed * 1000.0
            else:
                result.itl_ms.append((now - last) * speed * 1000.0)
            last = now
            chunks += 1
        elif isinstance(data.get("usage"), dict):
            usage_tokens = data["usage"].get("completion_tokens")
        elif choices is None:
            result.fail("malformed_reply", f"chunk without choices or usage: {payload[:80]!r}")
            return
    result.fail("incomplete_stream", f"stream ended after {chunks} chunks without data: [DONE]")


def _error_message(text: str) -> str:
    """The ``message`` of an OpenAI/vLLM error body, else the text itself."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text.strip()
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict) and "message" in error:
        return str(error["message"])
    return text.strip()
