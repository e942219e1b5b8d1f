"""Shipped starvation edges of the capacity model (``CapacityModel.edge_tok_s``): measuring them takes about
35 s per rank class, so the default profile's, at ShareGPT lengths, ship as one JSON per (profile, lengths)
in ``adaptergym/data/capacity/``. A table is used only by the exact profile it was measured with.

    python -m baselines.edge_table      # measure the default profile's table again (74 s here)
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from adaptergym.profile import TwinProfile, load_profile
from adaptergym.sweep.label import profile_fingerprint
from adaptergym.workload import LengthSpec

#: Rank classes (``max_lora_rank``) whose edges ship; larger ones are measured on first use.
SHIPPED_COVERS = (8, 16, 32, 64)
#: Where the tables live (package data).
EDGE_TABLES = Path(__file__).resolve().parent.parent / "adaptergym" / "data" / "capacity"


def _table_path(profile: TwinProfile, lengths: LengthSpec) -> Path:
    return EDGE_TABLES / f"{profile.name}__{lengths.kind}.json"


def shipped_edges(profile: TwinProfile, lengths: LengthSpec) -> dict[tuple[int, int], float]:
    """The shipped edges ``{(cover, grid count): tokens/s}`` of (profile, lengths); none when no table was
    measured with this exact profile and these lengths."""
    path = _table_path(profile, lengths)
    if not path.is_file():
        return {}
    table = json.loads(path.read_text())
    if table["profile_fingerprint"] != profile_fingerprint(profile) or table["lengths"] != asdict(lengths):
        return {}
    return {(int(cover), int(count)): float(v) for cover, row in table["edges"].items() for count, v in row.items()}


def write_edge_table(profile: TwinProfile, lengths: LengthSpec) -> Path:
    """Measure the edges of :data:`SHIPPED_COVERS` at every grid count and write their table (a table already
    there is removed first, so that it does not answer for the measurement)."""
    from baselines.capacity import COUNTS, CapacityModel

    path = _table_path(profile, lengths)
    path.unlink(missing_ok=True)
    model = CapacityModel(profile, lengths)
    edges = {str(cover): {str(count): model.edge_tok_s(cover, count) for count in COUNTS}
             for cover in SHIPPED_COVERS if model.max_slots[cover]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"profile_fingerprint": profile_fingerprint(profile), "lengths": asdict(lengths),
                                "edges": edges}, indent=1) + "\n")
    return path


if __name__ == "__main__":
    print(write_edge_table(load_profile(None), LengthSpec()))
