"""Writes the shipped starvation edges of the capacity model (``CapacityModel.edge_tok_s``): measuring them takes
about 35 s per rank class, so the default profile's, at ShareGPT lengths, ship as one JSON per (profile,
lengths) in ``adaptergym/data/capacity/`` (read by :mod:`adaptergym.edges`). A table is used only by the exact
profile it was measured with.

    python -m baselines.edge_table      # measure the default profile's table again (74 s here)
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from adaptergym.edges import table_path
from adaptergym.profile import TwinProfile, load_profile
from adaptergym.sweep.label import profile_fingerprint
from adaptergym.workload import LengthSpec

#: Rank classes (``max_lora_rank``) whose edges ship; larger ones are measured on first use.
SHIPPED_COVERS = (8, 16, 32, 64)


def write_edge_table(profile: TwinProfile, lengths: LengthSpec) -> Path:
    """Measure the edges of :data:`SHIPPED_COVERS` at every grid count and write their table (a table already
    there is removed first, so that it does not answer for the measurement)."""
    from baselines.capacity import COUNTS, CapacityModel

    path = table_path(profile, lengths)
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
