"""Step-time terms from vLLM micro-benchmarks (``raw_estimator_runs/``, ``raw_scheduler_overhead/``).

* Decode without LoRA: ``predictor_default_latency/<model>/output/_<B>__<words>_<out>`` runs keep exactly B
  sequences decoding (``max_num_seqs`` = B, all prompts sent at once), so their mean TPOT is the step time at
  batch B. Context grows with the output, so the fit has a per-context-token term, and a jump once the step
  exceeds the largest CUDA graph (eager execution).
* Prefill: ``.../input/_<B>__<words>_1`` runs generate one token, so input throughput is prefill throughput
  at full token budget.
* Scheduler: ``raw_scheduler_overhead`` reports total scheduling time and steps per run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

RUN_NAME = re.compile(r"_(\d+)__(\d+)_(\d+)$")


def _summaries(folder: Path) -> list[tuple[tuple[int, ...], dict]]:
    """(numbers in the run's folder name, benchmark JSON) for every run under ``folder``."""
    runs = []
    for run in sorted(folder.glob("_*")):
        match = RUN_NAME.match(run.name)
        summaries = sorted(run.glob("openai-*.json"))
        if match and summaries:
            runs.append((tuple(int(g) for g in match.groups()), json.loads(summaries[0].read_text())))
    return runs


def _preempted(run_dir: Path) -> bool:
    counter = run_dir / "num_preempted.npy"
    return counter.is_file() and float(np.load(counter).max()) > 0


def decode_rows(root: Path, model: str, graph_max_tokens: int) -> pd.DataFrame:
    """One row per decode benchmark: batch, mean context per sequence, measured step (TPOT) in ms."""
    folder = root / "predictor_default_latency" / model / "output"
    rows = []
    for (batch, _words, out), summary in _summaries(folder):
        if _preempted(folder / f"_{batch}__{_words}_{out}"):
            continue  # KV ran out: TPOT includes recompute, not a clean step time
        prompt = summary["total_input_tokens"] / summary["completed"]
        rows.append({"batch": batch, "context": batch * (prompt + out / 2), "eager": float(batch > graph_max_tokens),
                     "step_ms": summary["mean_tpot_ms"]})
    return pd.DataFrame(rows)


def fit_decode(rows: pd.DataFrame) -> tuple[dict[str, float], dict[str, Any]]:
    """base + per sequence + per 1k context tokens (+ eager jump) by least squares."""
    design = np.c_[np.ones(len(rows)), rows["batch"], rows["context"] / 1000.0, rows["eager"]]
    keep = design.any(axis=0)
    coef = np.zeros(4)
    coef[keep], *_ = np.linalg.lstsq(design[:, keep], rows["step_ms"], rcond=None)
    error = np.abs(design @ coef - rows["step_ms"]) / rows["step_ms"]
    terms = dict(zip(("base_ms", "per_decode_seq_ms", "per_context_ktoken_ms", "eager_ms"), coef.tolist(),
                     strict=True))
    return terms, {"runs": len(rows), "mape": float(100 * error.mean()), "max_error_pct": float(100 * error.max())}


def fit_prefill(root: Path, model: str, budget: int) -> tuple[float | None, dict[str, Any]]:
    """ms per prompt token at a full token budget, from prefill-only runs long enough to measure."""
    folder = root / "predictor_default_latency" / model / "input"
    per_token = []
    for (_batch, _words, _out), summary in _summaries(folder):
        if summary["duration"] >= 1.0 and summary["completed"] >= 256:
            per_token.append(1000.0 / summary["input_throughput"])
    if not per_token:
        return None, {"runs": 0, "note": "no prefill run long enough; per_prefill_token_ms left to the end-to-end fit"}
    return float(np.median(per_token)), {"runs": len(per_token), "spread_pct": float(100 * np.std(per_token)
                                                                                     / np.mean(per_token))}


def fit_scheduler(root: Path) -> tuple[dict[str, float] | None, dict[str, Any]]:
    """Scheduler pass (ms) = base + per running request + per skipped waiting request.

    The runs served equally busy adapters, so the share of the queue whose adapter has no slot is about
    1 - slots/adapters (``gpu_loras``/``cpu_loras``); vLLM's scheduler walks past each of those every step.
    """
    frames = [pd.read_csv(p) for p in sorted(root.glob("*.csv"))]
    if not frames:
        return None, {"runs": 0}
    runs = pd.concat(frames)
    runs = runs[runs["steps"] > 0]
    per_step_ms = 1000.0 * runs["total_scheduling_time"] / runs["steps"]
    skipped = runs["avg_waiting_queue"] * np.clip(1.0 - runs["gpu_loras"] / runs["cpu_loras"], 0.0, 1.0)
    design = np.c_[np.ones(len(runs)), runs["avg_batch_size"], skipped]
    coefficients, *_ = np.linalg.lstsq(design, per_step_ms, rcond=None)
    residual = per_step_ms - design @ coefficients
    base, per_running, per_skipped = (float(c) for c in coefficients)
    return ({"base_ms": base, "per_running_ms": per_running, "per_skipped_ms": per_skipped},
            {"runs": len(runs), "rmse_ms": float(np.sqrt(np.mean(residual**2))),
             "r2": float(1.0 - residual.var() / per_step_ms.var())})


def decode_error_pct(step_ms: Callable[[float, float], float], rows: pd.DataFrame) -> float:
    """MAPE (%) of a step-time function ``(batch, context) -> ms`` on decode benchmark rows."""
    predicted = np.array([step_ms(b, c) for b, c in zip(rows["batch"], rows["context"], strict=True)])
    return float(100 * np.mean(np.abs(predicted - rows["step_ms"]) / rows["step_ms"]))
