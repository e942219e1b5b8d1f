"""Time-varying workloads: schedule kinds, exact rates and integrals, sampling against them, old files unchanged."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest

from adaptergym.errors import WorkloadError
from adaptergym.workload import (
    ArrivalSpec,
    Daily,
    Drift,
    WorkloadSpec,
    powerlaw_workload,
    rate_table,
    sample_requests,
)


def spec(schedule: list[dict], rates=(2.0,), duration_s=3600.0, **extra) -> WorkloadSpec:
    adapters = [{"id": f"a{i}", "rate": r} for i, r in enumerate(rates)]
    return WorkloadSpec.from_dict({"adapters": adapters, "lengths": {"kind": "fixed"}, "duration_s": duration_s,
                                   "schedule": schedule, **extra})


def chi2_z(counts: np.ndarray, expected: np.ndarray) -> float:
    """How many standard deviations the Pearson chi-square of Poisson counts is from its mean."""
    keep = expected > 0
    stat = float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum())
    return (stat - keep.sum()) / np.sqrt(2 * keep.sum())


def test_piecewise_rates_and_integral_by_hand():
    w = spec([{"kind": "piecewise", "times_s": [0, 100, 250], "multipliers": [1, 3, 0.5]}], duration_s=400)
    table = rate_table(w)
    assert table.rates_at(np.array([0, 99.999, 100, 249.999, 250, 399]))[:, 0].tolist() == [2, 2, 6, 6, 1, 1]
    assert table.cumulative(400.0)[0] == pytest.approx(2 * (100 + 3 * 150 + 0.5 * 150))
    assert table.mean_rates(50, 150)[0] == pytest.approx((2 * 50 + 6 * 50) / 100)


def test_a_zero_segment_gets_no_arrival_and_the_boundaries_hold():
    w = spec([{"kind": "piecewise", "times_s": [0, 1000, 2000], "multipliers": [1, 0, 4]}], rates=(1.0,),
             duration_s=3000)
    t = sample_requests(w, np.random.default_rng(0)).arrival_s
    assert not np.any((t >= 1000) & (t < 2000))
    before, after = np.sum(t < 1000), np.sum(t >= 2000)
    assert abs(before - 1000) < 4 * np.sqrt(1000) and abs(after - 4000) < 4 * np.sqrt(4000)


def test_flash_crowd_multiplies_exactly_its_window():
    w = spec([{"kind": "flash", "start_s": 1200, "duration_s": 300, "factor": 8, "adapters": ["a1"]}],
             rates=(1.0, 0.5), duration_s=3600)
    table = rate_table(w)
    r = table.rates_at(np.array([1199.999, 1200, 1499.999, 1500]))
    assert r[:, 1].tolist() == [0.5, 4.0, 4.0, 0.5] and r[:, 0].tolist() == [1.0] * 4
    assert table.mean_rates(1200, 1500).tolist() == pytest.approx([1.0, 4.0])
    assert table.mean_rates(0, 3600)[1] == pytest.approx(0.5 * (3300 + 8 * 300) / 3600)
    req = sample_requests(w, np.random.default_rng(3))
    hot = (req.adapter == 1) & (req.arrival_s >= 1200) & (req.arrival_s < 1500)
    assert abs(hot.sum() - 1200) < 4 * np.sqrt(1200)


def test_daily_cycle_integrates_to_the_base_rate_over_whole_periods():
    w = spec([{"kind": "daily", "amplitude": [0.8, 0.3], "phase_s": [0, 900], "period_s": 1800}],
             rates=(2.0, 1.0), duration_s=7200)
    table = rate_table(w)
    assert table.mean_rates(0, 7200).tolist() == pytest.approx([2.0, 1.0])
    assert table.rates_at(0.0)[0] == pytest.approx(2.0 * 1.8) and table.rates_at(900.0)[0] == pytest.approx(0.4)
    assert table.rates_at(900.0)[1] == pytest.approx(1.3)
    # half a period after the peak, the first half-period holds (1 + 2A/pi) times the base rate
    assert table.mean_rates(0, 450)[0] * 450 + table.mean_rates(1350, 1800)[0] * 450 == pytest.approx(
        2.0 * 900 * (1 + 2 * 0.8 / np.pi))


def test_counts_per_epoch_match_the_integral_within_poisson_error():
    """A long seeded run of every kind at once: per-(epoch, adapter) counts against the schedule's integral."""
    w = spec([
        {"kind": "daily", "amplitude": [0.9, 0.5], "phase_s": [0, 3000], "period_s": 7200, "adapters": ["a0", "a1"]},
        {"kind": "flash", "start_s": 5000, "duration_s": 600, "factor": 6, "adapters": ["a2"]},
        {"kind": "piecewise", "times_s": [0, 9000], "multipliers": [1, 2.5], "adapters": ["a1", "a2"]},
        {"kind": "mmpp", "multipliers": [1, 5], "switch_rates": [[0, 1 / 900], [1 / 300, 0]], "adapters": ["a3"]},
        {"kind": "drift", "period_s": 1800, "alpha": 1.2, "seed": 2, "adapters": ["a0", "a2", "a3"]},
    ], rates=(3.0, 2.0, 1.0, 1.5), duration_s=6 * 3600)
    req = sample_requests(w, np.random.default_rng(11))
    expected = rate_table(w).epoch_rates(300) * 300
    counts = req.epoch_counts(300)
    assert counts.sum() == len(req) and counts.shape == expected.shape == (72, 4)
    assert abs(chi2_z(counts, expected)) < 4
    assert np.all(np.diff(req.arrival_s) >= 0)


