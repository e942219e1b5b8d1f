"""Scrape vLLM's Prometheus ``/metrics`` every 2 s of run time and reduce the series to the ``npy_*`` columns.

The columns are those of ``shared/data/real_runs.csv`` (the papers' 2-s Prometheus series): running and
waiting requests (mean, max), KV-cache usage as a fraction (mean, max; ``vllm:gpu_cache_usage_perc``, or
``vllm:kv_cache_usage_perc`` on vLLM versions that renamed it), and preemptions during the run (last minus
first value of ``vllm:num_preemptions_total``).
"""

from __future__ import annotations

import asyncio
import math
import re
from dataclasses import dataclass, field

import aiohttp
import numpy as np

#: column -> metric names to try, in order
SERIES = {
    "running": ("vllm:num_requests_running",),
    "waiting": ("vllm:num_requests_waiting",),
    "kv_usage": ("vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc"),
    "preemptions": ("vllm:num_preemptions_total",),
}
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{.*\})?\s+(?P<value>\S+)")


def parse_prometheus(text: str) -> dict[str, float]:
    """Metric name -> value summed over its label sets (comments and malformed lines are skipped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if not match:
            continue
        try:
            value = float(match["value"])
        except ValueError:
            continue
        out[match["name"]] = out.get(match["name"], 0.0) + value
    return out


@dataclass
class MetricsSeries:
    """Samples of the scraped series, and how many scrapes failed."""

    samples: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in SERIES})
    scrapes: int = 0
    failures: int = 0
    last_failure: str = ""

    def add(self, values: dict[str, float]) -> None:
        self.scrapes += 1
        for column, names in SERIES.items():
            value = next((values[n] for n in names if n in values), None)
            if value is not None:
                self.samples[column].append(value)

    def columns(self) -> dict[str, float]:
        """The ``npy_*`` columns (NaN where the endpoint did not report the series)."""
        def stat(column: str, fn) -> float:
            values = self.samples[column]
            return float(fn(np.asarray(values))) if values else math.nan

        preemptions = self.samples["preemptions"]
        return {
            "npy_samples": float(self.scrapes) if self.scrapes else math.nan,
            "npy_mean_running": stat("running", np.mean),
            "npy_max_running": stat("running", np.max),
            "npy_mean_waiting": stat("waiting", np.mean),
            "npy_max_waiting": stat("waiting", np.max),
            "npy_preemptions_total": preemptions[-1] - preemptions[0] if preemptions else math.nan,
            "npy_mean_kv_usage": stat("kv_usage", np.mean),
            "npy_max_kv_usage": stat("kv_usage", np.max),
        }


async def scrape_forever(session: aiohttp.ClientSession, url: str, series: MetricsSeries, interval_s: float) -> None:
    """Scrape ``url`` every ``interval_s`` wall seconds until cancelled; failures are counted, never raised."""
    while True:
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=max(interval_s, 1.0))) as response:
                if response.status != 200:
                    raise aiohttp.ClientResponseError(response.request_info, (), status=response.status,
                                                      message=f"HTTP {response.status}")
                series.add(parse_prometheus(await response.text()))
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            series.failures += 1
            series.last_failure = f"{type(exc).__name__}: {exc}"[:200]
        await asyncio.sleep(interval_s)
