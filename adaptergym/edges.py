"""Shipped capacity tables: per rank class, the starvation edges of calibration mixes (adapters' shares of one GPU's
load): the least load, prompt + output tokens/s, at which placement verification starves such a GPU at every
``max_loras`` level, for 4 request draws, and the saturated peaks of equal-rate GPUs.

They are measured by ``baselines.capacity`` and written by ``python -m baselines.edge_table``, one JSON per
(profile, lengths) in ``adaptergym/data/capacity/``; the lower bound's cost model is fitted on them
(``baselines.cost_model``) and the library reads the equal-rate ones here (``AdapterFleet-v0``'s packer sizes
replicas by them). A table answers only for the exact profile (its fingerprint) and lengths it was measured
with.
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
#: Name prefix of the calibration mixes of equal-rate adapters (``equal-<adapters>``).
EQUAL_MIX = "equal-"


def table_path(profile: TwinProfile, lengths: LengthSpec) -> Path:
    """The table of (profile, lengths), whether it exists or not."""
    return EDGE_TABLES / f"{profile.name}__{lengths.kind}.json"


def read_table(profile: TwinProfile, lengths: LengthSpec) -> dict[str, Any] | None:
    """The table of (profile, lengths) as stored (``peaks``: ``{cover: {count: tok/s}}``, ``edges``:
    ``{cover: {mix name: {"load_tok_s", "max_loras"}}}``); None when none was measured with this exact profile
    and these lengths."""
    path = table_path(profile, lengths)
    if not path.is_file():
        return None
    table = json.loads(path.read_text())
    if table["profile_fingerprint"] != profile_fingerprint(profile) or table["lengths"] != asdict(lengths):
        return None
    return table


def shipped_edges(profile: TwinProfile, lengths: LengthSpec) -> dict[tuple[int, int], float]:
    """The shipped edges of equal-rate GPUs, ``{(cover, adapters): tokens/s}``, of (profile, lengths); none when no
    table was measured with this exact profile and these lengths."""
    table = read_table(profile, lengths) or {"edges": {}}
    return {(int(cover), int(name.removeprefix(EQUAL_MIX))): float(edge["load_tok_s"])
            for cover, row in table["edges"].items() for name, edge in row.items() if name.startswith(EQUAL_MIX)}
