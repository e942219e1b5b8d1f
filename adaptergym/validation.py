"""Fidelity: replay real vLLM runs through the twin and report its error (``adaptergym validate``).

Each replayable row of a real-runs CSV is simulated with the profile of its model and serving framework (one
process per core); errors are MAPE and the standard SMAPE ``100*mean(2|y-ŷ|/(|y|+|ŷ|))`` per model (labelled
``model@framework`` when not vLLM V1) and metric, plus the share of rows whose start-up outcome (ok, oom,
no_kv_memory, kv_insufficient_for_max_model_len) the twin gets right.
Where the published twin's predictions of the same runs exist (``anchor_twin_vs_real.csv``), its errors on
exactly those rows are reported beside ours.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adaptergym.accuracy import mape, smape
from adaptergym.errors import DataError, ProfileError
from adaptergym.profile import DEFAULT_FRAMEWORK, TwinProfile, find_profile, load_profile
from adaptergym.real_runs import Replay, RowProblem, group_pattern, read_runs, replays
from adaptergym.twin import check_startup
from adaptergym.workload import RequestBatch, WorkloadSpec

#: The published twin's columns in anchor_twin_vs_real.csv, by our metric name.
ANCHOR_COLUMNS = {"total_throughput": "dt_total_throughput", "mean_itl_ms": "dt_itl", "mean_ttft_ms": "dt_ttft"}
REPORT_METRICS = {"total_throughput": "total_throughput", "mean_itl_ms": "mean_itl", "mean_tpot_ms": "mean_tpot",
                  "mean_ttft_ms": "mean_ttft"}


@dataclass(frozen=True)
class Prediction:
    """The twin's replay of one row."""

    line: int
    run_id: str
    group: str
    model: str
    measured_status: str
    predicted_status: str
    measured: dict[str, float]
    predicted: dict[str, float]
    counts: tuple[float, ...] = ()  # ITL-weighted step counts (RAW_COUNTS), for calibration
    step_counts: tuple[float, ...] = ()  # step counts (RAW_COUNTS) summed over every step, for calibration
    framework: str = DEFAULT_FRAMEWORK

    @property
    def label(self) -> str:
        return system_label(self.model, self.framework)


def system_label(model: str, framework: str) -> str:
    """How reports name a row's system: its model, with the framework when it is not vLLM V1."""
    return model if framework == DEFAULT_FRAMEWORK else f"{model}@{framework}"


