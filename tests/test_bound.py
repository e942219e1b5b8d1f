"""The lower bound, its cost model and the local-search policy (issue 16).

The full check over every scenario's first 100 test seeds is `python -m baselines.bound_check`; these tests run
a sample of it.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from adaptergym import load_profile
from adaptergym.scenarios import get_scenario
from adaptergym.workload import AdapterSpec, ArrivalSpec, LengthSpec, WorkloadSpec, powerlaw_workload
from baselines import get_policy
from baselines.bound import GPU_COST_LIMITS, lower_bound_gpus, single_adapter_bound_gpus
from baselines.bound_check import check_workload, grid_workloads
from baselines.capacity import capacity_model
from baselines.cost_model import calibration_mixes, cost_model, edge_loads, fit_cost_curves
from baselines.edge_table import shipped_table

PROFILE = load_profile(None)


def test_the_cost_curve_is_the_largest_concave_one_under_the_mixes():
    """Two mixes: one adapter at its edge of 100 tokens/s, two at 45 each. The fit gives c(100) = 1 and
    c(45) = 1/2, is linear between them (the least concave curve), and linear from 0 below; a load above
    what one GPU carries is split over the fewest GPUs (250 -> 3 copies of 83.3)."""
    curves = fit_cost_curves([np.array([100.0]), np.array([45.0, 45.0])])
    assert len(curves.cost) == 1  # the curves of each mix are this one too
    assert curves.each(np.array([45.0, 100.0, 20.0, 70.0]))[0] == pytest.approx([0.5, 1.0, 20 / 90, 0.5 + 25 / 110])
    assert curves.max_load_tok_s == 100.0
    assert curves.split_each(np.array([250.0]))[0, 0] == pytest.approx(3 * (0.5 + (250 / 3 - 45) / 110))
    assert curves.gpu_cost(np.array([45.0, 45.0])) == pytest.approx(1.0)


def test_the_shipped_table_fits_every_calibration_mix_within_one_gpu():
    """The default profile's table is the one in use (`python -m baselines.edge_table` if this fails); each
    calibration mix at its edge costs at most one GPU under every curve, nearly one under the family (each mix has
    its curve; exactly one for the mixes of 1-4 adapters), and most of them nearly one under the main curve alone
    (the fit is tight), which errs low where a GPU's load sits in a few hot adapters."""
    table = shipped_table(PROFILE, LengthSpec())
    assert table is not None and set(table.mixes) == {8, 16, 32, 64, 128}
    model = cost_model(PROFILE, LengthSpec())
    mixes = calibration_mixes()
    for cover, edges in table.mixes.items():
        assert set(edges) == set(mixes)
        curves = model.curve(cover)
        per_curve = np.array([curves.each(loads).sum(axis=1) for loads in edge_loads(edges)])  # mix x curve
        assert per_curve.max() <= 1 + 1e-6  # every curve of the family
        assert per_curve.max(axis=1).min() >= 0.95  # the family charges each mix (nearly) fully
        assert np.median(per_curve[:, 0]) >= 0.85  # the main curve is tight on most mixes
        few = [k for k, name in enumerate(edges) if len(mixes[name]) <= 4]
        assert per_curve[few].max(axis=1) == pytest.approx(1.0, abs=1e-3)
        assert per_curve[few, 0].max() < 0.9  # where the main curve alone errs low


def test_gamma_arrivals_are_costed_by_the_larger_of_their_edges_and_poissons():
    """Bursts of one adapter's requests share its slot and batch presence: under Gamma arrivals a GPU of many
    cold adapters serves more than under Poisson ones (the table's Gamma edges, measured at CV 2, 3 and 4). A Gamma
    workload within those CVs is costed by each mix's larger edge; beyond them (or a burst at t=0) the table
    does not say, and the bound falls back to offered / (one-adapter peak / 0.9)."""
    table = shipped_table(PROFILE, LengthSpec())
    assert table.gamma_cvs == (2.0, 3.0, 4.0) and table.gamma_mixes.keys() == table.mixes.keys()
    assert table.edges_for(ArrivalSpec()) is table.mixes
    bursty = table.edges_for(ArrivalSpec("gamma", 3.5))
    for cover, row in bursty.items():
        for name, edge in row.items():
            assert edge.load_tok_s == max(table.mixes[cover][name].load_tok_s,
                                          table.gamma_mixes[cover][name].load_tok_s)
    ratio = bursty[32]["equal-256"].load_tok_s / table.mixes[32]["equal-256"].load_tok_s
    assert ratio > 1.3  # measured 1.54: 256 equal-rate adapters, the mix Gamma arrivals help most
    assert table.edges_for(ArrivalSpec("gamma", 8.0)) is None and table.edges_for(ArrivalSpec("burst")) is None
    workload = get_scenario("bursty").workload(1_000_070)
    wild = dataclasses.replace(workload, arrival=ArrivalSpec("gamma", 8.0))
    capacity = capacity_model(PROFILE, LengthSpec())
    fallback = math.ceil(capacity.loads(workload).sum() / capacity.admissible_tok_s(8))
    assert lower_bound_gpus(wild, PROFILE) == fallback
    assert cost_model(PROFILE, LengthSpec(), wild.arrival) is None
    assert cost_model(PROFILE, LengthSpec(), workload.arrival) is not cost_model(PROFILE, LengthSpec())


