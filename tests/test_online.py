"""Online policies (baselines.online), replay and the dynamic leaderboard, mostly in fast mode (seconds each)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from adaptergym.cli import main
from adaptergym.dynamic import DynamicFleet, ReplicaSpec
from adaptergym.errors import ConfigError
from adaptergym.scenarios import get_scenario
from adaptergym.workload import AdapterSpec, Flash, LengthSpec, Piecewise, WorkloadSpec, powerlaw_workload
from baselines.online import get_online_policy
from baselines.online.packing import Packer
from baselines.online.policies import held, lead_epochs, make_before_break, shortfall, upper_rates
from baselines.online.replay import replay


def zipf(total_rate: float, duration_s: float = 3600.0, schedule=()):
    workload = powerlaw_workload(40, total_rate, alpha=1.0, ranks=(8, 16), rng=np.random.default_rng(0),
                                 duration_s=duration_s)
    return workload.with_schedule(schedule)


def test_static_policies_plan_once_on_mean_and_on_each_adapters_peak():
    workload = zipf(20.0, schedule=(Flash(("adapter-0030", "adapter-0031"), 1200.0, 600.0, 60.0),))
    runs = {name: replay(get_online_policy(name), DynamicFleet(workload, epoch_s=300.0, scorer="analytic"))
            for name in ("static-mean", "static-peak")}
    for run in runs.values():
        assert all(r.changes.adapter_loads == 0 and not r.changes.cold_starts for r in run.results)
        assert len({r.gpus for r in run.results}) == 1
    fleet = DynamicFleet(workload, epoch_s=300.0, scorer="analytic")
    assert runs["static-peak"].results[0].gpus == len(Packer(fleet, 0.25).fresh_plan(fleet.rate_table().max(axis=0)))
    assert runs["static-peak"].summary.gpu_hours > runs["static-mean"].summary.gpu_hours
    # The flash crowd (two tail adapters at 60x) lands on the mean plan's GPUs: they starve while it lasts.
    assert runs["static-mean"].summary.starved_adapter_minutes > 0
    assert runs["static-peak"].summary.starved_adapter_minutes < runs["static-mean"].summary.starved_adapter_minutes


def test_oracle_keeps_the_plan_of_a_steady_workload():
    run = replay(get_online_policy("oracle"), DynamicFleet(zipf(20.0), epoch_s=600.0, scorer="surrogate"))
    assert all(r.changes == run.results[0].changes for r in run.results)  # nothing changes after the start
    assert run.summary.loads == run.summary.cold_starts == run.summary.removals == 0


def test_periodic_scales_out_after_a_step_up_and_back_in_after_it_without_thrashing():
    step = Piecewise(tuple(f"adapter-{i:04d}" for i in range(40)), (0.0, 2400.0, 4800.0), ((1.0, 3.0, 1.0),))
    fleet = DynamicFleet(zipf(15.0, 7200.0, (step,)), epoch_s=300.0, scorer="surrogate")
    needed = len(Packer(fleet, 0.25).fresh_plan(fleet.rate_table()[10]))  # a fresh packing for the busy rates
    run = replay(get_online_policy("periodic", forecaster="last"), fleet)
    gpus = [r.gpus for r in run.results]
    calm, busy, after = gpus[:6], gpus[10:16], gpus[-3:]
    assert max(busy) > max(calm) and max(after) < max(busy)
    assert max(gpus) <= needed + 1  # make-before-break holds one more replica for an epoch at most
    assert run.summary.cold_starts <= needed + 1 and run.summary.restarts == 0


def test_the_look_ahead_covers_the_coming_epoch_and_a_new_replicas_start_up():
    assert lead_epochs(0.0, 300.0) == 1
    assert lead_epochs(200.0, 300.0) == 2  # a replica launched next epoch serves from inside the one after
    assert lead_epochs(469.0, 300.0) == 3  # 7.8 min (80 slots on Llama-3.1-8B): two epochs ahead
    assert lead_epochs(600.0, 300.0) == 3


def test_the_upper_forecast_is_the_look_ahead_peak_plus_a_per_gpu_margin_shared_by_error_variance():
    expected = np.array([[1.0, 2.0, 3.0], [4.0, 1.0, 3.0]])  # two epochs ahead, three adapters
    assert upper_rates(expected, np.zeros((0, 3)), 2.0, 1).tolist() == [4.0, 2.0, 3.0]  # no errors yet: the peak
    # Errors: adapter 0 missed by +-3 (variance 9), adapter 1 by 4 (variance 16), adapter 2 never (variance 0).
    errors = np.array([[3.0, 4.0, 0.0], [-3.0, 4.0, 0.0]])
    # One GPU: its error's sigma is sqrt(9 + 16) = 5; a 2-sigma margin of 10 is shared 9:16 by variance.
    assert np.allclose(upper_rates(expected, errors, 2.0, 1), [4.0 + 3.6, 2.0 + 6.4, 3.0])
    # Four GPUs, a quarter of the variance each: sigma 2.5 per GPU, so the fleet's margin doubles, not quadruples.
    assert np.allclose(upper_rates(expected, errors, 2.0, 4), [4.0 + 7.2, 2.0 + 12.8, 3.0])
    assert upper_rates(expected, errors, 0.0, 4).tolist() == [4.0, 2.0, 3.0]


def test_a_forecast_error_is_how_far_the_highest_arrival_rate_overshot_the_planned_peak():
    observed = np.array([[1.0, 5.0, 2.0], [3.0, 4.0, 2.0]])  # two epochs of a look-ahead, three adapters
    assert shortfall(observed, np.array([2.0, 6.0, 2.0])).tolist() == [1.0, 0.0, 0.0]  # over-forecasts count 0


def test_the_held_rate_rises_at_once_and_falls_only_after_sustained_low_load():
    series = [1.0, 5.0, 2.0, 2.0, 2.0, 6.0, 1.0]  # one adapter's upper forecast, decision by decision
    plans = [held([np.array([v]) for v in series[: k + 1]], 3)[0] for k in range(len(series))]
    assert plans == [1.0, 5.0, 5.0, 5.0, 2.0, 6.0, 6.0]
    assert [held([np.array([v]) for v in series[: k + 1]], 1)[0] for k in range(len(series))] == series


@pytest.mark.parametrize(("knob", "value", "message"), [
    ("hold_epochs", 0, "hold_epochs: 0 must be an integer >= 1"),
    ("margin_z", -1.0, "margin_z: -1.0 must be in [0, 4]"),
    ("keep_headroom", 5.0, "keep_headroom: 5.0 must be in [0, 4]"),
])
def test_a_bad_replanning_knob_is_one_line_naming_it(knob, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        get_online_policy("periodic", **{knob: value})


def test_make_before_break_adds_new_replicas_before_moving_anything():
    current = {0: ReplicaSpec(("a", "b"), 4, 16), 1: ReplicaSpec(("c",), 4, 16)}
    plan = {0: ReplicaSpec(("a",), 4, 16), 2: ReplicaSpec(("b", "c"), 8, 16)}  # 2 is new: it starts
    assert make_before_break(plan, current) == {**current, 2: plan[2]}
    assert make_before_break(plan, {**current, 2: plan[2]}) == plan  # 2 is in the fleet: the plan stands
    # ... once it is up: while 2 is still starting, nothing moves onto it.
    assert make_before_break(plan, {**current, 2: plan[2]}, settled=False) == {**current, 2: plan[2]}


def test_reactive_splits_a_starved_replica_and_waits_for_the_new_one():
    workload = zipf(12.0, 3600.0, (Piecewise(tuple(f"adapter-{i:04d}" for i in range(40)), (0.0, 900.0),
                                             ((1.0, 4.0),)),))
    fleet = DynamicFleet(workload, epoch_s=300.0, scorer="surrogate")
    policy = get_online_policy("reactive")
    policy.reset(fleet)
    plans = []
    while not fleet.done:
        plans.append(policy.plan(fleet))
        fleet.step(plans[-1])
    split = next(k for k, r in enumerate(fleet.results) if r.changes.cold_starts)
    child = fleet.results[split].changes.cold_starts[0]
    moved = set(plans[split][child].adapters)
    parent = next(rid for rid in plans[split - 1] if moved <= set(plans[split][rid].adapters))
    assert any(r.starved for r in fleet.results[split - 1].replicas)
    assert set(plans[split][child].adapters) <= set(plans[split - 1][parent].adapters)  # it stays on the old one
    served = next(k for k in range(split + 1, len(plans)) if fleet.results[k - 1].replicas and all(
        r.state == "serving" for r in fleet.results[k - 1].replicas))
    assert not set(plans[served][child].adapters) & set(plans[served].get(parent, ReplicaSpec(())).adapters)


def test_replay_cli_prints_totals_and_rejects_bad_input_in_one_line(tmp_path, capsys):
    path = tmp_path / "w.json"
    path.write_text(json.dumps(zipf(10.0, 1800.0).to_dict()))
    base = ["replay", "--workload", str(path), "--epoch", "300", "--scorer", "analytic", "-q"]
    assert main([*base, "--policy", "periodic", "--forecaster", "last", "--json",
                 "--plot", str(tmp_path / "t.png")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["label"] == "periodic (last)" and len(out["epochs"]) == 6 and out["summary"]["slo_share"] is None
    assert out["summary"]["gpu_hours"] == pytest.approx(sum(e["gpu_seconds"] for e in out["epochs"]) / 3600)
    assert (tmp_path / "t.png").stat().st_size > 0
    for args, message in (
        (["--policy", "periodik"], "unknown online policy 'periodik'. Did you mean 'periodic'?"),
        (["--policy", "periodic", "--forecaster", "prophet"], "unknown forecaster 'prophet'"),
        (["--policy", "oracle", "--forecaster", "ewma"], "--forecaster: only the periodic policy forecasts"),
        (["--policy", "oracle", "--epoch", "3600"], "epoch_s: 3600 s is longer than the workload"),
        (["--policy", "periodic", "--forecaster", "holt-winters"], "season"),
        (["--policy", "oracle", "--headroom", "-1"], "--headroom: -1.0 must be between 0 and 4"),
    ):
        assert main([*base, *args]) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1


def test_replays_with_a_seed_are_identical():
    workload = zipf(10.0, 1200.0, (Flash(("adapter-0005",), 300.0, 400.0, 20.0),))

    def run():
        episode = replay(get_online_policy("periodic", forecaster="ewma"),
                         DynamicFleet(workload, seed=3, epoch_s=300.0))
        return [r.info() for r in episode.results], episode.summary

    assert run() == run()


def test_dynamic_leaderboard_in_fast_mode(tmp_path, capsys):
    assert main(["leaderboard", "--suite", "dynamic", "--seeds", "1", "--policies", "static-mean,static-peak",
                 "--agents", "none", "--scorer", "analytic", "--markdown", "--out", str(tmp_path / "rows.csv"),
                 "-q"]) == 0
    out = capsys.readouterr().out
    for family in ("diurnal-v0", "flash-crowd-v0", "drift-v0"):
        assert f"**{family}**" in out and f"- {family}: static-mean starves" in out
    import pandas as pd

    rows = pd.read_csv(tmp_path / "rows.csv")
    assert len(rows) == 6 and (rows["scorer"] == "analytic").all()
    peak = rows[rows["policy"] == "static-peak"].set_index("family")["gpu_hours"]
    mean = rows[rows["policy"] == "static-mean"].set_index("family")["gpu_hours"]
    assert (peak >= mean).all()


def test_the_claim_check_words_a_negative_saving_as_more():
    from baselines.online.leaderboard import _change

    assert (_change(0.25), _change(-0.13), _change(0.0)) == ("25% fewer", "13% more", "0% fewer")


def test_the_ideal_tracker_packs_each_epochs_true_rates_and_with_the_lead_the_coming_peak():
    from baselines.online.ideal import ideal_tracker

    # Calm for 40 min, three times busier for 40 min, calm again: 10-minute epochs, start-up under 10 minutes.
    step = Piecewise(tuple(f"adapter-{i:04d}" for i in range(40)), (0.0, 2400.0, 4800.0), ((1.0, 3.0, 1.0),))
    fleet = DynamicFleet(zipf(15.0, 7200.0, (step,)), epoch_s=600.0, scorer="surrogate", counts_only=True)
    packer = Packer(fleet, 0.25)
    calm, busy = (len(packer.pack(fleet.rate_table()[k])) for k in (0, 4))
    assert busy > calm
    tracker = ideal_tracker(fleet)
    assert tracker.lead == 2  # the coming epoch, and the one a replica launched at its start comes up in
    assert tracker.gpu_hours == pytest.approx((8 * calm + 4 * busy) / 6)  # 12 epochs of 1/6 h
    # With the lead, the epoch before the rise already holds the busy fleet.
    assert tracker.lead_gpu_hours == pytest.approx((7 * calm + 5 * busy) / 6)
    peak = len(packer.pack(fleet.rate_table().max(axis=0))) * 2.0
    assert tracker.gpu_hours < tracker.lead_gpu_hours < peak


def test_a_replica_gets_a_slot_per_adapter_and_keeps_a_group_only_with_that_many():
    fleet = DynamicFleet(zipf(20.0), epoch_s=600.0, scorer="surrogate")
    rates = fleet.rate_table()[0]
    plain, each = Packer(fleet, 0.25), Packer(fleet, 0.25, slot_each=True)
    groups = each.pack(rates)
    assert [g.adapters for g in groups] == [g.adapters for g in plain.pack(rates)]  # the same GPUs
    assert all(g.max_loras >= len(g.adapters) for g in groups)  # 40 adapters fit the levels that start
    group = groups[0]
    few = ReplicaSpec(group.adapters, max_loras=len(group.adapters) // 2, max_lora_rank=group.cover)
    enough = ReplicaSpec(group.adapters, max_loras=group.max_loras, max_lora_rank=group.cover)
    assert each._fits([(group, few), (group, enough)]).tolist() == [False, True]


def test_the_load_is_rising_when_more_arrived_in_the_last_epoch_than_in_the_one_before():
    from baselines.online.policies import rising

    assert rising(np.array([[1.0, 2.0], [2.0, 1.5]]))
    assert not rising(np.array([[1.0, 2.0], [2.0, 1.0]]))  # as much: not rising
    assert not rising(np.array([[1.0, 2.0]]))  # one epoch: nothing to compare


def step_down(adapters: int, total_rate: float):
    """``adapters`` Zipf adapters at 3x ``total_rate`` for 40 minutes, then at ``total_rate`` for 80."""
    workload = powerlaw_workload(adapters, total_rate, alpha=1.0, ranks=(8, 16), rng=np.random.default_rng(0),
                                 duration_s=7200.0)
    return workload.with_schedule((Piecewise(tuple(a.id for a in workload.adapters), (0.0, 2400.0), ((3.0, 1.0),)),))


def test_a_change_that_starts_replicas_is_finished_once_they_serve():
    # 120 adapters on 6 GPUs; when the load falls, the top adapter's replica is short and the re-pack needs three
    # GPUs of more slots: they start, and once they serve the six old ones go. Re-planning from scratch at each
    # decision instead kept adding replicas for each new packing (6 -> 9 -> 11 GPUs here).
    run = replay(get_online_policy("oracle"), DynamicFleet(step_down(120, 40.0), epoch_s=300.0, scorer="surrogate"))
    started = [len(r.changes.cold_starts) for r in run.results]
    first = next(k for k, n in enumerate(started) if n)
    assert sum(started) == started[first]  # one change: no replica started while it completes
    assert max(r.gpus for r in run.results) == run.results[0].gpus + started[first]
    assert run.results[-1].gpus < run.results[0].gpus


def test_a_shrink_only_moves_adapters_onto_running_replicas():
    # 40 adapters on two GPUs of 32 slots; after the fall one GPU would do, but only a new one with more slots:
    # the plan stays (a shrink through new replicas paid their start-up for a GPU less, on diurnal-v0's train
    # seeds again and again).
    run = replay(get_online_policy("oracle"), DynamicFleet(step_down(40, 15.0), epoch_s=300.0, scorer="surrogate"))
    assert not any(r.changes.cold_starts for r in run.results)
    assert {r.gpus for r in run.results} == {run.results[0].gpus}


def test_jobs_that_could_not_run_are_one_line_per_entry_family_and_reason():
    from baselines.online.leaderboard import DynamicBoard

    why = "season_s: holt-winters needs the length of the season"
    board = DynamicBoard(skipped=[("periodic (holt-winters)", "drift-v0", 1, why),
                                  ("periodic (holt-winters)", "drift-v0", 2, why),
                                  ("periodic (holt-winters)", "flash-crowd-v0", 1, why)])
    assert board.skipped_lines() == [f"periodic (holt-winters) could not run on drift-v0 (seeds 1, 2): {why}",
                                     f"periodic (holt-winters) could not run on flash-crowd-v0 (seed 1): {why}"]
    # the placement leaderboard words its refusals the same way, under its table
    from baselines.leaderboard import Board

    static = Board(skipped=[("exact", "zipf-large-v0", 7, "too large"), ("exact", "zipf-large-v0", 9, "too large")])
    assert static.markdown().endswith("\n- exact could not run on zipf-large-v0 (seeds 7, 9): too large")


def test_no_plan_leaves_an_adapter_only_to_replicas_still_starting():
    # diurnal-v0's first test seed: scale-ups take longer than an epoch, so the decision after one often comes
    # while the new replicas start; finishing the change then moved 38-51 adapters onto replicas not yet serving.
    scenario = get_scenario("diurnal-v0")
    seed = scenario.test_seeds[0]
    fleet = DynamicFleet(scenario.workload(seed), seed=seed, epoch_s=300.0, scorer="surrogate",
                         season_s=scenario.season_s)
    policy = get_online_policy("oracle")
    policy.reset(fleet)
    while not fleet.done:
        plan = policy.plan(fleet)
        if fleet.epoch:
            serving = {r.id for r in fleet.results[-1].replicas if r.state == "serving"}
            assert {a for rid, spec in plan.items() if rid in serving for a in spec.adapters} == set(fleet.adapter_ids)
        fleet.step(plan)
    assert fleet.summary().cold_starts > 0  # it did scale


def test_spill_copies_a_starved_replicas_hot_adapter_onto_a_serving_replica_with_a_free_slot():
    # a0 at 50 req/s starves the GPU it shares with two cold adapters (the surrogate: ~36 req/s of these lengths
    # fit one GPU); a copy on the other GPU splits it 25/25 and neither starves. Without a free slot there, or
    # while that replica is still starting, nothing is copied.
    rates = np.array([50.0, 1, 1, 1, 1, 1])
    workload = WorkloadSpec(tuple(AdapterSpec(f"a{i}", 8, float(r)) for i, r in enumerate(rates)),
                            LengthSpec("sharegpt"), duration_s=600.0)
    packer = Packer(DynamicFleet(workload, epoch_s=300.0, scorer="surrogate"), 0.0, slot_each=True)
    plan = {0: ReplicaSpec(("a0", "a1", "a2"), 4, 8), 1: ReplicaSpec(("a3", "a4", "a5"), 4, 8)}
    assert packer.starved(plan, rates, 0.0)
    spilled = packer.spill(plan, rates, {0, 1}, 0.0)
    assert spilled == {0: plan[0], 1: ReplicaSpec(("a3", "a4", "a5", "a0"), 4, 8)}
    assert not packer.starved(spilled, rates, 0.0)
    full = {0: plan[0], 1: ReplicaSpec(("a3", "a4", "a5"), 3, 8)}
    assert packer.spill(full, rates, {0, 1}, 0.0) == full
    assert packer.spill(plan, rates, {0}, 0.0) == plan


@pytest.mark.parametrize("spill", [False, True])
def test_while_new_replicas_start_a_flashed_adapter_is_spilled_onto_a_running_one(spill):
    # A tail adapter of 40 jumps to 12 req/s at 25 min: the re-planner starts replicas for it; with the spill its
    # replica's hottest adapter (the flashed one) is also copied onto a running replica at once (a load, seconds).
    workload = zipf(30.0)
    cold = sorted(workload.adapters, key=lambda a: a.rate)[5]
    workload = workload.with_schedule((Flash((cold.id,), 1500.0, 1200.0, 12.0 / cold.rate),))
    run = replay(get_online_policy("periodic", forecaster="last", spill=spill),
                 DynamicFleet(workload, epoch_s=300.0, scorer="surrogate"))
    growth = next(r for r in run.results if r.changes.cold_starts)
    onto_running = {rid: ids for rid, ids in growth.changes.loads.items() if rid not in growth.changes.cold_starts}
    assert onto_running == ({0: (cold.id,)} if spill else {})
