"""The tree surrogate: contract, hand-checkable GPUs, held-out accuracy against baselines, max_loras choice,
the shipped dataset's loading and fingerprint, the CLI and the benchmark."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.tree import DecisionTreeRegressor

import adaptergym.surrogate.shipped as shipped
from adaptergym import DEFAULT_PROFILE, load_profile
from adaptergym.cli.main import main
from adaptergym.errors import ConfigError
from adaptergym.surrogate import FEATURES, Surrogate, dataset_features, gpu_features, load_surrogate, shipped_dataset
from adaptergym.surrogate.evaluation import holdout_report, real_runs_report, smape
from adaptergym.surrogate.features import prefix_features, scale_load
from adaptergym.surrogate.forest import FlatForests
from adaptergym.sweep import SweepPoint, SweepSettings, WorkloadRecipe, label_point, read_rows
from adaptergym.workload import LengthSpec

REAL_RUNS = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_runs.csv"
SHAREGPT = LengthSpec()


@pytest.fixture(scope="module")
def model() -> Surrogate:
    found = load_surrogate(DEFAULT_PROFILE)
    assert found is not None, f"no shipped dataset at {shipped_dataset(DEFAULT_PROFILE)}"
    return found


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return read_rows(shipped_dataset(DEFAULT_PROFILE))


def test_features_by_hand():
    rates, ranks = np.array([1.0, 0.5, 0.5]), np.array([8, 16, 32])
    row = dict(zip(FEATURES, gpu_features(rates, ranks, 2, LengthSpec("fixed", 100, 50)), strict=True))
    assert row["num_adapters"] == 3 and row["max_loras"] == 2 and row["slot_coverage"] == pytest.approx(2 / 3)
    assert row["slot_rate_share"] == pytest.approx(0.75)  # the two busiest carry 1.5 of 2 req/s
    assert row["offered_tok_s"] == pytest.approx(2.0 * 150)
    assert row["effective_adapters"] == pytest.approx(4 / 1.5)
    assert (row["max_rank"], row["max_lora_rank"], row["rate_weighted_rank"]) == (32, 32, pytest.approx(16.0))
    levels = gpu_features(rates, ranks, np.array([1, 2, 3]), SHAREGPT)
    assert levels.shape == (3, len(FEATURES)) and levels[:, 3].tolist() == pytest.approx([0.5, 0.75, 1.0])


def test_prefix_features_are_every_prefix_s_gpu_features_and_scale_load_scales_the_rates():
    rng = np.random.default_rng(0)
    rates, ranks = rng.exponential(1.0, 40), rng.choice([8, 16, 32, 64], 40)
    rates[:3] = 0.0  # idle adapters first: shares of an idle prefix
    levels = rng.integers(1, 50, (40, 3))
    rows = prefix_features(rates, ranks, levels, SHAREGPT)
    assert rows.shape == (40, 3, len(FEATURES))
    for k in range(1, 41):
        assert np.allclose(rows[k - 1], gpu_features(rates[:k], ranks[:k], levels[k - 1], SHAREGPT)), k
    assert np.allclose(scale_load(rows[-1], 2.5), gpu_features(rates * 2.5, ranks, levels[-1], SHAREGPT))
    assert np.allclose(scale_load(rows[-1], np.array([1.0, 2.0, 3.0]))[:, FEATURES.index("total_rate")],
                       rates.sum() * np.array([1.0, 2.0, 3.0]))


def test_serves_a_light_gpu_and_not_an_overloaded_one(model):
    rows = np.stack([gpu_features(np.full(8, rate), np.full(8, 16), 8, SHAREGPT) for rate in (0.2, 40.0)])
    assert model.serves(rows).tolist() == [True, False]  # 1.6 req/s fits one GPU; 320 req/s is ~16 GPUs' worth


def test_contract_shapes_and_keys(model):
    rows = np.stack([gpu_features(np.full(8, 0.2), np.full(8, 16), m, SHAREGPT) for m in (1, 4, 8)])
    out = model.predict(rows)
    assert {"throughput", "starved_prob"} <= set(out)
    for key in ("throughput", "starved_prob"):
        assert np.asarray(out[key]).shape == (3,)
    assert np.all((out["starved_prob"] >= 0) & (out["starved_prob"] <= 1)) and np.all(out["throughput"] >= 0)
    assert model.predict(rows, "tree")["throughput"].shape == (3,)
    assert isinstance(model.best_max_loras(np.full(8, 0.2), np.full(8, 16), SHAREGPT), int)
    assert load_surrogate(DEFAULT_PROFILE) is model  # trained once per process
    assert load_surrogate("no-such-profile") is None
    with pytest.raises(ConfigError, match="rows: 3 columns"):
        model.predict(np.zeros((2, 3)))
    with pytest.raises(ConfigError, match="model: 'forest'"):
        model.predict(rows, "forest")


@pytest.mark.parametrize("which", ["accurate", "tree"])
def test_gpu_far_below_capacity_serves_its_load_and_far_above_starves(model, which):
    """Eight adapters at 0.1 req/s (about 340 tok/s, a twentieth of one H100) are served in full; 64 adapters
    at 3.2 req/s (about 86,000 tok/s, ten times what one H100 serves) starve."""
    light = gpu_features(np.full(8, 0.1), np.full(8, 16), 8, SHAREGPT)
    out = model.predict(light[None], which)
    offered = light[FEATURES.index("offered_tok_s")]
    assert out["throughput"][0] == pytest.approx(offered, rel=0.05) and out["starved_prob"][0] < 0.5
    heavy = gpu_features(np.full(64, 3.2), np.full(64, 16), 16, SHAREGPT)
    out = model.predict(heavy[None], which)
    assert out["starved_prob"][0] > 0.5 and out["throughput"][0] < 0.2 * heavy[FEATURES.index("offered_tok_s")]


def test_a_config_that_does_not_start_serves_nothing(model):
    row = gpu_features(np.full(384, 0.01), np.full(384, 32), 384, SHAREGPT)  # 384 rank-32 slots: out of memory
    out = model.predict(row[None])
    assert not out["startup_ok"][0] and out["throughput"][0] == 0 and out["starved_prob"][0] == 1


def test_best_max_loras_is_one_the_twin_serves_without_starving(model):
    """A moderately loaded GPU (48 adapters, Zipf rates, 6 req/s): the twin, run at the surrogate's chosen level,
    keeps up; and the batched choice agrees with the one-GPU call."""
    recipe = WorkloadRecipe(48, "powerlaw", (8, 16, 32), total_rate=6.0, alpha=1.0)
    rates, ranks = recipe.arrays()
    level = model.best_max_loras(rates, ranks, SHAREGPT)
    row = label_point(SweepPoint(0, 0, recipe, level, 0), SweepSettings(load_profile(None), 0, 180.0))
    assert row["startup"] == "ok" and not row["starved"]
    levels, throughput, prob = model.best_levels([(rates, ranks), (np.full(4, 0.1), np.full(4, 8))], SHAREGPT)
    assert levels[0] == level and levels.shape == throughput.shape == prob.shape == (2,)


def test_flat_forests_predict_exactly_what_scikit_learn_does(model, data):
    pair = model.models["accurate"]
    assert pair.forests is not None  # the shipped model predicts through them
    rows = dataset_features(data)
    rng = np.random.default_rng(0)
    for x in (rows, rows[:1], rows[rng.integers(0, len(rows), 7)] * rng.uniform(0.5, 2.0, (7, len(FEATURES)))):
        log_ratio, proba = pair.forests.predict(x)
        assert np.array_equal(log_ratio, pair.ratio.predict(x))  # bit for bit, not approximately
        assert np.array_equal(proba, pair.starved.predict_proba(x))


def test_flat_forests_follow_missing_values_and_refuse_what_they_cannot_mirror():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 3))
    y = x[:, 0] + x[:, 1]
    x[rng.random(x.shape) < 0.2] = np.nan
    y[np.isnan(x[:, 1])] = 3.0  # a missing second feature means something: its nodes learn a side for it
    regressor = HistGradientBoostingRegressor(max_iter=20, random_state=0).fit(x, y)
    classifier = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(x, y > 1.0)
    probe = np.vstack([x, [[np.inf, -np.inf, 0.0], [-np.inf, np.inf, np.nan], [np.nan] * 3, [0.0, -0.0, np.inf]]])
    log_ratio, proba = FlatForests.of(regressor, classifier).predict(probe)
    assert np.array_equal(log_ratio, regressor.predict(probe))
    assert np.array_equal(proba, classifier.predict_proba(probe))
    wide = HistGradientBoostingRegressor(max_iter=5, max_leaf_nodes=50, min_samples_leaf=1).fit(x, y)
    assert max(int(p.nodes["is_leaf"].sum()) for (p,) in wide._predictors) > 32  # 64-bit masks
    assert np.array_equal(FlatForests.of(wide).predict(probe)[0], wide.predict(probe))
    bushy = HistGradientBoostingRegressor(max_iter=1, max_leaf_nodes=80, min_samples_leaf=1).fit(y[:, None], y)
    assert FlatForests.of(bushy) is None  # a tree of more than 64 leaves
    categorical = HistGradientBoostingRegressor(max_iter=5, categorical_features=[2]).fit(np.abs(x.round()), y)
    assert FlatForests.of(regressor, categorical) is None
    assert FlatForests.of(DecisionTreeRegressor(max_depth=2).fit(np.ones((4, 1)), [0.0, 1.0, 2.0, 3.0])) is None


def test_surrogate_beats_the_baselines_on_held_out_workloads(data):
    """Held-out workloads (never seen in training): the boosted model's throughput SMAPE is under half the
    capacity baseline's and under a third of the mean baseline's; its starvation verdict is right at least 88%
    of the time and beats both baselines by 5 points; the shallow tree also beats both. Its max_loras pick
    gets at least 95% of the twin's best throughput among the levels the twin ran."""
    report = holdout_report(data, load_profile(None))
    scores = report["models"]
    accurate, tree = scores["accurate"], scores["tree"]
    assert accurate["n"] >= 200
    assert accurate["throughput_smape"] < 0.5 * scores["capacity"]["throughput_smape"]
    assert accurate["throughput_smape"] < scores["mean"]["throughput_smape"] / 3
    assert accurate["starved_accuracy"] >= 0.88
    for baseline in ("mean", "capacity"):
        assert accurate["starved_accuracy"] >= scores[baseline]["starved_accuracy"] + 0.05
        assert tree["throughput_smape"] < scores[baseline]["throughput_smape"]
    assert report["slot_choice"]["accurate"]["throughput_vs_best"] >= 0.95