def test_the_single_adapter_bound_is_offered_over_one_rank_8_adapter_at_saturation():
    capacity = capacity_model(PROFILE, LengthSpec())
    peak = capacity.peak_tok_s(8, 1)
    rate = 2.5 * peak / capacity.tokens_per_request / 3  # 2.5 GPUs' worth over three adapters
    workload = WorkloadSpec(tuple(AdapterSpec(f"a{i}", 32, rate) for i in range(3)), duration_s=600.0)
    assert single_adapter_bound_gpus(workload, PROFILE) == 3
    assert lower_bound_gpus(workload, PROFILE) >= 2  # 2.5 / (peak / 0.9) = 2.25 GPUs at the very least


@pytest.mark.parametrize(("scenario", "seed"), [("zipf-large", 1_000_006), ("bursty", 1_000_001),
                                                ("bursty", 1_000_070), ("mixed-ranks", 1_000_002)])
def test_the_bound_holds_on_scenario_test_seeds(scenario, seed):
    """A sample of `python -m baselines.bound_check`: greedy and local-search verified, the bound at or below
    both, every GPU they verify costs at most the margin of its arrivals, and the local search one GPU below the
    bound does not verify.
    Seed 1,000,006 of zipf-large is where the old equal-rate bound sat above a verified placement (3 vs 2); seed
    1,000,070 of bursty is where a bound costed by the Poisson edges alone sat above one (2 vs 1: its GPU of 98
    adapters under Gamma arrivals of CV 3.7 cost 1.081 by them, with the profile before its 1,800-s refit; the
    Gamma edges cost it 0.985)."""
    row = check_workload((scenario, seed, get_scenario(scenario).workload(seed), PROFILE, ("greedy", "local-search")))
    assert row["greedy_starved"] == row["local-search_starved"] == 0
    assert row["lower_bound_gpus"] <= min(row["greedy_gpus"], row["local-search_gpus"])
    kind = get_scenario(scenario).workload(seed).arrival.kind
    assert row["highest_gpu_cost"] <= row["gpu_cost_limit"] == GPU_COST_LIMITS[kind]
    assert math.isnan(row["probe_gpus"]) or row["probe_gpus"] >= row["lower_bound_gpus"]


def test_local_search_verifies_a_300_adapter_zipf_workload_near_the_bound():
    """Measured with the 1,800-s Llama profile: 8 GPUs against a bound of 7 (greedy 8 too): within the issue's
    1.15x since the capacity table's edges are the largest of 12 request draws and the margin 5%
    (``GPU_COST_LIMITS``; it was 6 with the 10% margin)."""
    workload = powerlaw_workload(300, 240.0, alpha=1.0, rng=np.random.default_rng(0), duration_s=600.0)
    policy = get_policy("local-search")
    placement = policy.place(workload, PROFILE, seed=0)
    from adaptergym.placement import verify

    assert verify(workload, placement, PROFILE, seed=0).starved_gpus == 0
    assert placement.gpus <= 1.15 * lower_bound_gpus(workload, PROFILE)
    assert policy.twin_runs >= placement.gpus  # every GPU was simulated by the policy itself


def test_a_gpu_gets_a_slot_for_each_adapter_nearly_always_in_the_batch():
    """Twelve adapters at 1 req/s each: each has a request in the batch nearly all the time (1 - exp(-5) of it),
    so fewer than 12 slots would leave some waiting for a slot that seldom frees; the level is 12 (a slot each)."""
    capacity = capacity_model(PROFILE, LengthSpec())
    loads = np.full(12, 1.0 * capacity.tokens_per_request)
    assert capacity.best_level(16, loads) == 12
    assert capacity.best_level(16, loads / 100) < 12  # cold adapters share fewer slots


def test_the_bound_is_exact_on_12_zipf_adapters_where_a_few_hot_ones_dominate():
    """12 Zipf-1 adapters at 45 req/s: `exact` proves 2 GPUs optimal (tests/test_baselines.py). The main cost curve
    alone gave a bound of 1 (it charges a GPU of one or a few hot adapters only 0.65-0.87 at its edge); the curves
    of the few-adapter mixes give 2."""
    workload = powerlaw_workload(12, 45.0, alpha=1.0, rng=np.random.default_rng(3), duration_s=600.0)
    assert lower_bound_gpus(workload, PROFILE) == 2


