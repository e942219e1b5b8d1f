"""The scenario suite: names and versions, pure seeds, disjoint splits, the families' documented ranges."""

from __future__ import annotations

import numpy as np
import pytest

from adaptergym.errors import UnknownScenario
from adaptergym.scenarios import PAPER_SIZES, PAPER_TRIPLES, Scenario, get_scenario, scenario_names
from adaptergym.workload import Daily, Drift, Flash, rate_table
from adaptergym.workload.schedule import MMPP

EXPECTED = {"uniform-small-v0", "zipf-large-v0", "bursty-v0", "mixed-ranks-v0", "paper-ml-test-v0", "diurnal-v0",
            "flash-crowd-v0", "drift-v0"}


def test_the_suite_has_the_documented_versioned_families():
    assert set(scenario_names()) == EXPECTED
    for name in scenario_names():
        scenario = get_scenario(name)
        assert isinstance(scenario, Scenario) and scenario.name == name and scenario.description


def test_unversioned_name_resolves_to_latest_and_unknown_names_suggest():
    assert get_scenario("zipf-large").name == "zipf-large-v0"
    with pytest.raises(UnknownScenario, match="Did you mean 'zipf-large-v0'"):
        get_scenario("zipf-larg-v0")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_workload_is_a_pure_function_of_its_seed(name):
    scenario = get_scenario(name)
    a, b, c = scenario.workload(7), scenario.workload(7), scenario.workload(8)
    assert a == b and a.name == f"{name}/7"
    assert a.adapters != c.adapters
    drawn = scenario.sample(np.random.default_rng(7))
    assert drawn.adapters == a.adapters and drawn.name == name


def test_train_and_test_seeds_are_disjoint_and_sized():
    for name in scenario_names():
        scenario = get_scenario(name)
        assert len(scenario.train_seeds) == 10_000 and len(scenario.test_seeds) == 100
        assert set(scenario.train_seeds).isdisjoint(scenario.test_seeds)
        assert scenario.seeds("test") is scenario.test_seeds
    with pytest.raises(ValueError, match="split"):
        get_scenario("bursty").seeds("validation")


def test_families_stay_in_their_documented_ranges():
    for seed in range(40):
        small = get_scenario("uniform-small").workload(seed)
        assert 8 <= len(small.adapters) <= 32 and 2.0 <= small.total_rate <= 20.0
        assert len({a.rate for a in small.adapters}) == 1 and {a.rank for a in small.adapters} <= {8, 16, 32}
        large = get_scenario("zipf-large").workload(seed)
        assert 64 <= len(large.adapters) <= 192 and 20.0 <= large.total_rate <= 80.0
        bursty = get_scenario("bursty").workload(seed)
        assert bursty.arrival.kind == "gamma" and 2.0 <= bursty.arrival.cv <= 4.0
        mixed = get_scenario("mixed-ranks").workload(seed)
        assert {a.rank for a in mixed.adapters} <= {8, 16, 32, 64, 128}
    ranks_seen = {a.rank for s in range(40) for a in get_scenario("mixed-ranks").workload(s).adapters}
    assert ranks_seen == {8, 16, 32, 64, 128}


def test_paper_scenario_reproduces_the_papers_test_grid():
    seen = set()
    for seed in range(300):
        w = get_scenario("paper-ml-test").workload(seed)
        n = len(w.adapters)
        assert n in PAPER_SIZES and w.lengths.kind == "sharegpt" and w.arrival.kind == "poisson"
        rates = tuple(a.rate for a in w.adapters[:3])
        ranks = tuple(a.rank for a in w.adapters[:3])
        assert (rates, ranks) in PAPER_TRIPLES
        # Cycled: adapter i has the (i mod 3)-th rate and rank, as in the papers' runs.
        assert all(a.rate == rates[i % 3] and a.rank == ranks[i % 3] for i, a in enumerate(w.adapters))
        seen.add((rates, n))
    assert len(seen) == len(PAPER_TRIPLES) * len(PAPER_SIZES)  # 300 draws cover the whole 60-point grid


def test_dynamic_families_move_their_load_as_documented():
    for seed in range(12):
        diurnal = get_scenario("diurnal").workload(seed)
        table = rate_table(diurnal)
        total = table.epoch_rates(300).sum(axis=1)
        assert diurnal.duration_s == 21_600 and get_scenario("diurnal").season_s == 7200
        assert [type(c) for c in diurnal.schedule] == [Daily] and 64 <= len(diurnal.adapters) <= 192
        assert 40 <= table.mean_rates(0, 21_600).sum() <= 90
        assert table.mean_rates(0, 21_600).sum() == pytest.approx(diurnal.total_rate)  # three whole days
        assert total.max() / total.min() > 2

        flash = get_scenario("flash-crowd").workload(seed)
        crowds = [c for c in flash.schedule if isinstance(c, Flash)]
        assert flash.duration_s == 7200 and 25 <= flash.total_rate <= 60
        assert 3 <= len({c.start_s for c in crowds}) <= 6 and isinstance(flash.schedule[-1], MMPP)
        rates = {a.id: a.rate for a in flash.adapters}
        for c in crowds:
            assert 3 <= rates[c.adapters[0]] * c.factor <= 12 and 300 <= c.duration_s <= 1200

        drift = get_scenario("drift").workload(seed)
        assert drift.duration_s == 14_400 and [type(c) for c in drift.schedule] == [Drift]
        totals = rate_table(drift).rates_at(np.arange(0, 14_400, 600.0)).sum(axis=1)
        assert np.allclose(totals, drift.total_rate) and 30 <= drift.total_rate <= 80
    assert get_scenario("drift").season_s is None and get_scenario("zipf-large").season_s is None