@pytest.mark.skipif(not REAL_RUNS.is_file(), reason="needs ../shared/data/real_runs.csv")
def test_real_runs_are_compared_on_the_profiles_model(model):
    runs = pd.read_csv(REAL_RUNS)
    report = real_runs_report(model, runs)
    assert report["model"] == "llama-3.1-8b-instruct" and report["runs"] > 300
    assert 0 < report["models"]["accurate"]["throughput_smape"] < 200
    lightest = runs[(runs["model"] == "llama-3.1-8b-instruct") & (runs["status"] == "ok")].nsmallest(
        2, "est_offered_load_tok_s")
    split = real_runs_report(model, lightest, twin_workers=1)
    assert split["runs"] == 2 and 0 <= split["twin_vs_real_smape"] < 200
    assert set(split["surrogate_vs_twin_smape"]) == {"accurate", "tree"}


def test_smape_by_hand():
    assert smape(np.array([100.0, 0.0]), np.array([50.0, 0.0])) == pytest.approx(100 * (2 * 50 / 150) / 2)


def test_changed_profile_warns_with_the_regenerate_command_and_still_loads(data, tmp_path, monkeypatch, caplog):
    stale = data.copy()
    stale["profile_fingerprint"] = "0123456789abcdef"
    monkeypatch.setattr(shipped, "shipped_dir", lambda: tmp_path)
    stale.to_csv(tmp_path / f"{DEFAULT_PROFILE}.csv.gz", index=False)
    with caplog.at_level(logging.WARNING, logger="adaptergym.surrogate.shipped"):
        model = load_surrogate(DEFAULT_PROFILE)
    assert model is not None
    assert f"adaptergym sweep --profile {DEFAULT_PROFILE} --ship" in caplog.text