def test_local_search_reaches_the_bound_on_600_zipf_adapters_where_greedy_does_not():
    """grid/zipf-600-150-a0.9 of the bound check (the issue's workload shape): local-search verifies the bound's 6
    GPUs, greedy 7 (measured with the refitted profile). Its neighbour a0.7 reached the bound by balancing with
    the profile before the LoRA LRU refit; now the twin's capacities of its packing on 6 GPUs sum to 0.985 of
    their cost (`python examples/bound_gap.py grid/zipf-600-150-a0.7`): no slack to balance with, 7 GPUs."""
    workload = grid_workloads()["grid/zipf-600-150-a0.9"]
    placement = get_policy("local-search").place(workload, PROFILE, seed=0)
    from adaptergym.placement import verify

    assert lower_bound_gpus(workload, PROFILE) == placement.gpus == 6
    assert verify(workload, placement, PROFILE, seed=0).starved_gpus == 0
    assert get_policy("greedy").place(workload, PROFILE, seed=0).gpus > placement.gpus


def test_the_twins_capacities_say_whether_a_gpu_count_can_fit_by_moving_load():
    """12 Zipf adapters at 45 req/s: on one GPU the twin's capacity (cost times the factor the rates scale by and
    still verify) falls short of the cost, so no move fits them there; on two, each GPU verifies with room."""
    workload = powerlaw_workload(12, 45.0, alpha=1.0, rng=np.random.default_rng(3), duration_s=600.0)
    policy = get_policy("local-search")
    [(_, cost, capacity)] = policy.capacities(workload, PROFILE, 1)
    assert capacity < cost
    assert all(capacity >= cost for _, cost, capacity in policy.capacities(workload, PROFILE, 2))


def test_balancing_that_overshoots_is_redone_moving_half_as_much():
    """A hand-made twin whose GPUs serve less the more they carry (each capacity falls by 1.5 times the cost it
    gains, as the twin's did on grid/zipf-300-40-a0.7): the balancing round, which takes the capacities as
    fixed, fills the receiving GPU past what it then serves, fuller than the fullest was; the next round redoes
    it from the same start moving at most half as much, and both GPUs fit."""
    from baselines.common import Verifier
    from baselines.local_search import _Search

    workload = powerlaw_workload(120, 30.0, alpha=0.5, rng=np.random.default_rng(0), duration_s=600.0)
    search = _Search(workload, PROFILE, Verifier(workload, PROFILE, 0))
    start = [search.cost(g) for g in search.pack([[], []], search.copies)]
    scale = (0.97, 1.06)  # the first GPU over its capacity, the second with room

    def capacities(groups: list) -> list[float]:
        return [s * c - 1.5 * (search.cost(g) - c) for s, c, g in zip(scale, start, groups, strict=True)]

    search.capacities = capacities
    packed, balanced, redone = [p for p, _ in zip(search.packings(2), range(3), strict=False)]
    fill = [[search.cost(g) / c for g, c in zip(p, capacities(p), strict=True)] for p in (packed, balanced, redone)]
    assert fill[0][0] > 1.0 >= fill[0][1]
    assert fill[1][1] > max(fill[0]) and fill[1][0] <= 1.0  # overshot: the receiver is now fuller
    assert max(fill[2]) <= 1.0
    moved = [start[0] - search.cost(p[0]) for p in (balanced, redone)]
    assert 0.0 < moved[1] <= moved[0] / 2


def test_balancing_skips_a_gpu_the_packing_left_empty():
    """One hot rank-64 adapter and three cold rank-8 ones on 4 GPUs: the packing leaves a GPU empty, which has
    no rank class and no capacity, so balancing works on the three it filled (it raised on the empty one)."""
    from baselines.common import Verifier
    from baselines.local_search import _Search

    workload = WorkloadSpec((AdapterSpec("a", 64, 3.0), *(AdapterSpec(x, 8, 0.5) for x in "bcd")),
                            LengthSpec("sharegpt"), duration_s=600.0)
    search = _Search(workload, PROFILE, Verifier(workload, PROFILE, 0))
    assert any(not g for g in search.pack([[] for _ in range(4)], search.copies))
    packed, balanced = [p for p, _ in zip(search.packings(4), range(2), strict=False)]
    assert all(packed) and all(balanced)
    assert sorted(c.id for g in balanced for c in g) == ["a", "b", "c", "d"]


def test_local_search_reaches_the_bound_on_300_zipf_adapters_by_redoing_an_overshot_balancing():
    """grid/zipf-300-40-a0.7: the twin's capacities of the packing on the bound's 2 GPUs sum to 1.016 of the
    cost; balancing by them overshoots (the GPU that takes load serves less of it), and moving half as much
    verifies both GPUs (3 before)."""
    workload = grid_workloads()["grid/zipf-300-40-a0.7"]
    placement = get_policy("local-search").place(workload, PROFILE, seed=0)
    from adaptergym.placement import verify

    assert lower_bound_gpus(workload, PROFILE) == placement.gpus == 2
    assert verify(workload, placement, PROFILE, seed=0).starved_gpus == 0
