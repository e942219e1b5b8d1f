"""DynamicFleet (adaptergym.dynamic): per-epoch accounting against hand-computed cases, seeding, bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from adaptergym.dynamic import DynamicFleet, ReplicaSpec
from adaptergym.errors import ConfigError, WorkloadError
from adaptergym.profile import StartupTimeModel
from adaptergym.workload import Flash, cycled_workload
from tests.conftest import toy_profile
from tests.test_twin import batch

LOAD_MS = 25.0  # the toy profile's disk -> CPU -> GPU load of a rank-16 adapter
PREFILL_100_MS = 10 + 2 + 0.02 * 100 + 0.5 * 0.100 + 0.3


def toy(startup_s: float = 12.0):
    return dataclasses.replace(toy_profile(), startup_time=StartupTimeModel(base_s=startup_s, per_lora_slot_s=0.0))


def test_epoch_accounting_by_hand():
    # a0 is served from the start; a1 has no replica in epoch 0 and gets one (a 12-s cold start) at t=10.
    requests = batch([1.0, 2.0, 5.0], [0, 0, 1], [100] * 3, [3] * 3, ranks=(16, 16), duration=30.0)
    fleet = DynamicFleet(requests, toy(), epoch_s=10.0, slo_ttft_ms=1000.0)
    first = fleet.step({0: ReplicaSpec(("a0",))})
    second = fleet.step({0: ReplicaSpec(("a0",)), 1: ReplicaSpec(("a1",))})
    third = fleet.step({0: ReplicaSpec(("a0",)), 1: ReplicaSpec(("a1",))})
    assert [r.gpu_seconds for r in (first, second, third)] == [10.0, 20.0, 20.0]
    # a1's request waits at the router: no replica holds a1 in epoch 0, and its replica is still starting at the
    # end of epoch 1
    assert first.starved.tolist() == [False, True] and second.starved.tolist() == [False, True]
    assert first.starved_adapter_s == 10.0 and third.starved_adapter_s == 0.0
    # TTFT: a0's first request loads a0 on first use (25 ms), its second finds it in its slot.
    assert first.p99_ttft_ms == pytest.approx(np.percentile([PREFILL_100_MS + LOAD_MS, PREFILL_100_MS], 99))
    assert (first.slo_judged, first.slo_met) == (3, 2)  # a1's deadline (6 s) passes in epoch 0, unmet
    assert (first.held, second.held, third.held) == (1, 1, 0)
    ready = 10.0 + 12.0
    a1_ttft_ms = (ready + (LOAD_MS + PREFILL_100_MS) / 1000.0 - 5.0) * 1000.0
    assert third.p99_ttft_ms == pytest.approx(a1_ttft_ms, rel=1e-9)
    assert second.changes.cold_starts == (1,) and second.changes.adapter_loads == 1
    summary = fleet.summary()
    assert summary.gpu_hours == pytest.approx(50.0 / 3600.0)
    assert summary.starved_adapter_minutes == pytest.approx(20.0 / 60.0)
    assert (summary.finished, summary.refused, summary.unfinished) == (3, 0, 0)
    assert summary.slo_share == pytest.approx(2 / 3) and summary.cold_starts == 1
    with pytest.raises(ConfigError, match="the episode is over"):
        fleet.step({})


def test_fast_mode_counts_a_replica_only_from_when_it_serves():
    requests = batch(np.linspace(0.0, 19.9, 200), [0, 1] * 100, [100] * 200, [50] * 200, ranks=(16, 16),
                     duration=20.0)
    fleet = DynamicFleet(requests, toy(5.0), epoch_s=10.0, scorer="analytic")
    fleet.step({0: ReplicaSpec(("a0", "a1"))})
    result = fleet.step({0: ReplicaSpec(("a0",)), 1: ReplicaSpec(("a1",))})
    # Replica 1 cold-starts for 5 s of the 10-s epoch: a1 is served at most half of what it is offered.
    assert result.gpu_seconds == 20.0 and result.scorer == "analytic"
    assert result.served_tok_s[1] <= 0.5 * result.offered_tok_s[1] + 1e-9 and result.starved.tolist() == [False, True]
    assert {r.id: r.state for r in result.replicas} == {0: "serving", 1: "serving"}
    assert result.slo_share is None and result.p99_ttft_ms is None
    assert fleet.summary().p99_ttft_ms is None


@pytest.mark.parametrize("scorer", ["twin", "surrogate"])
def test_the_same_seed_and_plans_give_identical_results(scorer):
    workload = cycled_workload(6, [2.0, 1.0], [8, 16], duration_s=600.0)
    workload = workload.with_schedule((Flash(("adapter-0001",), 200.0, 200.0, 4.0),))

    def run() -> list[dict]:
        fleet = DynamicFleet(workload, seed=7, epoch_s=150.0, scorer=scorer)
        ids = fleet.adapter_ids
        out = []
        for k in range(fleet.epochs):
            plan = {0: ReplicaSpec(ids[:3], 4), 1: ReplicaSpec(ids[3:], 4)} if k % 2 else {0: ReplicaSpec(ids, 8)}
            result = fleet.step(plan)
            out.append({**result.info(), "served": result.served_tok_s.tolist(), "starved": result.starved.tolist()})
        return out

    assert run() == run()


def test_true_and_observed_rates_follow_the_schedule():
    workload = cycled_workload(2, [1.0], [16], duration_s=1200.0).with_schedule(
        (Flash(("adapter-0000",), 300.0, 300.0, 5.0),))
    fleet = DynamicFleet(workload, seed=0, epoch_s=300.0, scorer="analytic")
    assert fleet.rate_table()[:, 0].tolist() == [1.0, 5.0, 1.0, 1.0]
    assert fleet.observed_rates().shape == (0, 2)
    fleet.step({0: ReplicaSpec(fleet.adapter_ids)})
    fleet.step({0: ReplicaSpec(fleet.adapter_ids)})
    observed = fleet.observed_rates()
    assert observed.shape == (2, 2) and observed[1, 0] > 3 * observed[0, 0]
    assert fleet.true_rates().tolist() == [1.0, 1.0]  # the coming epoch


def test_bad_input_is_one_line_error():
    workload = cycled_workload(2, [1.0], [16], duration_s=600.0)
    with pytest.raises(WorkloadError, match="epoch_s: 900 s is longer than the workload"):
        DynamicFleet(workload, epoch_s=900.0)
    with pytest.raises(WorkloadError, match="epoch_s"):
        DynamicFleet(workload, epoch_s=-1.0)
    with pytest.raises(ConfigError, match="scorer: 'exact' is not one of twin, surrogate, analytic"):
        DynamicFleet(workload, scorer="exact")
    with pytest.raises(ConfigError, match="slo_ttft_ms"):
        DynamicFleet(workload, slo_ttft_ms=0.0)
    fleet = DynamicFleet(workload, epoch_s=300.0, scorer="analytic")
    with pytest.raises(ConfigError, match=r"plan\[0\].max_loras: 0 must be"):
        fleet.step({0: ReplicaSpec(fleet.adapter_ids, 0)})
