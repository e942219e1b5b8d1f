"""Placement verification: per-GPU runs agree with the fleet twin, light GPUs get a long enough window, and a
verdict is reproduced by the `adaptergym simulate` command it spells."""

from __future__ import annotations

import json

import pytest

from adaptergym import ReplicaPlan, ServerConfig, load_profile, simulate_placement
from adaptergym.cli.main import main
from adaptergym.placement import (
    MIN_VERIFIED_REQUESTS,
    VERIFY_DURATION_S,
    GpuAssignment,
    Placement,
    gpu_workload,
    verify,
)
from adaptergym.workload import AdapterSpec, WorkloadSpec

PROFILE = load_profile(None)


def test_per_gpu_verification_agrees_with_the_fleet_under_even_routing():
    """Adapter a0 is on both GPUs: each verification run serves half its rate, as the fleet's even split does.
    The runs draw different requests, so an hour keeps sampling noise (about 1% here) well inside 5%."""
    workload = WorkloadSpec((AdapterSpec("a0", 16, 6.0), AdapterSpec("a1", 16, 2.0), AdapterSpec("a2", 8, 3.0)),
                            duration_s=3600.0)
    placement = Placement((GpuAssignment(0, ("a0", "a1"), 2), GpuAssignment(1, ("a0", "a2"), 2)))
    verdict = verify(workload, placement, PROFILE, seed=0, duration_s=3600.0)
    plans = [ReplicaPlan(ServerConfig(max_loras=2, max_lora_rank=16), g.adapters) for g in placement.assignments]
    fleet = simulate_placement(workload, plans, PROFILE, seed=0)
    for alone, together in zip(verdict.gpus, fleet.replicas, strict=True):
        assert alone.metrics.offered_throughput == pytest.approx(together.offered_throughput, rel=0.05)
        assert alone.metrics.total_throughput == pytest.approx(together.total_throughput, rel=0.05)
        assert not alone.starved and not together.starved


def test_a_lightly_loaded_gpu_is_judged_on_enough_requests(tmp_path, capsys):
    """One cold adapter (0.02 req/s: a dozen requests in ten minutes) is simulated until it expects
    MIN_VERIFIED_REQUESTS requests; an idle GPU is not starved, and its simulate command gives the same verdict."""
    workload = WorkloadSpec((AdapterSpec("cold", 16, 0.02),), duration_s=VERIFY_DURATION_S)
    placement = Placement((GpuAssignment(0, ("cold",), 1),))
    gpu = verify(workload, placement, PROFILE, seed=0).gpus[0]
    assert gpu.duration_s == pytest.approx(MIN_VERIFIED_REQUESTS / 0.02)
    assert gpu.metrics.arrived_requests >= 0.8 * MIN_VERIFIED_REQUESTS
    assert not gpu.starved
    path = tmp_path / "gpu.json"
    path.write_text(json.dumps(gpu_workload(workload, placement.assignments[0], placement.copies()).to_dict()))
    assert main(gpu.simulate_command(str(path)).split()[1:]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["starved"] is False
    assert again["total_throughput"] == pytest.approx(gpu.metrics.total_throughput, rel=1e-9)