def test_cumulative_rate_inverts_exactly():
    w = spec([{"kind": "daily", "amplitude": 1.0, "period_s": 600},
              {"kind": "flash", "start_s": 100, "duration_s": 50, "factor": 20}], rates=(1.0, 3.0), duration_s=1800)
    table = rate_table(w)
    rng = np.random.default_rng(0)
    adapter = rng.integers(0, 2, 5000)
    expected = rng.uniform(0, 1, 5000) * table.cum[-1, adapter]
    t = table.invert(adapter, expected)
    assert np.all((t >= 0) & (t <= 1800))
    assert np.abs(table.cumulative(t)[np.arange(5000), adapter] - expected).max() < 1e-6


def test_gamma_arrivals_keep_their_cv_in_operational_time():
    w = spec([{"kind": "daily", "amplitude": 0.7, "period_s": 3600}], rates=(5.0,), duration_s=20_000,
             arrival={"kind": "gamma", "cv": 3.0})
    req = sample_requests(w, np.random.default_rng(4))
    operational = rate_table(w).cumulative(req.arrival_s)[:, 0]
    gaps = np.diff(operational)
    assert gaps.mean() == pytest.approx(1.0, rel=0.05) and gaps.std() / gaps.mean() == pytest.approx(3.0, rel=0.1)
    assert len(req) == pytest.approx(5.0 * 20_000, rel=0.05)


def test_drift_reshuffles_zipf_ranks_and_keeps_the_set_total():
    ids = tuple(f"a{i}" for i in range(10))
    drift = Drift(ids, period_s=600, alpha=1.0, fraction=0.4, seed=5)
    w = WorkloadSpec.from_dict({"adapters": [{"id": i, "rate": 1.0} for i in ids], "duration_s": 3600,
                                "schedule": [drift.to_dict()]})
    zipf = np.arange(1, 11, dtype=float) ** -1.0
    zipf /= zipf.mean()
    rates = rate_table(w).rates_at(np.arange(0, 3600, 600.0))
    for row in rates:
        assert np.sort(row) == pytest.approx(np.sort(zipf)) and row.sum() == pytest.approx(10.0)
    ranks = drift.ranks(6)
    moved = (np.diff(ranks, axis=0) != 0).sum(axis=1)
    assert np.all(moved <= 4) and moved.sum() > 0


def test_mmpp_takes_its_state_multipliers_with_the_stationary_mean():
    ids = [f"a{i}" for i in range(200)]
    mmpp = {"kind": "mmpp", "multipliers": [1, 4], "switch_rates": [[0, 1 / 600], [1 / 120, 0]], "seed": 1}
    w = WorkloadSpec.from_dict({"adapters": [{"id": i, "rate": 1.0} for i in ids], "duration_s": 36_000,
                                "schedule": [mmpp]})
    table = rate_table(w)
    assert set(np.unique(table.level)) == {1.0, 4.0}
    # stationary distribution (5/6, 1/6): mean multiplier 1 * 5/6 + 4 * 1/6 = 1.5
    assert table.mean_rates(0, 36_000).mean() == pytest.approx(1.5, abs=0.05)
    shared = WorkloadSpec.from_dict({"adapters": [{"id": i, "rate": 1.0} for i in ids[:5]], "duration_s": 3600,
                                     "schedule": [{**mmpp, "shared": True}]})
    level = rate_table(shared).level
    assert np.all(level == level[:, :1])


