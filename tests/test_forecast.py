"""Load forecasters on series with known answers, the registry, the backtest and `adaptergym forecast`."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from adaptergym.accuracy import wape
from adaptergym.cli.main import main
from adaptergym.errors import ConfigError, UnknownName
from adaptergym.forecast import forecaster_names, make_forecaster
from adaptergym.forecast.backtest import backtest, walk_forward
from adaptergym.forecast.naive import ewma
from adaptergym.workload import WorkloadSpec, rate_table, sample_requests

EPOCH = 60.0


def seasonal(epochs: int, season: int, scales: np.ndarray) -> np.ndarray:
    """A clean seasonal series per column: scale * (10 + 6 cos(2 pi t / season))."""
    t = np.arange(epochs)[:, None]
    return scales[None, :] * (10 + 6 * np.cos(2 * np.pi * t / season))


def test_every_documented_forecaster_is_registered():
    assert forecaster_names() == ["ewma", "gbr", "holt-winters", "last", "mean"]


def test_last_value_follows_a_step_one_epoch_late():
    f = make_forecaster("last", EPOCH)
    preds = walk_forward(f, np.array([[5.0], [5.0], [5.0], [20.0], [20.0]]))
    assert np.isnan(preds[0, 0]) and (preds[1:, 0] * EPOCH).tolist() == [5, 5, 5, 20]


def test_ewma_on_a_constant_is_the_constant_and_on_a_step_moves_by_alpha():
    f = make_forecaster("ewma", EPOCH, alpha=0.3)
    for _ in range(10):
        f.observe([12.0, 0.0])
    assert (f.predict(3) * EPOCH).tolist() == [[12.0, 0.0]] * 3
    f.observe([22.0, 10.0])
    assert (f.predict()[0] * EPOCH).tolist() == pytest.approx([15.0, 3.0])


def test_ewma_kept_up_epoch_by_epoch_is_the_ewma_of_the_whole_history_and_history_is_read_only():
    counts = np.random.default_rng(0).poisson(30.0, (40, 5)).astype(float)
    f = make_forecaster("ewma", EPOCH, alpha=0.3)
    for t, row in enumerate(counts):
        f.observe(row)
        assert np.array_equal(f.history, counts[: t + 1])
        assert np.array_equal(f.predict(2), np.tile(ewma(counts[: t + 1], 0.3), (2, 1)) / EPOCH)  # bit for bit
    with pytest.raises(ValueError, match="read-only"):
        f.history[0, 0] = 1.0


def test_mean_and_prior():
    f = make_forecaster("mean", EPOCH, prior=np.array([0.5, 2.0]))
    assert f.predict(2).tolist() == [[0.5, 2.0], [0.5, 2.0]]
    f.observe([6, 0])
    f.observe([0, 0])
    assert (f.predict()[0] * EPOCH).tolist() == [3.0, 0.0]


def test_holt_winters_beats_last_value_on_a_clean_seasonal_series():
    season = 12
    counts = seasonal(6 * season, season, np.array([1.0, 4.0, 0.3]))
    late = slice(3 * season, None)
    hw = walk_forward(make_forecaster("holt-winters", EPOCH, season_s=season * EPOCH), counts)[late] * EPOCH
    last = walk_forward(make_forecaster("last", EPOCH), counts)[late] * EPOCH
    assert wape(counts[late], hw) < 1.0 < wape(counts[late], last) / 5


def test_holt_winters_update_is_statsmodels_recursion():
    """Between fits the vectorised update must forecast what statsmodels does with the fitted weights."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    season, epochs = 6, 30
    rng = np.random.default_rng(24)  # a series whose fitted weights are both inside (0, 1)
    seasons = rng.normal(0, 10, season)
    y = np.empty(epochs)
    for k in range(epochs):  # a random-walk level plus a season whose shape wanders
        seasons[k % season] += rng.normal(0, 4)
        y[k] = seasons[k % season]
    y = np.clip(60 + np.cumsum(rng.normal(0, 2, epochs)) + y, 0, None)
    f = make_forecaster("holt-winters", EPOCH, season_s=season * EPOCH, refit_every=1000)
    ours = walk_forward(f, y[:, None])[:, 0] * EPOCH
    start = f.min_epochs  # the first (and only) fit
    first = ExponentialSmoothing(y[:start], seasonal="add", seasonal_periods=season,
                                 initialization_method="heuristic").fit()
    alpha, gamma = first.params["smoothing_level"], first.params["smoothing_seasonal"]
    assert 0 < alpha < 1 and 0 < gamma < 1  # weights that make the check mean something
    for end in range(start + 1, y.size):
        known = ExponentialSmoothing(y[:end], seasonal="add", seasonal_periods=season,
                                     initialization_method="known", initial_level=first.params["initial_level"],
                                     initial_seasonal=first.params["initial_seasons"])
        theirs = known.fit(smoothing_level=alpha, smoothing_seasonal=gamma, optimized=False).forecast(1)[0]
        assert ours[end] == pytest.approx(max(theirs, 0.0), abs=1e-9)


