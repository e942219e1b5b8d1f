"""The shipped capacity table of a profile at one length distribution (read through :mod:`adaptergym.edges`), one
JSON per (profile, lengths) in ``adaptergym/data/capacity/``:

- ``edges``: per rank class and adapter count, the largest load the twin serves without starving a GPU of that
  many equal-rate adapters (``CapacityModel.edge_tok_s``: one request draw, ``max_loras`` at the count and its
  half and quarter); ``AdapterFleet-v0``'s packer sizes replicas by them.
- ``peaks``: the saturated throughputs of the capacity model (``CapacityModel.peak_tok_s``).
- ``mixes``: the starvation edges of the calibration mixes the lower bound's cost model is fitted on
  (:func:`baselines.capacity.measure_mix_edge`: every level, 12 request draws; :mod:`baselines.cost_model`):
  equal-rate GPUs of 1-1,024 adapters, Zipf mixes, a few hot adapters beside many cold ones; Poisson arrivals.
- ``gamma_mixes``: the same mixes' edges under Gamma arrivals, the largest over the CVs of ``gamma_cvs``
  (:data:`GAMMA_CVS`): bursts of one adapter's requests share its slot and its batch presence, so a GPU of many
  cold adapters can serve up to 1.5-1.9x more than under Poisson arrivals, and the bound of a Gamma workload is
  fitted on these too.

With 12 request draws per edge and the compiled engine, the whole table took about 50 min of wall time with 2
workers on the shared 2-core dev box (load average 5-9 from other jobs). A table is used only by the exact profile
(its fingerprint) and lengths it was measured with; after a profile is refitted, one command measures its table
again:

    python -m baselines.edge_table [--profile P] [--workers K]    # default profile, all CPUs
"""

from __future__ import annotations

import argparse
import json
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import numpy as np

from adaptergym.edges import read_table, table_path
from adaptergym.errors import AdapterGymError
from adaptergym.profile import TwinProfile, load_profile
from adaptergym.sweep.label import profile_fingerprint
from adaptergym.workload import ArrivalSpec, LengthSpec

#: Rank classes (``max_lora_rank``) whose equal-rate edges ship; larger ones are measured on first use.
SHIPPED_COVERS = (8, 16, 32, 64)
#: Rank classes whose calibration mixes ship (a larger class is costed as the largest of these).
MIX_COVERS = (8, 16, 32, 64, 128)
#: Equal-rate mixes: one GPU of this many adapters of the same rate.
EQUAL_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
#: Zipf mixes: adapters' shares proportional to ``i ** -alpha``.
ZIPF_COUNTS = (64, 128, 256, 512, 1024)
ZIPF_ALPHAS = (0.6, 1.0, 1.5)
#: Coefficients of variation of Gamma arrivals the mixes' edges are measured at too (``bursty-v0`` draws 2-4; the
#: edge is not monotone in the CV, so the table keeps the largest).
GAMMA_CVS = (2.0, 3.0, 4.0)
#: Hot-plus-cold mixes: ``hot`` adapters share ``share`` of the load evenly, ``cold`` ones the rest.
HOT_COUNTS = (1, 4)
HOT_SHARES = (0.5, 0.9)
COLD_COUNTS = (32, 256)


def zipf_shares(adapters: int, alpha: float) -> np.ndarray:
    """Shares proportional to ``i ** -alpha``, ``i = 1..adapters``."""
    weights = np.arange(1, adapters + 1, dtype=float) ** -alpha
    return weights / weights.sum()


