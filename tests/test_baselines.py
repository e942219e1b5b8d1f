"""Reference policies, `adaptergym place` and `adaptergym leaderboard` on small instances (issue 5's relations).

Timing targets live in `adaptergym bench placement`, not here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from adaptergym import load_profile
from adaptergym.cli.main import main
from adaptergym.placement import verify
from adaptergym.workload import powerlaw_workload
from baselines import get_policy, policy_names
from baselines.bound import lower_bound_gpus
from baselines.evaluation import place_and_verify

PROFILE = load_profile(None)
#: Small enough for every policy (exact included) in seconds, busy enough to need more than one GPU.
SMALL = powerlaw_workload(12, 45.0, alpha=1.0, rng=np.random.default_rng(3), duration_s=600.0, name="zipf-12")
#: Optuna's trials kept few so the test stays fast.
FAST = {"optuna": {"n_trials": 4}}


@pytest.fixture(scope="module")
def outcomes():
    return {name: place_and_verify(get_policy(name, **FAST.get(name, {})), SMALL, PROFILE, seed=0)
            for name in policy_names()}


def test_every_policy_verifies_starvation_free_above_the_lower_bound(outcomes):
    for name, outcome in outcomes.items():
        assert outcome.verification.starved_gpus == 0, name
        assert outcome.lower_bound_gpus <= outcome.placement.gpus, name
        outcome.placement.check(SMALL)


def test_greedy_within_ten_percent_of_exact_and_below_round_robin(outcomes):
    exact = get_policy("exact")
    assert exact.place(SMALL, PROFILE, seed=0).gpus == outcomes["exact"].placement.gpus
    assert exact.proven_optimal
    assert outcomes["greedy"].placement.gpus <= 1.10 * outcomes["exact"].placement.gpus
    assert outcomes["greedy"].placement.gpus < outcomes["round-robin"].placement.gpus


@pytest.mark.parametrize(("rate", "above_bound"), [(40.0, 0), (240.0, 1)])
def test_greedy_on_a_zipf_workload_of_300_adapters(rate, above_bound):
    """The issue's scale, on 2 and on 8 GPUs: 0 starved GPUs on re-simulation, on the bound at 40 req/s and at most
    one GPU above it at 240 (measured with the 1,800-s Llama profile: 2 of 2, 8 of 7; the bound was 6 with the 10%
    margin of the 4-draw capacity table, ``baselines.bound.GPU_COST_LIMITS``)."""
    workload = powerlaw_workload(300, rate, alpha=1.0, rng=np.random.default_rng(0), duration_s=600.0)
    placement = get_policy("greedy").place(workload, PROFILE, seed=0)
    assert verify(workload, placement, PROFILE, seed=0).starved_gpus == 0
    assert placement.gpus <= lower_bound_gpus(workload, PROFILE) + above_bound


def test_the_bound_capacity_is_the_twins_starvation_edge():
    """A GPU of 8 equal-rate rank-16 adapters offered just under its edge is served, 10% over it starves; the
    edge sits below peak / 0.9; and the default profile's shipped edges are the ones in use."""
    from adaptergym.edges import shipped_edges
    from adaptergym.placement import GpuAssignment, Placement
    from adaptergym.workload import AdapterSpec, LengthSpec, WorkloadSpec
    from baselines.capacity import capacity_model

    model = capacity_model(PROFILE, LengthSpec())
    assert shipped_edges(PROFILE, LengthSpec())  # regenerate with `python -m baselines.edge_table` if this fails
    edge = model.edge_tok_s(16, 8)
    assert edge < model.admissible_tok_s(16, 8)
    placement = Placement((GpuAssignment(0, tuple(f"a{i}" for i in range(8)), 8),))
    for scale, starved in ((0.97, 0), (1.1, 1)):
        rate = scale * edge / model.tokens_per_request / 8
        workload = WorkloadSpec(tuple(AdapterSpec(f"a{i}", 16, rate) for i in range(8)), duration_s=600.0)
        assert verify(workload, placement, PROFILE, seed=0).starved_gpus == starved, scale


