"""Other benchmarks' run tables, mapped onto the real-runs columns (``shared/data/real_runs.csv``) by data.

A format is a JSON file in ``adaptergym/data/run_formats/``: the columns that identify it (``detect``) and how
each real-runs column is made (``columns``): copied (``{"column": c}``), extracted from a column by a regex
(``"extract"``: its first group, translated by ``"map"`` when given) or rewritten by one (``"replace": [pattern,
replacement]``), a constant (``{"value": v}``), or a pandas expression (``{"expr": e}``, optionally only where
``"when"`` holds, NaN elsewhere) over the table's columns and the columns made before it. ``notes`` say why a
mapping is what it is.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

from adaptergym.errors import DataError


def run_formats() -> dict[str, dict[str, Any]]:
    """The known formats, by name."""
    folder = resources.files("adaptergym").joinpath("data/run_formats")
    formats = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            spec = json.loads(entry.read_text())
            formats[spec["name"]] = spec
    return formats


def detect_format(frame: pd.DataFrame) -> dict[str, Any] | None:
    """The format whose ``detect`` columns the table has, if any."""
    return next((spec for spec in run_formats().values() if set(spec["detect"]) <= set(frame.columns)), None)


def to_real_runs(frame: pd.DataFrame, spec: dict[str, Any]) -> pd.DataFrame:
    """The table in real-runs columns, as ``spec`` maps it (one output row per input row, same order)."""
    out = {}
    for name, rule in spec["columns"].items():
        try:
            out[name] = _column(frame.assign(**out), rule)
        except (KeyError, ValueError, SyntaxError, TypeError, pd.errors.UndefinedVariableError) as exc:
            raise DataError(f"format {spec['name']!r}: column {name!r} ({rule}) cannot be made: {exc}") from None
    return pd.DataFrame(out, index=frame.index)


def _column(frame: pd.DataFrame, rule: dict[str, Any]) -> pd.Series:
    if "value" in rule:
        return pd.Series([rule["value"]] * len(frame), index=frame.index, dtype=object)
    if "expr" in rule:
        values = pd.Series(frame.eval(rule["expr"]), index=frame.index, dtype=float)
        if "when" in rule:
            values = values.where(frame.eval(rule["when"]).astype(bool), np.nan)
        return values
    source = frame[rule["column"]].astype(str)
    if "extract" in rule:
        found = source.str.extract(rule["extract"], expand=False)
        return found.map(rule["map"]) if "map" in rule else found
    if "replace" in rule:
        pattern, replacement = rule["replace"]
        return source.str.replace(pattern, replacement, regex=True)
    return frame[rule["column"]]
