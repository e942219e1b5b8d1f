"""Reconfiguring a fleet while it serves (adaptergym.twin.online_fleet), against hand-computed cases.

The toy profile's numbers (tests/conftest.py): a rank-16 adapter loads from disk in 20 ms and into a GPU slot in
5 ms; a step costs 10 ms + 2 ms LoRA + 0.02 ms per prefill token + 0.5 ms per 1,000 context tokens + 0.3 ms per
adapter in the batch (no scheduler overhead). Start-up time is set to 100 s + 1 s per GPU slot below.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from adaptergym import ServerConfig
from adaptergym.errors import ConfigError
from adaptergym.profile import StartupTimeModel
from adaptergym.simulation import draw_requests
from adaptergym.twin import check_startup, frameworks
from adaptergym.twin.compiled_engine import CompiledEngine
from adaptergym.twin.engine import ReferenceEngine
from adaptergym.twin.fleet_plan import ReplicaSpec, plan_changes
from adaptergym.twin.online_fleet import FAILED, SERVING, STARTING, OnlineFleet
from adaptergym.workload import cycled_workload
from tests.conftest import toy_profile, with_api_server_hold
from tests.test_twin import batch

LOAD_MS = 20.0 + 5.0  # disk -> CPU -> GPU of a rank-16 adapter
PREFILL_100_MS = 10 + 2 + 0.02 * 100 + 0.5 * 0.100 + 0.3  # one 100-token prompt, its adapter already in a slot


def profile():
    return dataclasses.replace(toy_profile(), startup_time=StartupTimeModel(base_s=100.0, per_lora_slot_s=1.0))


def held_up(hold_ms: float):
    """``profile()`` whose API servers hold a request of an adapter they have not resolved for ``hold_ms``."""
    return with_api_server_hold(profile(), hold_ms)


def ttft_ms(fleet: OnlineFleet, k: int) -> float:
    snap = fleet.snapshot()
    return (snap.first_token_s[k] - snap.arrival_s[k]) * 1000.0


def test_a_migration_costs_exactly_its_load_times():
    # Request 0 (a1, t=1) makes a1 resident on replica 1 in the control; request 1 (a1) arrives exactly when a1
    # moves from replica 0 to replica 1.
    requests = batch([1.0, 10.0], [1, 1], [100, 100], [3, 3], ranks=(16, 16))
    moved = OnlineFleet(profile(), requests)
    moved.apply({0: ReplicaSpec(("a0", "a1")), 1: ReplicaSpec(("a0",))}, warm=True)
    moved.run_until(10.0)
    changes = moved.apply({0: ReplicaSpec(("a0",)), 1: ReplicaSpec(("a0", "a1"))})
    moved.run_until(100.0)
    control = OnlineFleet(profile(), requests)
    control.apply({0: ReplicaSpec(("a0",)), 1: ReplicaSpec(("a0", "a1"))}, warm=True)
    control.run_until(100.0)
    assert changes.migrations == 1 and changes.loads == {1: ("a1",)} and changes.unloads == {0: ("a1",)}
    assert moved.counts.load_ms == pytest.approx(LOAD_MS)
    assert ttft_ms(control, 1) == pytest.approx(PREFILL_100_MS, rel=1e-9)
    assert ttft_ms(moved, 1) - ttft_ms(control, 1) == pytest.approx(LOAD_MS, rel=1e-6)
    assert moved.snapshot().replica.tolist() == [0, 1]


def test_a_restart_serves_nothing_for_exactly_the_start_up_time():
    requests = batch([10.0, 50.0, 113.0, 200.0], [0, 0, 0, 0], [100] * 4, [3] * 4)
    fleet = OnlineFleet(profile(), requests)
    fleet.apply({0: ReplicaSpec(("a0",), max_loras=8)}, warm=True)
    fleet.run_until(10.0)
    changes = fleet.apply({0: ReplicaSpec(("a0",), max_loras=4)})
    assert changes.restarts == (0,) and fleet.states() == {0: STARTING}
    fleet.run_until(300.0)
    snap = fleet.snapshot()
    ready = 10.0 + 100.0 + 4 * 1.0
    # The three requests held while it restarted start together once it has loaded a0 again: one step of three
    # 100-token prompts.
    three_prefills_ms = 10 + 2 + 0.02 * 300 + 0.5 * 0.300 + 0.3
    assert snap.first_token_s[:3] == pytest.approx([ready + (LOAD_MS + three_prefills_ms) / 1000.0] * 3, abs=1e-9)
    assert ttft_ms(fleet, 3) == pytest.approx(PREFILL_100_MS, rel=1e-9)
    assert fleet.gpu_seconds(0.0, 300.0) == pytest.approx(300.0)  # one GPU all along
    assert fleet.counts.restarts == 1 and fleet.counts.loads == 1


def test_a_cold_start_serves_after_the_start_up_time_and_held_requests_wait_for_it():
    requests = batch([5.0, 20.0, 150.0], [1, 1, 0], [100] * 3, [3] * 3, ranks=(16, 16))
    fleet = OnlineFleet(profile(), requests)
    fleet.apply({0: ReplicaSpec(("a0",))}, warm=True)  # a1 is on no replica: its requests wait at the router
    fleet.run_until(10.0)
    assert fleet.held() == 1
    fleet.apply({0: ReplicaSpec(("a0",)), 1: ReplicaSpec(("a1",), max_loras=8)})
    fleet.run_until(200.0)
    ready = 10.0 + 100.0 + 8.0
    two_prefills_ms = 10 + 2 + 0.02 * 200 + 0.5 * 0.200 + 0.3
    snap = fleet.snapshot()
    assert snap.first_token_s[:2] == pytest.approx([ready + (LOAD_MS + two_prefills_ms) / 1000.0] * 2, abs=1e-9)
    assert snap.replica.tolist() == [1, 1, 0]
    assert fleet.gpu_seconds(0.0, 200.0) == pytest.approx(200.0 + 190.0)
    assert fleet.counts.cold_starts == 1


def test_a_removed_replica_drains_and_hands_its_queued_requests_back():
    # Replica 1 has one slot: a1's long request runs, a2's waits for the slot. Removing replica 1 lets the long
    # request finish there and sends a2's to replica 0.
    requests = batch([1.0, 1.0], [1, 2], [100, 100], [2000, 3], ranks=(16, 16, 16))
    fleet = OnlineFleet(profile(), requests)
    fleet.apply({0: ReplicaSpec(("a0",)), 1: ReplicaSpec(("a1", "a2"), max_loras=1)}, warm=True)
    fleet.run_until(5.0)
    fleet.apply({0: ReplicaSpec(("a0", "a1", "a2"))})
    fleet.run_until(200.0)
    snap = fleet.snapshot()
    assert snap.replica.tolist() == [1, 0]
    assert snap.finish_s[0] > 5.0 and snap.first_token_s[0] < 5.0  # it ran on through the change
    assert snap.first_token_s[1] > 5.0
    drained = snap.finish_s[0]
    assert fleet.gpu_seconds(0.0, 200.0) == pytest.approx(200.0 + drained)
    assert fleet.counts.removals == 1


@pytest.mark.parametrize("hold_ms", [0.0, 300.0])  # API servers holding new adapters' requests up, or not
@pytest.mark.parametrize("router", ["even", "least-loaded"])
def test_every_request_ends_exactly_once_across_changes(router, hold_ms):
    workload = dataclasses.replace(cycled_workload(12, [4.0, 2.0, 0.5], [8, 16], duration_s=240.0), name="busy")
    requests = draw_requests(workload, seed=3)
    ids = requests.adapter_ids
    fleet = OnlineFleet(held_up(hold_ms), requests, router=router)
    plans = [
        {0: ReplicaSpec(ids[:6], 2), 1: ReplicaSpec(ids[6:], 2)},
        {0: ReplicaSpec(ids[:4], 2), 1: ReplicaSpec(ids[4:], 4), 2: ReplicaSpec(ids[:8], 4)},  # restart, new
        {1: ReplicaSpec(ids[4:], 4), 2: ReplicaSpec(ids[:9], 4)},  # removal (ids[9:] on 1 only)
        {1: ReplicaSpec(ids[4:], 4), 2: ReplicaSpec(ids[:6], 4), 3: ReplicaSpec(ids[2:], 2)},
        {3: ReplicaSpec((), 2)},  # nothing served for a while: everything waits at the router
        {3: ReplicaSpec(ids, 2), 4: ReplicaSpec(ids, 8)},
    ]
    for k, plan in enumerate(plans):
        fleet.apply(plan, warm=k == 0)
        fleet.run_until(40.0 * (k + 1))
        assert (fleet.holders() == 1).all()
    snap = fleet.snapshot()
    assert snap.arrival_s.size == len(requests)
    finished = np.isfinite(snap.finish_s) & (snap.finish_s <= 240.0)
    unfinished = ~finished & ~snap.refused
    assert finished.sum() + snap.refused.sum() + unfinished.sum() == len(requests)
    assert finished.any() and unfinished.any()  # restarts take 102-108 s here: some wait past the end
    started = np.isfinite(snap.first_token_s)
    assert (snap.first_token_s[started] >= snap.reached_s[started]).all()
    assert (snap.reached_s[started] >= snap.arrival_s[started] - 1e-9).all()  # the FIFO's unrolled sums round
    assert (snap.finish_s[finished] >= snap.first_token_s[finished]).all()


def test_both_engines_serve_a_held_up_changing_fleet_alike(monkeypatch):
    """API servers hand each engine requests that arrive after its clock, later than they were sent, some then
    routed away (least-loaded): the reference and compiled engines take them identically."""
    requests = draw_requests(cycled_workload(8, [3.0, 1.0], [8, 16], duration_s=120.0), seed=4)
    ids = requests.adapter_ids
    plans = [{0: ReplicaSpec(ids[:6], 4), 1: ReplicaSpec(ids[3:], 4)},
             {0: ReplicaSpec(ids[:4], 4), 1: ReplicaSpec(ids[1:], 4)},
             {0: ReplicaSpec(ids, 4), 1: ReplicaSpec(ids[6:], 4), 2: ReplicaSpec(ids[:5], 2)}]
    snaps = []
    for engine in ENGINES:
        monkeypatch.setattr(frameworks, "ReplicaEngine", engine)
        fleet = OnlineFleet(held_up(300.0), requests, router="least-loaded")
        for k, plan in enumerate(plans):
            fleet.apply(plan, warm=k == 0)
            fleet.run_until(40.0 * (k + 1))
        snaps.append(fleet.snapshot())
    reference, compiled = snaps
    assert np.nanmax(reference.reached_s - reference.arrival_s) > 0.3  # some waited behind a new adapter
    for name in ("first_token_s", "finish_s", "reached_s", "replica", "refused"):
        assert np.array_equal(getattr(reference, name), getattr(compiled, name), equal_nan=True), name


def test_a_plan_vllm_would_refuse_is_an_outcome_and_a_bad_plan_an_error():
    requests = batch([1.0], [0], [100], [3])
    fleet = OnlineFleet(profile(), requests)
    fleet.apply({0: ReplicaSpec(("a0",), max_loras=1)}, warm=True)
    huge = dataclasses.replace(profile().memory, lora_slot_gib_fixed=1.0)
    refusing = OnlineFleet(dataclasses.replace(profile(), memory=huge), requests)
    refusing.apply({0: ReplicaSpec(("a0",), max_loras=64)}, warm=True)  # 64 GiB of slots on a 10-GiB GPU
    refusing.run_until(10.0)
    assert refusing.states() == {0: FAILED} and fleet.states() == {0: SERVING}
    assert refusing.replicas[0].startup.status == "oom" and refusing.held() == 1
    assert refusing.gpu_seconds(0.0, 10.0) == pytest.approx(10.0)
    with pytest.raises(ConfigError, match=r"plan\[0\].adapters: \['zz'\]"):
        fleet.apply({0: ReplicaSpec(("zz",))})
    with pytest.raises(ConfigError, match=r"plan\[2\].max_lora_rank: 8 is below"):
        fleet.apply({2: ReplicaSpec(("a0",), max_lora_rank=8)})


# ---------------------------------------------------------------------- the API server ahead of each replica
@pytest.mark.parametrize("hold_ms", [300.0, 10.0])
def test_a_migrated_adapters_first_request_waits_for_the_api_server_beside_the_load(hold_ms):
    # As in the migration above, with a third request of a1 at t=20. Replica 1's API server has not resolved a1:
    # request 1 reaches its engine hold_ms after it was sent, while the engine loads a1 (25 ms, from t=10), so
    # its TTFT is the longer of the two plus its prefill. Request 2 passes straight through.
    requests = batch([1.0, 10.0, 20.0], [1, 1, 1], [100] * 3, [3] * 3, ranks=(16, 16))
    fleet = OnlineFleet(held_up(hold_ms), requests)
    fleet.apply({0: ReplicaSpec(("a0", "a1")), 1: ReplicaSpec(("a0",))}, warm=True)
    fleet.run_until(10.0)
    fleet.apply({0: ReplicaSpec(("a0",)), 1: ReplicaSpec(("a0", "a1"))})
    fleet.run_until(100.0)
    snap = fleet.snapshot()
    assert snap.replica.tolist() == [0, 1, 1]
    assert (snap.reached_s - snap.arrival_s).tolist() == pytest.approx([0.0, hold_ms / 1000.0, 0.0], abs=1e-12)
    assert fleet.counts.load_ms == pytest.approx(LOAD_MS)  # the engine's (GPU's) cost is the load's alone
    assert ttft_ms(fleet, 1) == pytest.approx(max(hold_ms, LOAD_MS) + PREFILL_100_MS, rel=1e-9)
    assert ttft_ms(fleet, 2) == pytest.approx(PREFILL_100_MS, rel=1e-9)


def test_a_cold_starts_api_server_passes_k_new_adapters_k_hold_ups_apart():
    # a1, a2, a3's first requests wait at the router for replica 1's cold start, and go out together when it
    # serves (t=118, its adapters loaded by 118.075): its API server passes them 0.3 s apart, each prefilled at
    # once. a1's next request passes straight through.
    requests = batch([5.0, 5.0, 5.0, 150.0], [1, 2, 3, 1], [100] * 4, [3] * 4, ranks=(16,) * 4)
    fleet = OnlineFleet(held_up(300.0), requests)
    fleet.apply({0: ReplicaSpec(("a0",))}, warm=True)
    fleet.run_until(10.0)
    fleet.apply({0: ReplicaSpec(("a0",)), 1: ReplicaSpec(("a1", "a2", "a3"), max_loras=8)})
    fleet.run_until(200.0)
    ready = 10.0 + 100.0 + 8.0
    snap = fleet.snapshot()
    assert snap.reached_s.tolist() == pytest.approx([ready + 0.3, ready + 0.6, ready + 0.9, 150.0], abs=1e-9)
    assert snap.first_token_s == pytest.approx(snap.reached_s + PREFILL_100_MS / 1000.0, abs=1e-9)
    assert fleet.counts.load_ms == pytest.approx(3 * LOAD_MS)


def test_a_restart_starts_its_api_server_cold_and_requests_behind_a_new_adapter_wait():
    # As in the restart above: the three requests held while it restarted go out at t=114; the first (a0, new to
    # the restarted server) passes at 114.3, the two behind it with it; the engine loaded a0 by 114.025.
    requests = batch([10.0, 50.0, 113.0, 200.0], [0, 0, 0, 0], [100] * 4, [3] * 4)
    fleet = OnlineFleet(held_up(300.0), requests)
    fleet.apply({0: ReplicaSpec(("a0",), max_loras=8)}, warm=True)
    fleet.run_until(10.0)
    fleet.apply({0: ReplicaSpec(("a0",), max_loras=4)})
    fleet.run_until(300.0)
    snap = fleet.snapshot()
    three_prefills_ms = 10 + 2 + 0.02 * 300 + 0.5 * 0.300 + 0.3
    assert snap.reached_s.tolist() == pytest.approx([114.3, 114.3, 114.3, 200.0], abs=1e-9)
    assert snap.first_token_s[:3] == pytest.approx([114.3 + three_prefills_ms / 1000.0] * 3, abs=1e-9)
    assert ttft_ms(fleet, 3) == pytest.approx(PREFILL_100_MS, rel=1e-9)


def test_the_first_plans_api_servers_are_warm_and_a_runtime_load_resolves_nothing():
    # The episode's first fleet has resolved a0-a2: their first requests pass straight through. a3, loaded at
    # runtime at t=10, is new to the API server (10.5 -> 10.8); a1, unloaded at t=5 and loaded again at t=10, is
    # still resolved there.
    requests = batch([1.0, 1.0, 1.0, 10.5, 10.5, 30.0], [0, 1, 2, 1, 3, 3], [100] * 6, [3] * 6, ranks=(16,) * 4)
    fleet = OnlineFleet(held_up(300.0), requests)
    fleet.apply({0: ReplicaSpec(("a0", "a1", "a2"))}, warm=True)
    fleet.run_until(5.0)
    fleet.apply({0: ReplicaSpec(("a0", "a2"))})
    fleet.run_until(10.0)
    fleet.apply({0: ReplicaSpec(("a0", "a1", "a2", "a3"))})
    fleet.run_until(60.0)
    snap = fleet.snapshot()
    assert snap.reached_s.tolist() == pytest.approx([1.0, 1.0, 1.0, 10.5, 10.8, 30.0], abs=1e-9)
    assert (fleet.holders() == 1).all() and np.isfinite(snap.finish_s).all()


def test_least_loaded_submits_to_every_holder_so_each_ones_api_server_passes_the_request():
    # a1, loaded at runtime on both replicas, is new to both API servers: its request at t=20 holds both up until
    # 20.3 (it goes to replica 0, both being idle), and a0's request at 20.1 waits behind it there.
    requests = batch([20.0, 20.1], [1, 0], [100, 100], [3, 3], ranks=(16, 16))
    fleet = OnlineFleet(held_up(300.0), requests, router="least-loaded")
    fleet.apply({0: ReplicaSpec(("a0",)), 1: ReplicaSpec(("a0",))}, warm=True)
    fleet.run_until(10.0)
    fleet.apply({0: ReplicaSpec(("a0", "a1")), 1: ReplicaSpec(("a0", "a1"))})
    fleet.run_until(60.0)
    snap = fleet.snapshot()
    assert snap.replica.tolist() == [0, 0] and snap.reached_s.tolist() == pytest.approx([20.3, 20.3], abs=1e-9)
    assert fleet.replicas[1].api_server.free_s == pytest.approx(20.3)


def test_plan_changes_name_each_kind_of_change():
    ranks = {"a": 8, "b": 8, "c": 64}
    old = {0: ReplicaSpec(("a", "b")), 1: ReplicaSpec(("b",)), 2: ReplicaSpec(("a",))}
    new = {0: ReplicaSpec(("a",)), 1: ReplicaSpec(("b", "c")), 3: ReplicaSpec(("a", "b"))}
    changes = plan_changes(old, new, ranks, cpu_slots=3)
    # Replica 1's derived max_lora_rank goes from 8 to 64 (adapter c): a restart, loading all it serves.
    assert changes.restarts == (1,) and changes.cold_starts == (3,) and changes.removals == (2,)
    assert changes.loads == {1: ("b", "c"), 3: ("a", "b")} and changes.unloads == {0: ("b",)}
    assert changes.migrations == 2  # b leaves 0 for 3; a leaves 2 for 3


# ---------------------------------------------------------------------- the engine's public methods for it
ENGINES = [ReferenceEngine, CompiledEngine]


def make(engine: type, requests, **config):
    """An engine of class ``engine`` on the toy profile (4 slots, max_lora_rank 16 unless ``config`` says)."""
    cfg = ServerConfig(**{"max_loras": 4, "max_lora_rank": 16, **config}).resolved(toy_profile())
    return engine(toy_profile(), cfg, requests, check_startup(toy_profile(), cfg))


@pytest.mark.parametrize("engine", ENGINES)
def test_submit_many_is_submit_one_by_one(engine):
    requests = draw_requests(cycled_workload(3, [5.0], [16], duration_s=20), seed=1)
    empty = batch([], [], [], [], ranks=(16, 16, 16))
    one, many = make(engine, empty), make(engine, empty)
    for k in range(len(requests)):
        one.submit(float(requests.arrival_s[k]), int(requests.adapter[k]), int(requests.input_tokens[k]),
                   int(requests.output_tokens[k]))
    many.submit_many(requests.arrival_s, requests.adapter, requests.input_tokens, requests.output_tokens)
    one.run_until(20.0)
    many.run_until(20.0)
    n = len(requests)
    assert np.array_equal(one.finish_s[:n], many.finish_s[:n], equal_nan=True) and one.n_requests == n
    with pytest.raises(ValueError, match="time order"):
        many.submit_many([1.0], [0], [10], [10])


@pytest.mark.parametrize("engine", ENGINES)
def test_take_back_returns_queued_and_future_requests_but_not_preempted_or_running_ones(engine):
    # One slot: a0's request runs; a1's two wait for the slot; a1's third arrives later.
    requests = batch([0.0, 0.0, 0.0, 50.0], [0, 1, 1, 1], [100] * 4, [500, 3, 3, 3], ranks=(16, 16))
    taking = make(engine, requests, max_loras=1)
    taking.run_until(1.0)
    assert taking.n_running == 1 and taking.n_waiting == 2
    assert taking.take_back([1]) == [1, 2, 3]
    assert taking.n_waiting == 0 and taking.take_back() == []
    taking.run_until(100.0)
    assert taking.record(100.0).arrival_s.tolist() == [0.0]  # the taken requests are another replica's now


@pytest.mark.parametrize("engine", ENGINES)
def test_load_adapter_stalls_the_engine_for_its_load_time(engine):
    idle = make(engine, batch([], [], [], [], ranks=(16, 16)), max_loras=1)
    idle.run_until(5.0)
    assert idle.load_adapter(1) == pytest.approx(LOAD_MS)
    assert idle.now == pytest.approx(5.0 + LOAD_MS / 1000.0)
    assert idle.load_adapter(1) == 0.0  # already in its slot
    busy = make(engine, batch([0.0], [0], [100], [500], ranks=(16, 16)), max_loras=1)
    busy.run_until(1.0)  # a0's request holds the only slot, yet vLLM's add_lora evicts a0 for a1 (it reloads next step)
    assert busy.load_adapter(1) == pytest.approx(LOAD_MS)
    assert busy.unload_adapter(1) == []  # nothing of a1 was queued


@pytest.mark.parametrize("engine", ENGINES)
def test_a_load_that_evicts_a_running_adapter_makes_the_next_step_reload_it(engine):
    """max_loras = max_cpu_loras = 2; a0 and a1 decode from t = 0; a2 is loaded at runtime at t = 1 s.

    The CPU cache holds only a0 and a1, both running: vLLM's add_lora evicts the one the last step's walk touched
    first, from both tiers, and copies a2 into its slot: 20 ms disk->CPU + 5 ms CPU->GPU (rank 16 in the toy
    profile's tables), the engine waiting. The next step applies the batch's adapters again: the evicted one
    comes back from disk (20 ms) into a full CPU cache, evicting the other running adapter (touched before a2
    was loaded), and is copied into the slot that one freed (5 ms); the other comes back the same way (20 + 5 ms),
    evicting a2. That step takes 2 x (20 + 5) = 50 ms longer, every later step as long as without the load, so
    both requests finish 25 + 50 = 75 ms later than on an engine that loads nothing."""
    requests = batch([0.0, 0.0], [0, 1], [100, 100], [400, 400], ranks=(16, 16, 16))
    control, loaded = (make(engine, requests, max_loras=2, max_cpu_loras=2) for _ in range(2))
    for e in (control, loaded):
        e.run_until(1.0)
    assert loaded.n_running == 2 and loaded.load_adapter(2) == pytest.approx(LOAD_MS)
    for e in (control, loaded):
        e.run_until(100.0)
    assert loaded.finish_s[:2] - control.finish_s[:2] == pytest.approx([0.075, 0.075], abs=1e-9)
    assert (loaded.loads_from_disk, loaded.loads_from_cpu) == (5, 5)  # a0, a1 at t = 0; a2; a0 and a1 again


@pytest.mark.parametrize("engine", ENGINES)
def test_unloading_a_running_adapter_makes_the_next_step_read_it_back_from_disk(engine):
    """a0 and a1 decode from t = 0 in 4 slots; a0 is unloaded at t = 1 s while its request runs on (vLLM's
    ``remove_lora`` drops it from the GPU and the CPU cache). vLLM's next step applies the batch's adapters again,
    reading a0 back from disk (20 ms) into a slot (5 ms): both requests finish 25 ms later than on an engine that
    unloads nothing. Unloading a2, which nothing runs, costs no step anything."""
    requests = batch([0.0, 0.0], [0, 1], [100, 100], [400, 400], ranks=(16, 16, 16))
    control, unloaded, idle = (make(engine, requests) for _ in range(3))
    for e in (control, unloaded, idle):
        e.run_until(1.0)
    assert unloaded.unload_adapter(0) == [] and idle.unload_adapter(2) == []
    for e in (control, unloaded, idle):
        e.run_until(100.0)
    assert unloaded.finish_s[:2] - control.finish_s[:2] == pytest.approx([0.025, 0.025], abs=1e-9)
    assert (unloaded.loads_from_disk, unloaded.loads_from_cpu) == (3, 3)  # a0, a1 at t = 0; a0 again
    assert np.array_equal(idle.finish_s[:2], control.finish_s[:2])


def test_the_compiled_engine_reconfigures_as_the_reference_does():
    """Loads, take-backs and unloads interleaved with a busy run give identical requests in both engines."""
    requests = draw_requests(cycled_workload(6, [3.0, 1.0], [8, 16], duration_s=120.0), seed=5)
    empty = batch([], [], [], [], ranks=tuple(int(r) for r in requests.adapter_ranks))
    engines = [make(engine, empty, max_loras=2) for engine in ENGINES]
    taken = [[], []]
    for k, engine in enumerate(engines):
        half = requests.arrival_s < 60.0
        engine.submit_many(requests.arrival_s[half], requests.adapter[half], requests.input_tokens[half],
                           requests.output_tokens[half])
        engine.run_until(30.0)
        taken[k].append(engine.take_back([1, 3]))
        engine.load_adapter(4)
        engine.run_until(45.0)
        taken[k].append(engine.unload_adapter(0))
        engine.load_adapter(0)
        rest = ~half
        engine.submit_many(requests.arrival_s[rest], requests.adapter[rest], requests.input_tokens[rest],
                           requests.output_tokens[rest])
        engine.run_until(120.0)
    reference, compiled = engines
    n = len(requests)
    assert taken[0] == taken[1] and all(taken[0])
    for name in ("first_token_s", "finish_s", "preemptions"):
        assert np.array_equal(getattr(reference, name)[:n], getattr(compiled, name)[:n], equal_nan=True), name
    assert reference.flag_codes()[:n].tolist() == compiled.flag_codes()[:n].tolist()
    assert reference.now == compiled.now and reference.loads_from_disk == compiled.loads_from_disk