@cache
def calibration_mixes() -> dict[str, np.ndarray]:
    """The mixes (adapters' shares of a GPU's load) whose starvation edges the cost model is fitted on, by name."""
    mixes = {f"equal-{n}": np.full(n, 1.0 / n) for n in EQUAL_COUNTS}
    mixes |= {f"zipf-{n}-{alpha:g}": zipf_shares(n, alpha) for n in ZIPF_COUNTS for alpha in ZIPF_ALPHAS}
    mixes |= {f"hot-{hot}x{share:g}+cold-{cold}": np.r_[np.full(hot, share / hot), np.full(cold, (1 - share) / cold)]
              for hot in HOT_COUNTS for share in HOT_SHARES for cold in COLD_COUNTS}
    return mixes


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
        mixes: ``{cover: {mix name: MixEdge}}`` for the mixes of :func:`calibration_mixes`, Poisson arrivals.
        gamma_mixes: the same under Gamma arrivals, the largest edge over ``gamma_cvs`` (empty: not measured).
        gamma_cvs: the Gamma CVs measured.
    """

    peaks: dict[tuple[int, int], float]
    mixes: dict[int, dict[str, MixEdge]]
    gamma_mixes: dict[int, dict[str, MixEdge]]
    gamma_cvs: tuple[float, ...]

    def edges_for(self, arrival: ArrivalSpec) -> dict[int, dict[str, MixEdge]] | None:
        """The mixes' edges a workload arriving by ``arrival`` is costed by: Poisson's; for Gamma arrivals of a CV
        from 1 (Poisson's) to the largest measured, each mix's larger edge of Poisson's and the Gamma CVs'
        (a CV between measured ones is taken to lie within them); None for other arrivals (the table does not
        say what a GPU serves under them)."""
        if arrival.kind == "poisson":
            return self.mixes
        if arrival.kind != "gamma" or not self.gamma_cvs or not 1.0 <= arrival.cv <= max(self.gamma_cvs):
            return None
        return {cover: {name: max(edge, self.gamma_mixes[cover][name], key=lambda e: e.load_tok_s)
                        for name, edge in row.items()} for cover, row in self.mixes.items()}


def shipped_table(profile: TwinProfile, lengths: LengthSpec) -> CapacityTable | None:
    """The shipped peaks and calibration mixes of (profile, lengths); None when no table was measured with this
    exact profile and these lengths."""
    table = read_table(profile, lengths)
    if table is None or "mixes" not in table:
        return None
    def edges(key: str) -> dict[int, dict[str, MixEdge]]:
        return {int(cover): {name: MixEdge(**edge) for name, edge in row.items()}
                for cover, row in table.get(key, {}).items()}

    return CapacityTable(
        {(int(cover), int(count)): float(v) for cover, row in table["peaks"].items() for count, v in row.items()},
        edges("mixes"), edges("gamma_mixes"), tuple(table.get("gamma_cvs", ())))


def _arrival(label: str) -> ArrivalSpec:
    """The arrivals of a measurement label: ``poisson`` or ``gamma-<cv>``."""
    return ArrivalSpec() if label == "poisson" else ArrivalSpec("gamma", float(label.removeprefix("gamma-")))


def _measure(job: tuple[TwinProfile, LengthSpec, str, int, str]) -> tuple[str, int, str, MixEdge]:
    from baselines.capacity import measure_mix_edge

    profile, lengths, label, cover, name = job
    return label, cover, name, measure_mix_edge(profile, lengths, cover, calibration_mixes()[name],
                                                arrival=_arrival(label))


def write_edge_table(profile: TwinProfile, lengths: LengthSpec, workers: int = 1) -> Path:
    """Measure the equal-rate edges (:data:`SHIPPED_COVERS`), the peaks and the calibration mixes' edges
    (:data:`MIX_COVERS`; Poisson arrivals and Gamma at :data:`GAMMA_CVS`) of every rank class that starts on the
    profile's GPU, and write their table. Finished mix edges are kept in ``<table>.partial.json`` as they come, so
    an interrupted run resumes where it stopped; the table already there is removed first, so that it does not
    answer for the measurement."""
    from adaptergym.cli.progress import stage_progress
    from baselines.capacity import COUNTS, EDGE_SEEDS, CapacityModel

    path = table_path(profile, lengths)
    path.unlink(missing_ok=True)
    partial = path.with_suffix(".partial.json")
    header = {"profile_fingerprint": profile_fingerprint(profile), "lengths": asdict(lengths),
              "gamma_cvs": list(GAMMA_CVS), "edge_seeds": list(EDGE_SEEDS)}
    done: dict[str, dict[str, dict[str, dict]]] = {}  # arrival label -> cover -> mix -> edge
    if partial.is_file():
        saved = json.loads(partial.read_text())
        done = saved["mixes"] if all(saved.get(k) == v for k, v in header.items()) else {}
    model = CapacityModel(profile, lengths)
    covers = [cover for cover in MIX_COVERS if model.max_slots[cover]]
    labels = ["poisson", *(f"gamma-{cv:g}" for cv in GAMMA_CVS)]
    jobs = [(profile, lengths, label, cover, name) for label in labels for cover in covers
            for name in calibration_mixes() if name not in done.get(label, {}).get(str(cover), {})]
    path.parent.mkdir(parents=True, exist_ok=True)
    with stage_progress(True) as update, ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_measure, job) for job in jobs]
        for k, future in enumerate(as_completed(futures), 1):
            label, cover, name, edge = future.result()
            done.setdefault(label, {}).setdefault(str(cover), {})[name] = asdict(edge)
            partial.write_text(json.dumps({**header, "mixes": done}))
            if update:
                update("mix edges", k, len(jobs))
        edges = {str(cover): {str(count): model.edge_tok_s(cover, count) for count in COUNTS}
                 for cover in SHIPPED_COVERS if model.max_slots[cover]}
        peaks = {str(cover): {str(count): model.peak_tok_s(cover, count) for count in COUNTS} for cover in covers}
    mixes = {str(cover): {name: done["poisson"][str(cover)][name] for name in calibration_mixes()} for cover in covers}
    gamma = {str(cover): {name: max((done[label][str(cover)][name] for label in labels[1:]),
                                    key=lambda edge: edge["load_tok_s"]) for name in calibration_mixes()}
             for cover in covers}
    path.write_text(json.dumps({**header, "edges": edges, "peaks": peaks, "mixes": mixes, "gamma_mixes": gamma},
                               indent=1) + "\n")
    partial.unlink()
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m baselines.edge_table", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default=None, help="profile name, model name or JSON path (default profile)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all CPUs)")
    args = parser.parse_args(argv)
    try:
        print(write_edge_table(load_profile(args.profile), LengthSpec(), args.workers))
    except AdapterGymError as exc:
        raise SystemExit(f"{parser.prog}: {exc}") from None


if __name__ == "__main__":
    main()
