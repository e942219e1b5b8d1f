"""Shipped starvation edges: per rank class and adapter count, the largest load (prompt + output tokens/s) the twin
serves without starving one GPU holding that many equal-rate adapters, judged as placement verification judges.

They are measured by ``baselines.capacity`` (about 35 s per rank class) and written by ``python -m
baselines.edge_table``, one JSON per (profile, lengths) in ``adaptergym/data/capacity/``; the library reads them
here (``AdapterFleet-v0``'s packer sizes replicas by them). A table answers only for the exact profile and
lengths it was measured with.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from adaptergym.profile import TwinProfile
from adaptergym.sweep.label import profile_fingerprint
from adaptergym.workload import LengthSpec

#: Where the tables live (package data).
EDGE_TABLES = Path(__file__).resolve().parent / "data" / "capacity"


def table_path(profile: TwinProfile, lengths: LengthSpec) -> Path:
    """The table of (profile, lengths), whether it exists or not."""
    return EDGE_TABLES / f"{profile.name}__{lengths.kind}.json"


def read_table(profile: TwinProfile, lengths: LengthSpec) -> dict[str, Any] | None:
    """The table of (profile, lengths) as stored; None when none was measured with this exact profile and these
    lengths. Beside its ``edges``, it holds what ``baselines.edge_table`` measures for the lower bound."""
    path = table_path(profile, lengths)
    if not path.is_file():
        return None
    table = json.loads(path.read_text())
    if table["profile_fingerprint"] != profile_fingerprint(profile) or table["lengths"] != asdict(lengths):
        return None
    return table


def shipped_edges(profile: TwinProfile, lengths: LengthSpec) -> dict[tuple[int, int], float]:
    """The shipped edges ``{(cover, grid count): tokens/s}`` of (profile, lengths); none when no table was
    measured with this exact profile and these lengths."""
    table = read_table(profile, lengths) or {"edges": {}}
    return {(int(cover), int(count)): float(v) for cover, row in table["edges"].items() for count, v in row.items()}
