"""Shipped capacity measurements of a profile: the saturated peaks of the capacity model and the starvation edges
of the cost model's calibration mixes (:mod:`baselines.capacity`, :mod:`baselines.cost_model`). Measuring them
takes minutes, so the default profile's, at ShareGPT lengths, ship as one JSON per (profile, lengths) in
``adaptergym/data/capacity/``. A table is used only by the exact profile (its fingerprint) and lengths it was
measured with; after a profile is refitted, one command measures its table again:

    python -m baselines.edge_table [--profile P] [--workers K]    # default profile, all CPUs
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from adaptergym.profile import TwinProfile, load_profile
from adaptergym.sweep.label import profile_fingerprint
from adaptergym.workload import LengthSpec

log = logging.getLogger(__name__)

#: Rank classes (``max_lora_rank``) whose measurements ship (a larger class is costed as the largest of these).
SHIPPED_COVERS = (8, 16, 32, 64, 128)
#: Where the tables live (package data).
EDGE_TABLES = Path(__file__).resolve().parent.parent / "adaptergym" / "data" / "capacity"


@dataclass(frozen=True, slots=True)
class MixEdge:
    """The starvation edge of one adapter mix on one GPU (:func:`baselines.capacity.measure_mix_edge`).

    Attributes:
        load_tok_s: the least offered tokens/s found to starve the GPU at every level tried, the largest over
            the seeds measured (0.5% above the most it was seen to serve).
        max_loras: the level that served it nearest the edge (first seed).
    """

    load_tok_s: float
    max_loras: int


@dataclass(frozen=True)
class CapacityTable:
    """A profile's measurements at one length distribution.

    Attributes:
        peaks: ``{(cover, grid count): saturated tokens/s}``.
        edges: ``{cover: {mix name: MixEdge}}`` for the mixes of :func:`baselines.cost_model.calibration_mixes`.
    """

    peaks: dict[tuple[int, int], float]
    edges: dict[int, dict[str, MixEdge]]


def table_path(profile: TwinProfile, lengths: LengthSpec) -> Path:
    return EDGE_TABLES / f"{profile.name}__{lengths.kind}.json"


def shipped_table(profile: TwinProfile, lengths: LengthSpec) -> CapacityTable | None:
    """The shipped measurements of (profile, lengths); None when no table was measured with this exact profile
    and these lengths."""
    path = table_path(profile, lengths)
    if not path.is_file():
        return None
    table = json.loads(path.read_text())
    if table["profile_fingerprint"] != profile_fingerprint(profile) or table["lengths"] != asdict(lengths):
        return None
    return CapacityTable(
        {(int(cover), int(count)): float(v) for cover, row in table["peaks"].items() for count, v in row.items()},
        {int(cover): {name: MixEdge(**edge) for name, edge in row.items()} for cover, row in table["edges"].items()})


def _measure(job: tuple[TwinProfile, LengthSpec, int, str]) -> tuple[int, str, MixEdge]:
    from baselines.capacity import measure_mix_edge
    from baselines.cost_model import calibration_mixes

    profile, lengths, cover, name = job
    return cover, name, measure_mix_edge(profile, lengths, cover, calibration_mixes()[name])


def write_edge_table(profile: TwinProfile, lengths: LengthSpec, workers: int = 1) -> Path:
    """Measure the peaks and the calibration mixes' edges for every class of :data:`SHIPPED_COVERS` that starts
    on the profile's GPU, and write their table. Finished edges are kept in ``<table>.partial.json`` as they
    come, so an interrupted run resumes where it stopped; the table already there is removed first, so that it
    does not answer for the measurement."""
    from adaptergym.cli.progress import stage_progress
    from baselines.capacity import COUNTS, CapacityModel
    from baselines.cost_model import calibration_mixes

    path = table_path(profile, lengths)
    path.unlink(missing_ok=True)
    partial = path.with_suffix(".partial.json")
    header = {"profile_fingerprint": profile_fingerprint(profile), "lengths": asdict(lengths)}
    done: dict[str, dict[str, dict]] = {}
    if partial.is_file():
        saved = json.loads(partial.read_text())
        done = saved["edges"] if all(saved[k] == v for k, v in header.items()) else {}
    model = CapacityModel(profile, lengths)
    covers = [cover for cover in SHIPPED_COVERS if model.max_slots[cover]]
    jobs = [(profile, lengths, cover, name) for cover in covers for name in calibration_mixes()
            if name not in done.get(str(cover), {})]
    path.parent.mkdir(parents=True, exist_ok=True)
    with stage_progress(True) as update, ProcessPoolExecutor(max_workers=workers) as pool:
        for k, (cover, name, edge) in enumerate(pool.map(_measure, jobs), 1):
            done.setdefault(str(cover), {})[name] = asdict(edge)
            partial.write_text(json.dumps({**header, "edges": done}))
            if update:
                update("mix edges", k, len(jobs))
        peaks = {str(cover): {str(count): model.peak_tok_s(cover, count) for count in COUNTS} for cover in covers}
    edges = {str(cover): {name: done[str(cover)][name] for name in calibration_mixes()} for cover in covers}
    path.write_text(json.dumps({**header, "peaks": peaks, "edges": edges}, indent=1) + "\n")
    partial.unlink()
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m baselines.edge_table", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default=None, help="profile name, model name or JSON path (default profile)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all CPUs)")
    args = parser.parse_args(argv)
    print(write_edge_table(load_profile(args.profile), LengthSpec(), args.workers))


if __name__ == "__main__":
    main()