def test_holt_winters_handles_short_zero_and_constant_histories_quietly():
    season = 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f = make_forecaster("holt-winters", EPOCH, season_s=season * EPOCH)
        ewma = make_forecaster("ewma", EPOCH)
        for k in range(3 * season):
            row = [0.0, 7.0, float(k % 3)]
            f.observe(row)
            ewma.observe(row)
            if k < f.min_epochs - 1:  # too short for a season: EWMA
                assert f.predict().tolist() == ewma.predict().tolist()
        rates = f.predict()[0] * EPOCH
    assert rates[0] == 0.0 and rates[1] == pytest.approx(7.0)
    with pytest.raises(ConfigError, match="season_s: holt-winters needs the length of the season"):
        make_forecaster("holt-winters", EPOCH)


def test_boosting_learns_a_shared_seasonal_shape_and_is_deterministic():
    season = 8
    rng = np.random.default_rng(0)
    counts = rng.poisson(seasonal(7 * season, season, rng.uniform(0.5, 5.0, 30))).astype(float)
    late = slice(4 * season, None)

    def run(name: str, **params) -> np.ndarray:
        return walk_forward(make_forecaster(name, EPOCH, season_s=season * EPOCH, **params), counts)

    gbr, last = run("gbr", refit_every=16), run("last")
    assert wape(counts[late], gbr[late] * EPOCH) < 0.8 * wape(counts[late], last[late] * EPOCH)
    twins = [make_forecaster("gbr", EPOCH, season_s=season * EPOCH) for _ in range(2)]
    for f in twins:
        for row in counts:
            f.observe(row)
    ahead = twins[0].predict(3)
    assert ahead.shape == (3, 30) and np.all(ahead >= 0) and np.array_equal(ahead, twins[1].predict(3))


def test_bad_forecaster_inputs_are_one_line_errors():
    with pytest.raises(UnknownName, match=r"unknown forecaster 'holtwinters'.*Known: ewma, gbr, holt-winters"):
        make_forecaster("holtwinters", EPOCH)
    f = make_forecaster("last", EPOCH)
    with pytest.raises(ConfigError, match="no epoch observed yet and no prior"):
        f.predict()
    f.observe([1, 2])
    with pytest.raises(ConfigError, match="counts: expected one count per adapter"):
        f.observe([1, 2, 3])
    with pytest.raises(ConfigError, match="counts: arrival counts must be finite and >= 0"):
        f.observe([1, -2])
    with pytest.raises(ConfigError, match="epoch_s"):
        make_forecaster("mean", 0)
    with pytest.raises(ConfigError, match=r"forecaster 'last': unknown parameter\(s\) \['alpha'\]; it takes none"):
        make_forecaster("last", EPOCH, alpha=0.2)
    with pytest.raises(ConfigError, match="season_s: 90 must span at least two epochs"):
        make_forecaster("mean", EPOCH, season_s=90)


def step_workload() -> WorkloadSpec:
    return WorkloadSpec.from_dict({
        "adapters": [{"id": "a", "rate": 2.0}, {"id": "b", "rate": 0.0}], "lengths": {"kind": "fixed"},
        "duration_s": 1830, "schedule": [{"kind": "piecewise", "times_s": [0, 900], "multipliers": [1, 3]}]})


def test_backtest_scores_whole_epochs_against_the_schedule():
    w = step_workload()
    table = backtest([w], ["last", "mean"], 300.0)
    # epochs 1-5 of 6 whole ones (the last 30 s are left out), two adapters
    assert table["last"]["points"] == 10 and table["mean"]["points"] == 10
    assert rate_table(w).epoch_rates(300.0)[:6, 0].tolist() == [2, 2, 2, 6, 6, 6]
    # the step (epoch 3) is missed by both; after it, last value is right up to Poisson noise, mean lags
    assert table["last"]["wape"] < table["mean"]["wape"]
    # by hand: last value forecasts epoch k with epoch k-1's count; adapter b (always 0, forecast 0) is left out
    # of MAPE (true zero) and of SMAPE (both zero)
    counts = sample_requests(w, np.random.default_rng(0)).epoch_counts(300.0)[:6, 0]
    truth = np.array([2, 2, 2, 6, 6, 6], float)[1:]
    forecast = counts[:-1] / 300.0
    assert table["last"]["mape"] == pytest.approx(100 * np.mean(np.abs(forecast - truth) / truth))
    assert table["last"]["smape"] == pytest.approx(100 * np.mean(2 * np.abs(forecast - truth) / (forecast + truth)))


def test_forecast_command_json_and_errors(tmp_path, capsys):
    path = tmp_path / "step.json"
    path.write_text(json.dumps(step_workload().to_dict()))
    assert main(["forecast", "--workload", str(path), "--epoch", "300", "--forecaster", "ewma", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["epoch_s"] == 300 and set(out["forecasters"]) == {"ewma"}
    assert set(out["forecasters"]["ewma"]) == {"mape", "smape", "wape", "points", "seconds"}
    assert main(["forecast", "--workload", str(path), "--forecaster", "prophet"]) == 1
    err = capsys.readouterr().err.strip()
    assert "unknown forecaster 'prophet'" in err and "Known: ewma" in err and "\n" not in err
    assert main(["forecast", "--workload", str(path), "--epoch", "4000"]) == 1
    assert "epoch_s: 4000 s is longer than the workload" in capsys.readouterr().err
    assert main(["forecast", "--scenario", "drift", "--seeds", "1", "--forecaster", "holt-winters"]) == 1
    assert "season_s" in capsys.readouterr().err