def test_seeded_runs_are_identical_and_rates_are_a_function_of_the_spec():
    w = spec([{"kind": "mmpp", "multipliers": [1, 3], "switch_rates": [[0, 0.01], [0.01, 0]]},
              {"kind": "drift", "period_s": 300}], rates=(1.0, 2.0, 0.5), duration_s=1800)
    a, b = sample_requests(w, np.random.default_rng(9)), sample_requests(w, np.random.default_rng(9))
    assert np.array_equal(a.arrival_s, b.arrival_s) and np.array_equal(a.adapter, b.adapter)
    again = WorkloadSpec.from_dict(json.loads(json.dumps(w.to_dict())))
    assert again == w
    rate_table.cache_clear()
    assert np.array_equal(rate_table(again).level, rate_table(w).level)


def test_restricting_adapters_or_duration_keeps_each_rate():
    w = spec([{"kind": "daily", "amplitude": [0.5, 0.2, 0.9], "period_s": 1200},
              {"kind": "drift", "period_s": 600, "seed": 3},
              {"kind": "mmpp", "multipliers": [1, 2], "switch_rates": [[0, 0.01], [0.02, 0]]},
              {"kind": "flash", "start_s": 2000, "duration_s": 600, "factor": 3, "adapters": ["a2"]}],
             rates=(1.0, 2.0, 3.0), duration_s=3600)
    t = np.linspace(0, 1700, 401)
    full = rate_table(w).rates_at(t)
    cut = w.with_adapters(w.adapters[1:])
    assert np.allclose(rate_table(cut).rates_at(t), full[:, 1:])
    short = w.with_duration(1700)
    assert np.allclose(rate_table(short).rates_at(t), full) and short.duration_s == 1700
    assert WorkloadSpec.from_dict(cut.to_dict()) == cut


def test_a_daily_cycle_adds_few_cells_and_integrates_exactly_over_hours():
    """Eighth-of-a-period cells, not one per adapter: a 6-h, 300-adapter daily workload stays a small table."""
    w = powerlaw_workload(300, 60.0, rng=np.random.default_rng(0), duration_s=6 * 3600)
    w = replace(w, schedule=(Daily(tuple(a.id for a in w.adapters), (0.6,), (1000.0,), 7200.0),))
    table = rate_table(w)
    assert table.edges.size < 30
    assert table.cum[-1].sum() == pytest.approx(60.0 * 6 * 3600, rel=1e-9)


#: sha256 prefixes of (arrival_s, adapter, input_tokens, output_tokens) for seeds 0 and 11, computed with the
#: sampler as it was before schedules existed (commit 114aa20): a workload without a schedule must draw the
#: very same requests.
OLD_FINGERPRINTS = {
    "example": ["afff65652da06560", "4ab581ce35109a28"],
    "gamma": ["313de06affce7b00", "3b35a863e31b8153"],
    "lognormal_capped": ["a892519518bc860b", "9e96b25a70374ad3"],
    "burst": ["6a62fb536f655654", "f6cdcb57b213e15d"],
}


def test_workloads_without_a_schedule_draw_the_same_requests_as_before():
    def fingerprint(req) -> str:
        h = hashlib.sha256()
        for array in (req.arrival_s, req.adapter, req.input_tokens, req.output_tokens):
            h.update(np.ascontiguousarray(array).tobytes())
        return h.hexdigest()[:16]

    cases = {
        "example": WorkloadSpec.from_json("examples/workloads/sharegpt_24_adapters.json"),
        "gamma": powerlaw_workload(40, 15.0, alpha=1.0, rng=np.random.default_rng(5), duration_s=600,
                                   arrival=ArrivalSpec("gamma", 3.0)),
        "lognormal_capped": WorkloadSpec.from_dict({"adapters": [{"id": "a", "rate": 2.0},
                                                                 {"id": "b", "rank": 8, "rate": 0.5}],
                                                    "lengths": {"kind": "lognormal"}, "duration_s": 900,
                                                    "num_requests": 500}),
        "burst": WorkloadSpec.from_dict({"adapters": [{"id": "a", "rate": 2.0}, {"id": "b", "rate": 1.0}],
                                         "arrival": {"kind": "burst"}, "num_requests": 300, "duration_s": 1}),
    }
    for name, w in cases.items():
        assert [fingerprint(sample_requests(w, np.random.default_rng(s))) for s in (0, 11)] == OLD_FINGERPRINTS[name]


