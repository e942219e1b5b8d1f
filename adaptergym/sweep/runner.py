"""Run a sweep in parallel (local process pool, or a Ray cluster) into a resumable CSV.

Rows are appended to a plain CSV chunk by chunk as chunks finish (``<out>.partial.csv`` when ``out`` is
compressed), so an interrupted sweep keeps every finished chunk; a restarted sweep reads it back and runs only
the points missing. When every point is done, the file is rewritten sorted by ``point_id``: the same seed
gives a byte-identical dataset whatever the executor, worker count or interruptions.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from adaptergym.errors import ConfigError, DataError, DependencyNotInstalled
from adaptergym.sweep.label import COLUMNS, SweepSettings, label_points
from adaptergym.sweep.points import SweepPoint, sweep_points

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
Rows = list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class SweepResult:
    """Where a sweep wrote its dataset and how many points it found done and ran."""

    path: Path
    points: int
    already_done: int
    ran: int


def work_path(out: Path) -> Path:
    """The CSV rows are appended to while the sweep runs: ``out`` itself when it is plain CSV."""
    return out if out.suffix == ".csv" else out.with_name(out.name + ".partial.csv")


def read_rows(path: Path) -> pd.DataFrame:
    """The rows of a dataset (plain or compressed CSV); a torn last line of an interrupted append is dropped."""
    if path.suffix == ".csv" and path.stat().st_size:
        text = path.read_bytes()
        if not text.endswith(b"\n"):
            path.write_bytes(text[: text.rfind(b"\n") + 1])
    try:
        frame = pd.read_csv(path, dtype={"profile": str, "profile_fingerprint": str})
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=list(COLUMNS))
    except (pd.errors.ParserError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a sweep dataset ({exc}); pass another --out or delete it") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: not a sweep dataset (no column(s) {missing}); pass another --out or delete it")
    return frame


def _check_same_sweep(frame: pd.DataFrame, settings: SweepSettings, path: Path) -> None:
    expected = settings.fixed_columns()
    for name in ("profile_fingerprint", "sweep_seed", "window_s"):
        found = set(frame[name].astype(type(expected[name])).unique())
        if found - {expected[name]}:
            raise DataError(f"{path}: holds rows of another sweep ({name} {sorted(found)} != {expected[name]!r}); "
                            "pass another --out, or delete the file to start over")


def _append(path: Path, rows: Rows) -> None:
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as handle:
        frame.to_csv(handle, header=new, index=False)
        handle.flush()
        os.fsync(handle.fileno())


def _finish(work: Path, out: Path) -> None:
    """Write the completed dataset to ``out`` sorted by point, atomically (gzip without a timestamp)."""
    frame = read_rows(work).sort_values("point_id", kind="stable")
    tmp = out.with_name(out.name + ".tmp")
    compression = {"method": "gzip", "mtime": 0} if out.suffix == ".gz" else None
    frame.to_csv(tmp, index=False, compression=compression)
    os.replace(tmp, out)
    if work != out:
        work.unlink()


def _local(chunks: Sequence[list[SweepPoint]], settings: SweepSettings, workers: int) -> Iterator[Rows]:
    """Chunk results in completion order: in this process when ``workers == 1``, else a process pool."""
    if workers == 1:
        for chunk in chunks:
            yield label_points(chunk, settings)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending = {pool.submit(label_points, chunk, settings) for chunk in chunks}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        finally:
            for future in pending:
                future.cancel()


def _ray(chunks: Sequence[list[SweepPoint]], settings: SweepSettings, address: str | None) -> Iterator[Rows]:
    """Chunk results in completion order from Ray tasks (``ray.init(address=...)``; None starts a local Ray).

    Ray is imported and joined here, before any result is asked for, so a missing Ray fails at once.
    """
    try:
        import ray
    except ModuleNotFoundError:
        raise DependencyNotInstalled("executor 'ray' needs Ray: pip install 'adaptergym[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=address)
    task = ray.remote(label_points)
    settings_ref = ray.put(settings)

    def results() -> Iterator[Rows]:
        pending = [task.remote(chunk, settings_ref) for chunk in chunks]
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                yield ray.get(done[0])
        finally:
            for ref in pending:
                ray.cancel(ref)

    return results()


def run_sweep(
    settings: SweepSettings,
    points: int,
    out: str | Path,
    *,
    executor: str = "local",
    workers: int | None = None,
    chunk_size: int = 8,
    ray_address: str | None = None,
    progress: bool = True,
) -> SweepResult:
    """Label the first ``points`` points of the sweep of ``settings.sweep_seed`` into ``out``.

    Args:
        settings: profile, sweep seed and window shared by every point.
        points: how many points (twin runs) the dataset should hold.
        out: CSV path (``.csv``, or ``.csv.gz`` written when the sweep completes).
        executor: ``"local"`` (a process pool) or ``"ray"``.
        workers: local processes (default: all CPUs; 1 runs in this process).
        chunk_size: points per task (rows are written a chunk at a time).
        ray_address: passed to ``ray.init(address=...)``; None starts or joins a local Ray.
        progress: show a tqdm progress bar on stderr.

    Raises:
        ConfigError: bad executor, point count, worker count or chunk size.
        DataError: ``out`` holds rows of another sweep (other profile, seed or window).
        DependencyNotInstalled: ``executor="ray"`` without Ray.
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"executor: {executor!r} is not one of {', '.join(EXECUTORS)}")
    if points < 1:
        raise ConfigError(f"points: {points} must be >= 1")
    if chunk_size < 1:
        raise ConfigError(f"chunk_size: {chunk_size} must be >= 1")
    workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise ConfigError(f"workers: {workers} must be >= 1")
    out = Path(out)
    if not out.name.endswith((".csv", ".csv.gz")):
        raise ConfigError(f"out: {str(out)!r} must end in .csv or .csv.gz")
    work = work_path(out)
    if out != work and out.exists() and not work.exists():
        _append(work, read_rows(out).to_dict("records"))  # extend a finished compressed dataset
    done: set[int] = set()
    if work.exists():
        frame = read_rows(work)
        _check_same_sweep(frame, settings, work)
        done = set(frame["point_id"].astype(int))
    todo = [p for p in sweep_points(settings.sweep_seed, points) if p.point_id not in done]
    if done:
        log.info("%s: %d of %d points already done; running %d", work, points - len(todo), points, len(todo))
    chunks = [todo[i:i + chunk_size] for i in range(0, len(todo), chunk_size)]
    results = _ray(chunks, settings, ray_address) if executor == "ray" else _local(chunks, settings, workers)
    with tqdm(total=len(todo), unit="point", desc="sweep", disable=not progress) as bar:
        for rows in results:
            _append(work, rows)
            bar.update(len(rows))
    if work.exists():
        _finish(work, out)
    return SweepResult(out, points, points - len(todo), len(todo))