@dataclass
class Report:
    """Errors per model and metric, start-up accuracy, and what could not be replayed."""

    predictions: list[Prediction]
    problems: list[RowProblem]
    anchor: pd.DataFrame | None = None
    models: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.models = error_table(self.predictions)

    @property
    def startup_accuracy(self) -> float:
        hits = [p.predicted_status == p.measured_status for p in self.predictions]
        return float(np.mean(hits)) if hits else math.nan

    def startup_misses(self) -> list[Prediction]:
        return [p for p in self.predictions if p.predicted_status != p.measured_status]

    def anchor_table(self) -> dict[str, dict[str, dict[str, float]]]:
        """Our errors and the published twin's, on the rows both predicted."""
        if self.anchor is None:
            return {}
        ours = {p.run_id: p for p in self.predictions
                if p.run_id and p.measured_status == "ok" and p.predicted_status == "ok"}
        # The anchor names runs by their original folder; ours by the same path without its leading folders.
        matched = {d: next((r for r in ours if d.endswith("/" + r) or d == r), None)
                   for d in self.anchor["real_exp_dir"].astype(str)}
        anchor = self.anchor.assign(run_id=self.anchor["real_exp_dir"].astype(str).map(matched)).dropna(
            subset=["run_id"])
        out: dict[str, dict[str, dict[str, float]]] = {}
        for model, rows in anchor.groupby("model"):
            table: dict[str, dict[str, float]] = {}
            for metric, column in ANCHOR_COLUMNS.items():
                y = rows[f"real_{_real_column(metric)}"].to_numpy(float)
                theirs = rows[column].to_numpy(float)
                mine = np.array([ours[r].predicted.get(metric, math.nan) for r in rows["run_id"]])
                table[REPORT_METRICS[metric]] = {"n": int(np.isfinite(y).sum()),
                                                 "ours_mape": mape(y, mine), "ours_smape": smape(y, mine),
                                                 "published_mape": mape(y, theirs),
                                                 "published_smape": smape(y, theirs)}
            out[str(model)] = table
        return out

    def rows(self) -> pd.DataFrame:
        """One row per replayed run: line, run, group, model, statuses, and each metric measured and predicted."""
        return pd.DataFrame([{"line": p.line, "run_id": p.run_id, "dataset_group": p.group, "model": p.model,
                              "framework": p.framework, "status": p.measured_status,
                              "predicted_status": p.predicted_status,
                              **{m: p.measured.get(m, math.nan) for m in REPORT_METRICS},
                              **{f"{m}_twin": p.predicted.get(m, math.nan) for m in REPORT_METRICS}}
                             for p in self.predictions])

    def plot(self, path: str | Path) -> None:
        """Predicted vs measured, one log-log panel per metric, one colour per model."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter

        rows = self.rows()
        rows = rows[(rows["status"] == "ok") & (rows["predicted_status"] == "ok")]
        fig, axes = plt.subplots(1, len(REPORT_METRICS), figsize=(4.2 * len(REPORT_METRICS), 4.2))
        for ax, (metric, label) in zip(axes, REPORT_METRICS.items(), strict=True):
            for (model, framework), group in rows.groupby(["model", "framework"]):
                name = system_label(str(model), str(framework))
                e = self.models.get(name, {}).get(label, {})
                ax.scatter(group[metric], group[f"{metric}_twin"], s=8, alpha=0.6,
                           label=f"{name} (MAPE {e.get('mape', math.nan):.1f}%)")
            lo, hi = np.nanmin(rows[[metric, f"{metric}_twin"]].to_numpy()), np.nanmax(
                rows[[metric, f"{metric}_twin"]].to_numpy())
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            ax.set(xscale="log", yscale="log", title=label, xlabel="measured", ylabel="twin")
            for axis in (ax.xaxis, ax.yaxis):
                axis.set_minor_formatter(NullFormatter())  # log minor labels overlap
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)

    def to_dict(self) -> dict[str, Any]:
        return {"models": self.models, "startup_accuracy": self.startup_accuracy,
                "startup_rows": len(self.predictions),
                "startup_misses": [{"line": p.line, "measured": p.measured_status, "predicted": p.predicted_status}
                                   for p in self.startup_misses()],
                "published_twin": self.anchor_table(),
                "skipped": [{"line": p.line, "reason": p.reason} for p in self.problems]}


def _real_column(metric: str) -> str:
    return {"total_throughput": "total_throughput_tok_s"}.get(metric, metric)


def error_table(predictions: Iterable[Prediction]) -> dict[str, dict[str, dict[str, float]]]:
    """``{model: {metric: {mape, smape, n}}}`` over rows measured ok and predicted ok (keyed by ``label``)."""
    by_model: dict[str, list[Prediction]] = {}
    for p in predictions:
        if p.measured_status == "ok" and p.predicted_status == "ok":
            by_model.setdefault(p.label, []).append(p)
    table: dict[str, dict[str, dict[str, float]]] = {}
    for model, preds in sorted(by_model.items()):
        table[model] = {}
        for metric, label in REPORT_METRICS.items():
            y = np.array([p.measured.get(metric, math.nan) for p in preds])
            yhat = np.array([p.predicted.get(metric, math.nan) for p in preds])
            n = int((np.isfinite(y) & np.isfinite(yhat)).sum())
            table[model][label] = {"mape": mape(y, yhat), "smape": smape(y, yhat), "n": n}
    return table


def replay(item: Replay, profile: TwinProfile, seed: int = 0, full: bool = False) -> Prediction:
    """Simulate one real run (start-up only when it was refused, or its workload is unknown); an hour-long run
    is judged from part of it (see ``adaptergym.long_runs``) unless ``full``."""
    from adaptergym.long_runs import judge_run

    config = item.config.resolved(profile)
    startup = check_startup(profile, config)
    predicted: dict[str, float] = {}
    counts: tuple[float, ...] = ()
    step_counts: tuple[float, ...] = ()
    if startup.ok and item.measured_status_ok and item.workload is not None:
        predicted, record = judge_run(profile, config, _drawn(item.workload, seed), full=full)
        counts = tuple(record.itl_counts.tolist()) if record.itl_counts is not None else ()
        step_counts = tuple(record.step_counts.tolist()) if record.step_counts is not None else ()
    return Prediction(item.line, item.run_id, item.group, item.model, item.status, startup.status,
                      item.measured, predicted, counts, step_counts, item.framework)


System = tuple[str, str]  # (model, framework) of a row: see ``Replay.system``


@functools.lru_cache(maxsize=1)
def _drawn(workload: WorkloadSpec, seed: int) -> RequestBatch:
    """The requests of ``workload``, kept while the next rows replay the same workload: real runs often repeat
    one workload at several server settings (``predict_all`` puts them next to each other), and drawing an
    hour of requests costs more than simulating it. The engines only read request arrays."""
    from adaptergym.simulation import draw_requests

    return draw_requests(workload, seed)


def _replay_chunk(args: tuple[list[Replay], dict[System, TwinProfile], int, bool]) -> list[Prediction]:
    items, profiles, seed, full = args
    return [replay(i, profiles[i.system], seed, full) for i in items]


def resolve_profiles(systems: Iterable[System], profile: str | TwinProfile | None) -> tuple[
        dict[System, TwinProfile], dict[System, str]]:
    """The profile of each (model, framework) (``auto``/None: the shipped profile whose own ``model`` and
    ``framework`` fields match), and the systems without one."""
    found: dict[System, TwinProfile] = {}
    missing: dict[System, str] = {}
    for system in sorted(set(systems)):
        try:
            found[system] = find_profile(*system) if profile in (None, "auto") else load_profile(profile)
        except ProfileError as exc:
            missing[system] = str(exc)
    return found, missing


def predict_all(items: Sequence[Replay], profiles: dict[System, TwinProfile], *, seed: int = 0,
                workers: int | None = None, full: bool = False,
                progress: Callable[[int], None] | None = None) -> list[Prediction]:
    """Replay every item (see :func:`replay`), in parallel over ``workers`` processes (default: all cores);
    order is kept."""
    workers = workers or os.cpu_count() or 1
    # Expensive rows first, spread round-robin over small chunks, so cores finish together; rows of one workload
    # next to each other, so they draw its requests once (``_drawn``).
    first_of: dict[WorkloadSpec | None, int] = {}
    order = sorted(range(len(items)), key=lambda i: (-_cost(items[i]), first_of.setdefault(items[i].workload, i)))
    chunk_size = max(1, min(16, len(items) // (workers * 8) or 1))
    chunks = [order[k:k + chunk_size] for k in range(0, len(order), chunk_size)]
    results: dict[int, Prediction] = {}
    if workers == 1:
        for chunk in chunks:
            for i, p in zip(chunk, _replay_chunk(([items[i] for i in chunk], profiles, seed, full)), strict=True):
                results[i] = p
            if progress:
                progress(len(chunk))
    else:
        with ProcessPoolExecutor(workers) as pool:
            jobs = pool.map(_replay_chunk, [([items[i] for i in c], profiles, seed, full) for c in chunks])
            for chunk, preds in zip(chunks, jobs, strict=True):
                for i, p in zip(chunk, preds, strict=True):
                    results[i] = p
                if progress:
                    progress(len(chunk))
    return [results[i] for i in range(len(items))]


def _cost(item: Replay) -> float:
    if item.workload is None or item.status != "ok":
        return 0.0
    w = item.workload
    return float(w.num_requests or w.total_rate * w.duration_s)


def validate(runs: str | Path, profile: str | TwinProfile | None = "auto", *, seed: int = 0,
             workers: int | None = None, anchor: str | Path | None = None, group: str | None = None,
             full: bool = False, progress: Callable[[int, int], None] | None = None) -> Report:
    """Replay a real-runs CSV (only rows whose ``dataset_group`` matches ``group``, when given) and measure
    the twin's error (see the module docstring); ``full`` simulates every hour-long run to its end."""
    frame = read_runs(runs)
    if group:
        pattern = group_pattern(group, "--group")
        groups = frame.get("dataset_group", pd.Series("", index=frame.index)).astype(str)
        frame = frame[groups.map(lambda g: pattern.search(g) is not None)]
        if frame.empty:
            raise DataError(f"--group {group!r}: no row's dataset_group matches it; drop --group or widen it")
    items, problems = replays(frame)
    profiles, missing = resolve_profiles((i.system for i in items), profile)
    problems += [RowProblem(i.line, f"model {i.model!r} on {i.framework!r}: no profile ({missing[i.system]})")
                 for i in items if i.system in missing]
    items = [i for i in items if i.system in profiles]
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, len(items))

    predictions = predict_all(items, profiles, seed=seed, workers=workers, full=full, progress=tick)
    anchor_path = Path(anchor) if anchor else Path(runs).with_name("anchor_twin_vs_real.csv")
    anchor_frame = pd.read_csv(anchor_path) if anchor_path.is_file() else None
    return Report(predictions, sorted(problems, key=lambda p: p.line), anchor_frame)