def test_no_dataset_no_model(tmp_path, monkeypatch):
    monkeypatch.setattr(shipped, "shipped_dir", lambda: tmp_path)
    assert load_surrogate(DEFAULT_PROFILE) is None
    assert main(["surrogate", "train"]) == 1


def test_cli_train_prints_rules_and_report_prints_tables(tmp_path, capsys, data):
    small = tmp_path / "small.csv"
    shutil.copy(shipped_dataset(DEFAULT_PROFILE), tmp_path / "small.csv.gz")
    read_rows(tmp_path / "small.csv.gz").head(400).to_csv(small, index=False)
    assert main(["surrogate", "train", "--data", str(small)]) == 0
    out = capsys.readouterr().out
    assert "|--- " in out and "log served ratio" in out and "trained on" in out
    assert main(["surrogate", "report", "--data", str(small), "--json"]) == 0
    assert '"holdout"' in capsys.readouterr().out
    assert main(["surrogate", "report", "--data", str(tmp_path / "none.csv")]) == 1
    assert "--data" in capsys.readouterr().err


def test_bench_reports_latency_rows():
    from adaptergym.bench import run_benchmarks

    rows = run_benchmarks(["surrogate"])
    batched = [r for r in rows if r["metric"] == "predict, 10,000 rows in one call"]
    assert {r["benchmark"] for r in batched} == {"surrogate/accurate", "surrogate/tree"}
    assert all(0 < r["value"] < 1 for r in batched)  # ms per row; the target (0.02) is checked by `adaptergym bench`
