"""Durable outputs: per-request rows appended (and flushed) as requests finish; run rows appended atomically.

Appending a run row rewrites the runs CSV through a temporary file and ``os.replace``, keeping every
existing row and column (columns the file lacks are added, empty for old rows), so an interrupted write
never leaves a half-written file.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from adaptergym.collect.client import RequestResult
from adaptergym.errors import DataError

REQUEST_COLUMNS = ("run_id", "request", "adapter", "arrival_s", "sent_s", "input_tokens", "output_tokens",
                   "generated_tokens", "status", "error", "http_status", "ttft_ms", "tpot_ms", "mean_itl_ms",
                   "e2e_ms", "detail")


def requests_path(runs_csv: str | Path) -> Path:
    """``<out>.requests.csv`` beside the runs CSV (``runs.csv`` -> ``runs.requests.csv``)."""
    path = Path(runs_csv)
    return path.with_name(path.stem + ".requests.csv")


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else round(value, 6)
    return "" if value is None else value


class RequestLog:
    """Appends one CSV row per finished request and flushes it at once."""

    def __init__(self, path: str | Path, run_id: str) -> None:
        self.path = Path(path)
        self.run_id = run_id
        new = not self.path.exists() or self.path.stat().st_size == 0
        if not new:
            with self.path.open(newline="") as handle:
                header = next(csv.reader(handle), [])
            if tuple(header) != REQUEST_COLUMNS:
                raise DataError(f"{self.path}: not a requests CSV written by collect (header {header[:4]}...); "
                                "choose another --out or move the file away")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("a", newline="")
        self._writer = csv.writer(self._handle)
        if new:
            self._writer.writerow(REQUEST_COLUMNS)
            self._handle.flush()

    def write(self, r: RequestResult) -> None:
        itl = sum(r.itl_ms) / len(r.itl_ms) if r.itl_ms else math.nan
        row = (self.run_id, r.index, r.adapter, r.arrival_s, r.sent_s, r.input_tokens, r.output_tokens,
               r.generated_tokens, r.status, r.error, r.http_status, r.ttft_ms, r.tpot_ms, itl, r.e2e_ms, r.detail)
        self._writer.writerow([_cell(v) for v in row])
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def append_run(path: str | Path, row: dict[str, Any]) -> None:
    """Add ``row`` to the runs CSV at ``path`` (created if missing) without losing existing rows or columns."""
    path = Path(path)
    new = pd.DataFrame([{k: _cell(v) for k, v in row.items()}])
    if path.exists() and path.stat().st_size > 0:
        try:
            old = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise DataError(f"--out {str(path)!r}: exists but is not a readable CSV ({exc}); choose another "
                            "--out") from None
        columns = list(old.columns) + [c for c in new.columns if c not in old.columns]
        frame = pd.concat([old, new.astype(str)], ignore_index=True).reindex(columns=columns)
    else:
        frame = new
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)