def test_epoch_counts_and_epoch_errors():
    w = spec([{"kind": "piecewise", "times_s": [0, 50], "multipliers": [1, 2]}], duration_s=130)
    req = sample_requests(w, np.random.default_rng(0))
    counts = req.epoch_counts(60)
    assert counts.shape == (3, 1) and counts.sum() == len(req)
    assert rate_table(w).epoch_rates(60)[:, 0] == pytest.approx([2 * (50 + 2 * 10) / 60, 4.0, 4.0])
    with pytest.raises(WorkloadError, match="epoch_s: 200 s is longer than the workload"):
        req.epoch_counts(200)
    with pytest.raises(WorkloadError, match="epoch_s"):
        rate_table(w).epoch_rates(0)


@pytest.mark.parametrize(
    ("component", "field"),
    [
        ({"kind": "tide"}, r"schedule\[0\]\.kind: 'tide' is not one of piecewise, daily, flash, drift, mmpp"),
        ({"kind": "piecewise", "times_s": [0, 10], "multipliers": [1, -2]}, r"schedule\[0\]\.multipliers"),
        ({"kind": "piecewise", "times_s": [5], "multipliers": [1]}, r"times_s: must start at 0"),
        ({"kind": "piecewise", "times_s": [0, 20, 10], "multipliers": [1, 1, 1]}, r"times_s: must be strictly"),
        ({"kind": "piecewise", "times_s": [0, 700], "multipliers": [1, 1]}, r"times_s: 700 s is not before"),
        ({"kind": "daily", "amplitude": 1.5}, r"amplitude: 1.5 must be in \[0, 1\]"),
        ({"kind": "daily", "period_s": 0}, r"period_s: 0 must be a finite number > 0"),
        ({"kind": "daily", "period_s": -60}, r"period_s"),
        ({"kind": "daily", "amplitude": [0.1, 0.2, 0.3]}, r"amplitude: give one value or one per adapter"),
        ({"kind": "flash", "start_s": 100, "duration_s": 900, "factor": 3}, r"duration_s: 100 \+ 900 s ends after"),
        ({"kind": "flash", "start_s": 0, "duration_s": 60, "factor": -3}, r"factor: -3"),
        ({"kind": "drift", "period_s": 900}, r"period_s: 900 s is not shorter than the workload"),
        ({"kind": "drift", "period_s": 60, "fraction": 0}, r"fraction"),
        ({"kind": "mmpp", "multipliers": [1, 2], "switch_rates": [[0, 1]]}, r"switch_rates: must be a 2x2"),
        ({"kind": "mmpp", "multipliers": [1, 2], "switch_rates": [[0, -1], [1, 0]]}, r"switch_rates: -1"),
        ({"kind": "flash", "adapters": ["zz"]}, r"adapters: unknown adapter id 'zz'"),
        ({"kind": "flash", "colour": "red"}, r"unknown field\(s\) \['colour'\]"),
        ({"kind": "flash", "factor": "big"}, r"factor: 'big' is not a number"),
    ],
)
def test_bad_schedules_get_one_line_naming_the_field(component, field):
    with pytest.raises(WorkloadError, match=field) as info:
        spec([component], rates=(1.0, 1.0), duration_s=600)
    assert "\n" not in str(info.value)


def test_schedule_conflicts_with_burst_trace_and_two_daily_cycles(tmp_path):
    with pytest.raises(WorkloadError, match="schedule: a 'burst'"):
        spec([{"kind": "flash"}], arrival={"kind": "burst"}, num_requests=10)
    with pytest.raises(WorkloadError, match="already has a daily cycle"):
        spec([{"kind": "daily"}, {"kind": "daily", "adapters": ["a0"]}])
    with pytest.raises(WorkloadError, match=r"adapters\['a0'\]\.rate: -1.0 must be"):
        spec([], rates=(-1.0,))


def test_the_shipped_example_loads_round_trips_and_peaks_where_it_says():
    w = WorkloadSpec.from_json("examples/workloads/time_varying_8_adapters.json")
    assert WorkloadSpec.from_dict(w.to_dict()) == w.with_name("time-varying-8-adapters")
    table = rate_table(w)
    news = [a.id for a in w.adapters].index("news")
    def daily(t: float) -> float:
        return 1 + 0.2 * np.cos(2 * np.pi * (t - 600) / 1800)

    assert table.rates_at(2200.0)[news] == pytest.approx(0.1 * 40 * daily(2200))
    assert table.rates_at(2500.0)[news] == pytest.approx(0.1 * daily(2500))