def test_optuna_is_deterministic_and_shares_an_rdb_study(outcomes, tmp_path):
    again = get_policy("optuna", **FAST["optuna"]).place(SMALL, PROFILE, seed=0)
    assert again == outcomes["optuna"].placement
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    for _ in range(2):  # two workers, one after the other, join one study
        policy = get_policy("optuna", n_trials=1, storage=storage)
        policy.place(SMALL, PROFILE, seed=1)
    assert len(policy.studies[0].trials) == 2


def test_place_json_and_each_gpu_alone_starvation_free(tmp_path, capsys):
    path = tmp_path / "w.json"
    path.write_text(json.dumps(SMALL.to_dict()))
    assert main(["place", "--workload", str(path), "--policy", "greedy", "--json", "--export",
                 str(tmp_path / "gpus")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"profile", "gpus", "lower_bound_gpus", "placement", "verified", "decision_time_s"}
    assert set(out["verified"]) == {"starved_gpus", "total_throughput", "p99_ttft_ms"}
    assert [set(g) for g in out["placement"]] == [{"gpu", "adapters", "max_loras"}] * out["gpus"]
    commands = (tmp_path / "gpus" / "commands.txt").read_text().splitlines()
    assert len(commands) == out["gpus"]
    for command in commands:  # exactly what a user runs: adaptergym simulate ... --json
        assert main(command.split()[1:]) == 0
        assert json.loads(capsys.readouterr().out)["starved"] is False


def test_leaderboard_writes_rows_table_and_plot(tmp_path, capsys):
    from agents.evaluate import LEADERBOARD_COLUMNS
    from baselines.leaderboard import COLUMNS

    assert COLUMNS == LEADERBOARD_COLUMNS
    out = tmp_path / "rows.csv"
    assert main(["leaderboard", "--suite", "uniform-small", "--seeds", "1", "--policies", "greedy,first-fit-decreasing",
                 "--agents", "none", "--out", str(out), "--plot", str(tmp_path / "p.png"), "--markdown", "-q"]) == 0
    table = capsys.readouterr().out
    assert table.startswith("| policy |") and "| greedy |" in table and "| first-fit-decreasing |" in table
    assert out.read_text().splitlines()[0] == ",".join(COLUMNS)
    assert (tmp_path / "p.png").stat().st_size > 1000


@pytest.mark.parametrize(("args", "field"), [
    (["place", "--policy", "nope"], "policy"),
    (["place", "--policy", "exact", "--objective", "latency"], "objective"),
    (["place", "--policy", "optuna", "--objective", "speed"], "objective"),
    (["leaderboard", "--seeds", "many"], "seeds"),
    (["leaderboard", "--seeds", "0"], "seeds"),
    (["leaderboard", "--suite", "nope"], "scenario"),
    (["leaderboard", "--policies", "nope"], "policy"),
    (["leaderboard", "--agents", "no/such/run"], "agents"),
])
def test_bad_input_is_a_one_line_error(tmp_path, capsys, args, field):
    path = tmp_path / "w.json"
    path.write_text(json.dumps(SMALL.to_dict()))
    extra = ["--workload", str(path)] if args[0] == "place" else []
    assert main([*args, *extra]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and field in err


def test_place_refuses_a_trace(tmp_path, capsys):
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,adapter_id,input_tokens,output_tokens\n0.1,a,10,10\n")
    assert main(["place", "--workload", str(trace), "--policy", "greedy"]) == 1
    assert "trace" in capsys.readouterr().err


def test_the_bound_prints_nothing(capfd):
    """HiGHS prints a debug line to the process's stdout on this workload's MILP (an upstream bug); the bound
    keeps it off stdout, which `adaptergym place --json` owns."""
    from adaptergym.scenarios import get_scenario

    capfd.readouterr()
    lower_bound_gpus(get_scenario("zipf-large").workload(1_000_007), PROFILE)
    assert capfd.readouterr().out == ""
