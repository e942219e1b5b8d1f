"""Drive a drawn request stream against an OpenAI-compatible endpoint with the workload's arrival times.

Request ``i`` is sent at ``arrival_s[i] / speed`` wall seconds after the start (``speed`` > 1 only makes sense
against a twin server running at that speed). A timed run stops at the workload's duration: requests still
running are cancelled and reported as ``unfinished`` (the twin's throughput, too, counts only requests that
finish within the duration); a burst run (``arrival.kind == "burst"``) waits for every request. Each result
is handed to ``on_result`` as soon as it is final, so a crash or Ctrl-C loses nothing already measured.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import numpy as np

from adaptergym.collect.client import UNFINISHED, RequestResult, completion_body, send
from adaptergym.collect.scrape import MetricsSeries, scrape_forever
from adaptergym.workload.requests import RequestBatch

SCRAPE_INTERVAL_S = 2.0
#: token ids for prompts: random (so prefix caching cannot help) and below every vocabulary size in use
PROMPT_TOKEN_RANGE = (1000, 30000)


@dataclass
class RunOutcome:
    """What one run measured. ``duration_s`` is run time (wall seconds times speed)."""

    results: list[RequestResult]
    duration_s: float
    metrics: MetricsSeries = field(default_factory=MetricsSeries)


async def run_requests(endpoint: str, requests: RequestBatch, *, speed: float = 1.0, timeout_s: float = 600.0,
                       seed: int = 0, on_result: Callable[[RequestResult], None] | None = None,
                       scrape_interval_s: float = SCRAPE_INTERVAL_S, into: RunOutcome | None = None) -> RunOutcome:
    """Send ``requests`` to ``endpoint`` (base URL such as ``http://127.0.0.1:8000``) and time them.

    Args:
        endpoint: server base URL; requests go to ``/v1/completions``, scrapes to ``/metrics``.
        requests: the drawn requests (``adaptergym.simulation.draw_requests``); ``model`` is the adapter id.
        speed: run-time seconds per wall second (the twin server's ``--speed``; 1 for a real server).
        timeout_s: a request with no reply byte for this long (run time) fails with ``timeout``.
        seed: seeds the prompts' random token ids.
        on_result: called with each result once it is final.
        scrape_interval_s: run time between two ``/metrics`` scrapes.
        into: an outcome to fill, so that a caller still has what was measured if the run is interrupted.
    """
    base = endpoint.rstrip("/")
    rng = np.random.default_rng(seed)
    results = [RequestResult(i, requests.adapter_ids[int(requests.adapter[i])], float(requests.arrival_s[i]),
                             int(requests.input_tokens[i]), int(requests.output_tokens[i]))
               for i in range(len(requests))]
    outcome = into if into is not None else RunOutcome([], 0.0)
    series = outcome.metrics
    pending: set[asyncio.Task] = set()

    def finished(result: RequestResult) -> Callable[[asyncio.Task], None]:
        def done(_task: asyncio.Task) -> None:
            if result.status == "pending":  # cancelled at the run's end
                result.status = UNFINISHED
            if on_result:
                on_result(result)
        return done

    connector = aiohttp.TCPConnector(limit=0)  # no client-side cap on concurrent requests
    async with aiohttp.ClientSession(connector=connector) as session:
        t0 = time.monotonic()
        scraper = asyncio.create_task(scrape_forever(session, f"{base}/metrics", series, scrape_interval_s / speed))
        try:
            for result in results:
                delay = t0 + result.arrival_s / speed - time.monotonic()
                if not requests.drain and result.arrival_s >= requests.duration_s:
                    break
                if delay > 0:
                    await asyncio.sleep(delay)
                prompt = rng.integers(*PROMPT_TOKEN_RANGE, size=result.input_tokens).tolist()
                body = completion_body(result.adapter, prompt, result.output_tokens)
                task = asyncio.create_task(send(session, f"{base}/v1/completions", body, result, speed, t0,
                                                timeout_s))
                task.add_done_callback(finished(result))
                pending.add(task)
                task.add_done_callback(pending.discard)
            if requests.drain:
                await asyncio.gather(*pending)
            else:
                await asyncio.sleep(max(0.0, t0 + requests.duration_s / speed - time.monotonic()))
        finally:
            outcome.duration_s = (time.monotonic() - t0) * speed
            scraper.cancel()
            for task in list(pending):
                task.cancel()
            await asyncio.gather(scraper, *pending, return_exceptions=True)
            outcome.results = [r for r in results if r.status != "pending"]
    return outcome
