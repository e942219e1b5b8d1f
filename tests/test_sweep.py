"""Twin dataset sweeps: deterministic points and rows, any executor, resumable after an interruption."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

import adaptergym.sweep.runner as runner
from adaptergym import load_profile
from adaptergym.cli.main import main
from adaptergym.errors import ConfigError, DataError
from adaptergym.sweep import (
    COLUMNS,
    SweepPoint,
    SweepSettings,
    WorkloadRecipe,
    iter_points,
    label_point,
    read_rows,
    recipe_from_row,
    run_sweep,
    sweep_points,
)
from adaptergym.workload import LengthSpec

POINTS = 10
WINDOW_S = 30.0  # short windows keep these tests fast; labels are checked on longer ones below


@pytest.fixture(scope="module")
def settings() -> SweepSettings:
    return SweepSettings(load_profile(None), sweep_seed=1, window_s=WINDOW_S)


@pytest.fixture(scope="module")
def reference(settings, tmp_path_factory) -> bytes:
    """The sweep run serially in this process, uninterrupted."""
    out = tmp_path_factory.mktemp("ref") / "serial.csv"
    run_sweep(settings, POINTS, out, workers=1, chunk_size=3, progress=False)
    return out.read_bytes()


def test_points_are_a_pure_function_of_the_seed_and_any_prefix_is_the_same():
    first = sweep_points(7, 30)
    assert first == sweep_points(7, 30)
    assert sweep_points(7, 12) == first[:12]
    assert [p.point_id for p in first] == list(range(30))
    assert sweep_points(8, 30) != first
    # levels of one workload share the workload and its request seed, and never exceed its adapter count
    for point in first:
        same = [p for p in first if p.workload_id == point.workload_id]
        assert {p.seed for p in same} == {point.seed} and {p.recipe for p in same} == {point.recipe}
        assert 1 <= point.max_loras <= point.recipe.num_adapters


def test_recipe_round_trips_through_dataset_columns():
    for point in sweep_points(3, 40):
        recipe = recipe_from_row(point.recipe.columns())
        assert recipe.arrays()[1].tolist() == point.recipe.arrays()[1].tolist()
        np.testing.assert_allclose(recipe.arrays()[0], point.recipe.arrays()[0], rtol=1e-12)
        assert recipe.lengths == point.recipe.lengths


def test_powerlaw_recipe_by_hand():
    rates, ranks = WorkloadRecipe(3, "powerlaw", (8, 16), total_rate=11.0, alpha=1.0).arrays()
    np.testing.assert_allclose(rates, [6.0, 3.0, 2.0])  # 1 : 1/2 : 1/3 of 11 req/s
    assert ranks.tolist() == [8, 16, 8]


def test_same_seed_gives_identical_rows(settings, reference, tmp_path):
    out = tmp_path / "again.csv"
    run_sweep(settings, POINTS, out, workers=1, chunk_size=4, progress=False)
    assert out.read_bytes() == reference
    frame = read_rows(out)
    assert list(frame.columns) == list(COLUMNS) and frame["point_id"].tolist() == list(range(POINTS))


def test_local_pool_with_two_workers_equals_serial(settings, reference, tmp_path):
    out = tmp_path / "pool.csv"
    result = run_sweep(settings, POINTS, out, workers=2, chunk_size=2, progress=False)
    assert (result.ran, result.already_done) == (POINTS, 0)
    assert out.read_bytes() == reference


def test_interrupted_sweep_keeps_finished_chunks_and_resumes_without_duplicates(settings, reference, tmp_path,
                                                                                 monkeypatch):
    out = tmp_path / "resumed.csv"
    calls = {"n": 0}
    real = runner.label_points

    def interrupted(points, settings):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(points, settings)

    monkeypatch.setattr(runner, "label_points", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(settings, POINTS, out, workers=1, chunk_size=3, progress=False)
    kept = read_rows(out)
    assert sorted(kept["point_id"]) == list(range(6))  # two finished chunks of three
    with out.open("a") as handle:  # a torn write: half a row without its newline
        handle.write("6,3,12345,h100")
    monkeypatch.setattr(runner, "label_points", real)
    result = run_sweep(settings, POINTS, out, workers=1, chunk_size=3, progress=False)
    assert (result.already_done, result.ran) == (6, POINTS - 6)
    assert out.read_bytes() == reference


def test_compressed_output_resumes_from_its_partial_file(settings, reference, tmp_path, monkeypatch):
    out = tmp_path / "data.csv.gz"
    real = runner.label_points
    calls = {"n": 0}

    def interrupted(points, settings):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(points, settings)

    monkeypatch.setattr(runner, "label_points", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(settings, POINTS, out, workers=1, chunk_size=4, progress=False)
    assert not out.exists() and len(read_rows(runner.work_path(out))) == 4
    monkeypatch.setattr(runner, "label_points", real)
    run_sweep(settings, POINTS, out, workers=1, chunk_size=4, progress=False)
    assert gzip.decompress(out.read_bytes()) == reference and not runner.work_path(out).exists()
    first = out.read_bytes()
    run_sweep(settings, POINTS, out, workers=1, progress=False)  # nothing left to run: the same bytes
    assert out.read_bytes() == first


def test_a_file_of_another_sweep_is_refused(settings, reference, tmp_path):
    out = tmp_path / "other.csv"
    out.write_bytes(reference)
    other = SweepSettings(settings.profile, sweep_seed=2, window_s=WINDOW_S)
    with pytest.raises(DataError, match=r"other.csv: holds rows of another sweep \(sweep_seed"):
        run_sweep(other, POINTS, out, workers=1, progress=False)


@pytest.mark.parametrize("kwargs, field", [({"executor": "dask"}, "executor"), ({"workers": -1}, "workers"),
                                           ({"chunk_size": 0}, "chunk_size")])
def test_bad_arguments_name_the_field(settings, tmp_path, kwargs, field):
    with pytest.raises(ConfigError, match=field):
        run_sweep(settings, 3, tmp_path / "x.csv", progress=False, **kwargs)


def test_bad_output_name_and_window_are_refused(settings, tmp_path):
    with pytest.raises(ConfigError, match=r"out: .*must end in .csv or .csv.gz"):
        run_sweep(settings, 3, tmp_path / "x.parquet", progress=False)
    with pytest.raises(ConfigError, match="window_s: 0"):
        SweepSettings(settings.profile, window_s=0)


def test_labels_of_a_light_and_an_overloaded_gpu(settings):
    """Four adapters at 0.5 req/s in all are served in full; 64 adapters at 3.2 req/s each (205 req/s, ten times
    what one H100 serves) starve; a config vLLM cannot start serves nothing and is starved."""
    profile = settings.profile
    window = SweepSettings(profile, 0, 120.0)
    light = WorkloadRecipe(4, "cycle", (8,), rate_values=(0.125,))
    row = label_point(SweepPoint(0, 0, light, 4, 0), window)
    assert row["startup"] == "ok" and not row["starved"] and not row["backlog"]
    assert row["served_ratio"] == pytest.approx(1.0, abs=0.1)
    heavy = WorkloadRecipe(64, "cycle", (16,), rate_values=(3.2,), lengths=LengthSpec("fixed", 250, 231))
    row = label_point(SweepPoint(1, 1, heavy, 16, 0), SweepSettings(profile, 0, WINDOW_S))
    assert row["starved"] and row["served_ratio"] < 0.5
    assert row["offered_tok_s"] == pytest.approx(64 * 3.2 * 481, rel=0.1)
    wide = WorkloadRecipe(384, "cycle", (32,), rate_values=(0.01,))
    row = label_point(SweepPoint(2, 2, wide, 384, 0), SweepSettings(profile, 0, WINDOW_S))
    assert row["startup"] != "ok" and row["served_tok_s"] == 0 and row["starved"]


def test_cli_sweep_writes_the_dataset_and_rejects_missing_arguments(tmp_path, capsys):
    out = tmp_path / "cli.csv"
    assert main(["sweep", "--points", "4", "--out", str(out), "--workers", "1", "--window", "30", "-q"]) == 0
    frame = pd.read_csv(out)
    assert frame["point_id"].tolist() == [0, 1, 2, 3] and set(frame["window_s"]) == {30.0}
    assert "4 points (0 already done, 4 run)" in capsys.readouterr().out
    assert main(["sweep", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--points and --out" in err


def test_ray_gives_the_same_dataset_as_the_local_pool(settings, reference, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    try:
        out = tmp_path / "ray.csv"
        run_sweep(settings, POINTS, out, executor="ray", chunk_size=3, progress=False)
        assert out.read_bytes() == reference
    finally:
        ray.shutdown()


def test_iter_points_is_endless():
    stream = iter_points(0)
    assert [next(stream).point_id for _ in range(200)] == list(range(200))
