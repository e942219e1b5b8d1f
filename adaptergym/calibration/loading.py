"""Adapter load times: CPU->GPU copies from the published micro-benchmarks, the API server's hold-up on a new
adapter from the runs' TTFT tails.

* CPU->GPU: ``anchor_twin_constants.json`` lists the measured copy time per adapter rank.
* API server: an adapter's first request holds vLLM's API server up (see ``adaptergym.twin.frontend``). In a run
  that keeps up with few requests at once, the adapters' first requests are its slowest, so when they are more
  than 1% of its requests its 99th TTFT percentile is one of theirs, and it exceeds the median TTFT by the
  hold-up plus the engine's first load of the adapter (from disk, then to the GPU). The micro-benchmarks' 2-second
  Prometheus series check it: ``predictor_loading`` sends 50 requests for 50 new adapters at once, and the API
  server answers no scrape until it has passed most of them on, so the first scrape after the start, over the
  requests the engine holds by then, bounds the hold-up per request from above (it also parses and tokenizes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adaptergym.profile import LoadTimeModel
from adaptergym.twin.lora_cache import load_ms_by_rank

#: A run measures a first load when its adapters' first requests are more than this share of its requests...
MIN_FIRST_SHARE = 0.011
#: ...and it keeps up with so few requests at once that no queue or batch adds to a first request's wait.
MAX_MEAN_RUNNING = 10.0
MAX_MEAN_WAITING = 0.5
#: What the measurement reads from a real-runs CSV.
MEASURED_COLUMNS = ("status", "num_adapters", "successful_requests", "p99_ttft_ms", "median_ttft_ms",
                    "npy_mean_running", "npy_mean_waiting")


def loading_table(constants: Path, model: str) -> tuple[dict[str, float] | None, dict[str, Any]]:
    """CPU->GPU load ms per adapter rank (loaded at its own max_lora_rank), from the published measurements."""
    if not constants.is_file():
        return None, {}
    table = json.loads(constants.read_text()).get("cpu_to_gpu_adapter_load_ms", {}).get(model)
    if not table:
        return None, {}
    by_rank = {rank: float(table[rank][rank]) for rank in table if rank in table[rank]}
    return by_rank, {"source": f"{constants.name}: cpu_to_gpu_adapter_load_ms (measured per rank)"}


def api_server_new_adapter_ms(frame: pd.DataFrame, lines: set[int], loading: LoadTimeModel
                               ) -> tuple[float | None, dict[str, Any]]:
    """The API server's hold-up on a new adapter (ms), from the rows of ``frame`` whose ``line`` is in ``lines``
    (see the module docstring); None without such rows."""
    if any(column not in frame.columns for column in MEASURED_COLUMNS):
        return None, {"runs": 0}
    rows = frame[frame["line"].isin(list(lines)) & (frame["status"] == "ok")
                 & (frame["num_adapters"] > MIN_FIRST_SHARE * frame["successful_requests"])
                 & (frame["npy_mean_running"] < MAX_MEAN_RUNNING) & (frame["npy_mean_waiting"] < MAX_MEAN_WAITING)]
    if rows.empty:
        return None, {"runs": 0}
    tail_ms = (rows["p99_ttft_ms"] - rows["median_ttft_ms"]).to_numpy(float)
    ranks = np.array([int(r) for r in loading.disk_to_cpu_ms])
    engine_load_ms = float(np.median(load_ms_by_rank(loading.disk_to_cpu_ms, ranks)
                                     + load_ms_by_rank(loading.cpu_to_gpu_ms, ranks)))
    value = max(0.0, float(np.median(tail_ms)) - engine_load_ms)
    return value, {"runs": len(rows), "p99_minus_median_ttft_ms": [round(float(np.min(tail_ms)), 1),
                                                                  round(float(np.max(tail_ms)), 1)],
                   "engine_first_load_ms": round(engine_load_ms, 1)}


def api_server_burst_ms(root: Path, model: str) -> float | None:
    """The hold-up per new adapter that ``predictor_loading``'s scrapes bound (see the module docstring): the
    median over its runs, ms; None without them."""
    bounds = []
    for run in sorted((root / "predictor_loading" / model).glob("adapter_rank_*/_*_")):
        summaries = sorted(run.glob("openai-*.json"))
        if not summaries or not (run / "time.npy").is_file():
            continue
        summary = json.loads(summaries[0].read_text())
        scraped_s = np.load(run / "time.npy")
        first = int(np.searchsorted(scraped_s, summary["start_time"]))
        if first >= scraped_s.size:
            continue
        prefilled = np.load(run / "processed_tokens_prompt.npy")[first] * summary["completed"] / summary[
            "total_input_tokens"]
        passed = np.load(run / "num_waiting.npy")[first] + prefilled
        if passed > 0:
            bounds.append(1000.0 * (scraped_s[first] - summary["start_time"]) / passed)
    return float(np.median(bounds)) if bounds else None
