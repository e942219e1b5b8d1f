"""Judging a long run from part of it lands where simulating all of it does."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from adaptergym import ServerConfig
from adaptergym.long_runs import judge_run, refused_arrivals
from adaptergym.metrics import summarize
from adaptergym.simulation import draw_requests
from adaptergym.workload import cycled_workload
from tests.conftest import toy_profile


@pytest.mark.parametrize("adapters, max_loras, rate", [
    (4, 4, 5.0),  # every adapter has a slot: first come, first served, extrapolated as a fluid queue
    (12, 3, 3.0),  # adapters compete for slots: a settled window and Little's law
])
def test_an_overloaded_run_judged_from_part_of_it_matches_the_whole_run(adapters, max_loras, rate):
    profile = toy_profile(kv_tokens=40_000, max_model_len=2048)
    profile = dataclasses.replace(profile, engine=dataclasses.replace(profile.engine, max_waiting_requests=400))
    requests = draw_requests(cycled_workload(adapters, [rate], [16], duration_s=2400), seed=3)
    config = ServerConfig(max_loras=max_loras, max_lora_rank=16).resolved(profile)
    short, simulated = judge_run(profile, config, requests)
    full, _ = judge_run(profile, config, requests, full=True)
    assert simulated.sim_time_s < 0.5 * requests.duration_s  # the shortcut was taken
    assert full["total_throughput"] < 0.7 * full["offered_throughput"]  # overloaded all along
    # Slot-bound service is noisy: in the 12-adapter case, 300-s windows of the full run serve 3,360-3,750
    # tokens/s, so the 450-s window the shortcut extrapolates can land 5% off the hour's mean.
    for name, tolerance in (("total_throughput", 0.05), ("mean_itl_ms", 0.02), ("mean_tpot_ms", 0.04),
                            ("mean_ttft_ms", 0.05)):
        assert short[name] == pytest.approx(full[name], rel=tolerance), name


def test_refusals_at_a_full_queue_follow_the_queue_arrival_by_arrival():
    rng = np.random.default_rng(0)
    arrival = np.cumsum(rng.exponential(0.1, 2000))
    queued, rate, capacity = 45, 8.0, 50
    expected, waiting, last = [], float(queued), 0.0
    for t in arrival:
        waiting = waiting - rate * (t - last)  # the fluid drains (the formula lets it go below zero too)
        last = t
        expected.append(waiting >= capacity)
        waiting += 0 if expected[-1] else 1
    assert refused_arrivals(queued, arrival, rate, capacity).tolist() == expected
    assert 0 < sum(expected) < len(expected)


def test_a_kept_up_run_counts_its_warm_up_once():
    # Every adapter's first request waits for a 400-ms load from disk, all within the first minutes: the first 900 s
    # hold the hour's warm-up, so the window's own mean TTFT is far above the hour's; counting the window once
    # and its second half for the rest of the hour lands where the whole hour does.
    profile = toy_profile()
    profile = dataclasses.replace(profile, loading=dataclasses.replace(profile.loading, disk_to_cpu_ms={"16": 400.0}))
    requests = draw_requests(cycled_workload(40, [0.05], [16], duration_s=3600), seed=1)
    config = ServerConfig(max_loras=40, max_lora_rank=16).resolved(profile)
    short, simulated = judge_run(profile, config, requests)
    full, _ = judge_run(profile, config, requests, full=True)
    window = summarize(simulated)
    assert simulated.duration_s == 900.0  # judged from its first 900 s
    assert window.mean_ttft_ms > 1.25 * full["mean_ttft_ms"]  # the warm-up weighs four times too much in it
    for name in ("total_throughput", "mean_itl_ms", "mean_tpot_ms", "mean_ttft_ms"):
        assert short[name] == pytest.approx(full[name], rel=0.03), name
