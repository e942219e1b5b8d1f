"""Server start-up time from vLLM's start-up logs (``raw_estimator_runs/find_available_gpu_memory_...``).

Each of those runs launched ``vllm serve --enable-lora --max-loras M --max-lora-rank R`` from the benchmark
client, waited until the server answered, sent one prompt, and saved the benchmark JSON. The client's log
opens with a timestamped line when the client starts (it then launches the server), and the JSON's ``date``
is when the result was saved, so

    start-up = date - first log timestamp - benchmark duration

to the logs' one-second resolution. What it leaves in: the client's own start (a few seconds), the initial
single-prompt check (about 2 s), and the cluster's model load from its shared file system, which is part of
what a real restart there costs. Runs without a duration (a JSON written by hand) or without the
"Server started" line are skipped. Start-up grows with ``max_loras`` (vLLM allocates and warms up every
adapter slot); the rank barely matters (``--max-lora-rank`` 8 vs 32 changes it by under 0.2 s per slot, within
the noise), so the fit is ``base_s + per_lora_slot_s * max_loras``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: Folder (under ``raw_estimator_runs``) of the start-up runs, one sub-folder per model.
STARTUP_RUNS = "find_available_gpu_memory_depending_on_loaded_adapters"
RUN_NAME = re.compile(r"^_(\d+)_(\d+)_$")
LOG_TIME = re.compile(r"^INFO (\d\d-\d\d \d\d:\d\d:\d\d)", re.MULTILINE)


def startup_rows(root: Path, model: str) -> pd.DataFrame:
    """One row per start-up run of ``model``: ``max_loras``, ``max_lora_rank``, ``startup_s``."""
    rows = []
    for run in sorted((root / STARTUP_RUNS / model).glob("_*_*_")):
        match = RUN_NAME.match(run.name)
        logs, summaries = sorted(run.glob("log_*.out")), sorted(run.glob("openai-*.json"))
        if not (match and logs and summaries):
            continue
        text = logs[0].read_text(errors="replace")
        first = LOG_TIME.search(text)
        summary = json.loads(summaries[0].read_text())
        if first is None or "Server started" not in text or "duration" not in summary or "date" not in summary:
            continue
        saved = dt.datetime.strptime(summary["date"], "%Y%m%d-%H%M%S")
        launched = dt.datetime.strptime(f"{saved.year}-{first.group(1)}", "%Y-%m-%d %H:%M:%S")
        rows.append({"max_loras": int(match.group(1)), "max_lora_rank": int(match.group(2)),
                     "startup_s": (saved - launched).total_seconds() - float(summary["duration"])})
    frame = pd.DataFrame(rows, columns=["max_loras", "max_lora_rank", "startup_s"])
    return frame.sort_values(["max_loras", "max_lora_rank"], ignore_index=True)


def fit_startup_time(rows: pd.DataFrame) -> tuple[dict[str, float], dict[str, Any]]:
    """``base_s + per_lora_slot_s * max_loras`` by least squares; returns the terms and the fit report."""
    design = np.c_[np.ones(len(rows)), rows["max_loras"].to_numpy(float)]
    (base, per_slot), *_ = np.linalg.lstsq(design, rows["startup_s"].to_numpy(float), rcond=None)
    error = design @ np.array([base, per_slot]) - rows["startup_s"].to_numpy(float)
    return ({"base_s": round(float(base), 2), "per_lora_slot_s": round(float(per_slot), 4)},
            {"source": f"raw_estimator_runs/{STARTUP_RUNS} (log start to result, minus the benchmark)",
             "runs": len(rows), "max_loras_range": [int(rows["max_loras"].min()), int(rows["max_loras"].max())],
             "rmse_s": round(float(np.sqrt(np.mean(error**2))), 1),
             "max_error_s": round(float(np.abs(error).max()), 1)})
