"""Fidelity tooling: real-run rows become replays, validate measures error, calibrated terms match benchmarks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adaptergym.cli import main
from adaptergym.profile import STEP_FEATURES, load_profile, shipped_profiles
from adaptergym.real_runs import read_runs, replays
from adaptergym.twin.step_time import StepTimer
from adaptergym.validation import mape, smape, validate

SAMPLE = Path(__file__).parent / "data" / "real_runs_sample.csv"


def test_rows_become_replays_and_a_malformed_row_is_reported_with_its_line():
    items, problems = replays(read_runs(SAMPLE))
    assert [p.line for p in problems] == [11]  # the last row: adapter_rate_counts 'three four'
    assert "adapter_rate_counts" in problems[0].reason
    first = items[0]
    # _16_16_16_: 16 adapters, rates 0.1/0.05/0.025 cycled, ranks 8/16 cycled, 16 slots.
    assert len(first.workload.adapters) == 16
    assert [a.rate for a in first.workload.adapters[:4]] == [0.1, 0.05, 0.025, 0.1]
    assert [a.rank for a in first.workload.adapters[:3]] == [8, 16, 8]
    assert first.config.max_loras == 16 and first.config.max_lora_rank == 16
    assert first.workload.duration_s == 3600 and first.workload.lengths.kind == "sharegpt"


def test_errors_follow_the_standard_definitions():
    y, yhat = np.array([100.0, 200.0]), np.array([110.0, 150.0])
    assert mape(y, yhat) == pytest.approx(100 * (0.1 + 0.25) / 2)
    assert smape(y, yhat) == pytest.approx(100 * (2 * 10 / 210 + 2 * 50 / 350) / 2)


@pytest.fixture(scope="module")
def sample_report():
    return validate(SAMPLE, workers=1)


def test_validate_on_checked_in_real_rows(sample_report):
    report = sample_report
    assert [p.line for p in report.problems] == [11]
    # every start-up outcome right, the refused one included
    assert report.startup_accuracy == 1.0
    assert any(p.measured_status == "kv_insufficient_for_max_model_len" for p in report.predictions)
    # the table is the standard MAPE of the per-row predictions
    rows = report.rows()
    assert rows["dataset_group"].str.startswith("digital_twin_modelling/real_results/").all()
    offered = pd.read_csv(SAMPLE).assign(line=lambda f: f.index + 2).set_index("line")["est_offered_load_tok_s"]
    for model, group in rows[rows["status"] == "ok"].groupby("model"):
        expected = mape(group["total_throughput"], group["total_throughput_twin"])
        assert report.models[model]["total_throughput"]["mape"] == pytest.approx(expected)
        # Light-load runs (no queue) serve what arrives, so each real run strays from its offered load by the
        # luck of its Poisson arrivals (up to 5.4% here); the twin serves what arrives too, and is no further
        # from the real runs than that scatter plus 2 points.
        scatter = mape(group["total_throughput"], offered[group["line"]].to_numpy())
        assert expected < scatter + 2.0
        assert report.models[model]["mean_itl"]["mape"] < 15.0


def test_validate_cli_json_and_plot(tmp_path, capsys):
    assert main(["validate", "--runs", str(SAMPLE), "--workers", "1", "--group", "llama.*rank_16_rates_0.1",
                 "--json", "--plot", str(tmp_path / "fit.png")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["models"]) == {"llama-3.1-8b-instruct"}
    assert set(out["models"]["llama-3.1-8b-instruct"]) == {"total_throughput", "mean_itl", "mean_tpot", "mean_ttft"}
    assert (tmp_path / "fit.png").stat().st_size > 0


def test_validate_bad_input_is_one_line(tmp_path, capsys):
    bad = tmp_path / "runs.csv"
    bad.write_text("a,b\n1,2\n")
    assert main(["validate", "--runs", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "missing column" in err and "Traceback" not in err
    assert main(["validate", "--runs", str(SAMPLE), "--group", "no-such-group"]) == 1
    assert "--group 'no-such-group': no row's dataset_group matches" in capsys.readouterr().err
    assert main(["validate", "--runs", str(tmp_path / "none.csv")]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["validate", "--runs", str(SAMPLE), "--group", "["]) == 1
    assert "--group '[': not a regular expression" in capsys.readouterr().err
    assert main(["calibrate", "--runs", str(SAMPLE), "--model", "llama-3.1-8b-instruct", "--holdout", "("]) == 1
    assert "--holdout '(': not a regular expression" in capsys.readouterr().err
    assert main(["calibrate", "--runs", str(SAMPLE), "--model", "llama-3.1-8b-instruct", "--base-prior", "-1"]) == 1
    assert "--base-prior -1.0: must be a finite number >= 0" in capsys.readouterr().err


def test_base_prior_sets_how_firmly_unmeasured_step_terms_hold_to_the_base():
    """Five S-LoRA runs (no micro-benchmarks beside them, so every free step term holds to the base profile's
    value): a prior a million times the training set's weight keeps the base's coefficients; none lets the fit
    move them to a lower training error. The profile records the strength it was fitted with."""
    from adaptergym.calibration import calibrate

    runs = Path(__file__).parent / "data" / "slora_runs_sample.csv"
    base = load_profile("h100-64gb__llama-2-7b__slora").step_time.coefficients
    fits = {strength: calibrate(runs, "llama-2-7b", holdout="", rounds=1, duration_s=300, workers=1,
                                base_prior=strength) for strength in (1e6, 0.0)}
    held, held_report = fits[1e6]
    assert {name: held.step_time.coefficients[name] for name in base} == pytest.approx(base, rel=1e-9, abs=1e-12)
    free, free_report = fits[0.0]
    assert max(abs(free.step_time.coefficients[name] / value - 1) for name, value in base.items() if value) > 0.1
    first, refit = free_report["terms"]["step_time"]["rounds"]
    assert refit["train_itl_mape"] < first["train_itl_mape"] == pytest.approx(
        held_report["terms"]["step_time"]["train_itl_mape"])
    assert [r["terms"]["step_time"]["base_prior"] for r in (held_report, free_report)] == [1e6, 0.0]
    assert free.provenance["terms"]["step_time"]["base_prior"] == 0.0


@pytest.mark.parametrize("name", [n for n in shipped_profiles() if "decode_microbenchmark_mape" in
                                  load_profile(n).provenance.get("terms", {}).get("step_time", {})])
def test_calibrated_profile_reproduces_decode_microbenchmarks(name, shared_data):
    """The step model without LoRA, at the decode benchmarks' batch and context, within the stated fit error."""
    from adaptergym.calibration.micro import decode_rows

    profile = load_profile(name)
    rows = decode_rows(shared_data / "raw_estimator_runs", profile.model, profile.engine.cuda_graph_max_tokens)
    if rows.empty:
        pytest.skip(f"no decode micro-benchmarks of {profile.model}")
    timer = StepTimer(profile, 16, lora_enabled=False)
    predicted = np.array([timer.step_ms(b, 0, c, 0) + timer.scheduler_ms(b, 0)
                          for b, c in zip(rows["batch"], rows["context"], strict=True)])
    error = 100 * np.mean(np.abs(predicted - rows["step_ms"]) / rows["step_ms"])
    stated = profile.provenance["terms"]["step_time"]["decode_microbenchmark_mape"]
    assert error == pytest.approx(stated, abs=0.01)
    assert error < 10.0


def test_calibrated_profiles_have_every_term_and_provenance():
    for name in shipped_profiles():
        profile = load_profile(name)
        if "fitted_by" not in profile.provenance:
            continue
        # A term added after a profile was fitted is absent (at 0, so its records stay what they were).
        assert set(STEP_FEATURES) - set(profile.step_time.coefficients) <= {"lora_per_exposed_adapter_ms"}
        assert profile.provenance["holdout"] and profile.provenance["train_rows"] > 0


def test_memory_fit_reproduces_kv_capacity(shared_data):
    from adaptergym.calibration.memory import fit_memory, kv_tokens

    kv = pd.read_csv(shared_data / "kv_capacity.csv")
    for model in kv["model"].unique():
        memory, fit = fit_memory(kv, model, load_profile(None).memory)
        ok = kv[(kv["model"] == model) & (kv["status"] == "ok")]
        predicted = kv_tokens(memory, ok["max_loras"].to_numpy(), ok["max_lora_rank"].to_numpy())
        error = np.abs(predicted - ok["gpu_kv_cache_tokens"]) / ok["gpu_kv_cache_tokens"]
        assert 100 * error.max() == pytest.approx(fit["kv_tokens_max_error_pct"], rel=1e-6)
        assert fit["kv_tokens_mape"] < 2.0


def test_memory_bracketed_by_start_up_outcomes_recovers_a_known_model():
    """Verdicts drawn from a known memory model by the twin's own start-up check are all reproduced, and the
    fitted LoRA slot size lands between the verdicts' boundaries."""
    import dataclasses

    from adaptergym.calibration.memory import fit_memory_from_startups
    from adaptergym.errors import DataError
    from adaptergym.twin import ServerConfig, check_startup

    truth = load_profile(None)
    configs = [(n, r) for r in (8, 16, 32) for n in range(16, 1025, 16)]
    outcomes = pd.DataFrame([{"max_loras": n, "max_lora_rank": r,
                              "status": check_startup(truth, ServerConfig(max_loras=n, max_lora_rank=r)).status}
                             for n, r in configs])
    assert {"ok", "no_kv_memory", "oom"} <= set(outcomes["status"])
    guess = dataclasses.replace(truth.memory, activation_gib=truth.memory.activation_gib + 2.0,
                                lora_slot_gib_per_rank=0.0, lora_slot_gib_fixed=0.0)
    memory, fit = fit_memory_from_startups(outcomes, guess)
    fitted = dataclasses.replace(truth, memory=memory)
    assert fit["verdicts_right_pct"] == 100.0 and fit["margin_gib"] > 0
    assert all(check_startup(fitted, ServerConfig(max_loras=n, max_lora_rank=r)).status == s
               for n, r, s in outcomes.itertuples(index=False))
    # rank-32 slots: the first refused count brackets the slot size within one step of 16 slots
    assert memory.lora_slot_gib_per_rank == pytest.approx(truth.memory.lora_slot_gib_per_rank, rel=0.15)
    with pytest.raises(DataError, match="need both"):
        fit_memory_from_startups(outcomes[outcomes["status"] == "ok"], guess)


def test_scheduler_fit_recovers_a_known_cost_and_explains_the_measured_one(tmp_path, shared_data):
    """Per-step scheduler time drawn from known coefficients is recovered; on vLLM's own measurements, running
    requests and the requests skipped for want of a slot explain most of it."""
    from adaptergym.calibration.micro import fit_scheduler

    rng = np.random.default_rng(0)
    n = 200
    runs = pd.DataFrame({"gpu_loras": rng.choice([8, 32, 128], n), "cpu_loras": rng.choice([8, 64, 512], n),
                         "avg_batch_size": rng.uniform(1, 500, n), "avg_waiting_queue": rng.uniform(0, 2e4, n),
                         "steps": 10_000})
    skipped = runs["avg_waiting_queue"] * np.clip(1 - runs["gpu_loras"] / runs["cpu_loras"], 0, 1)
    runs["total_scheduling_time"] = runs["steps"] * (0.05 + 0.004 * runs["avg_batch_size"] + 3e-4 * skipped) / 1e3
    runs.to_csv(tmp_path / "synthetic.csv", index=False)
    known, fit = fit_scheduler(tmp_path)
    assert known == pytest.approx({"base_ms": 0.05, "per_running_ms": 0.004, "per_skipped_ms": 3e-4}, rel=1e-6)
    assert fit["runs"] == n and fit["rmse_ms"] < 1e-9
    measured, fit = fit_scheduler(shared_data / "raw_scheduler_overhead")
    assert measured["per_skipped_ms"] > 0 and fit["r2"] > 0.85


def test_length_link_fit_recovers_a_known_correlation_and_the_shipped_one(shared_data):
    """Runs whose KV usage follows a known copula correlation give it back; the real runs that kept up give the
    shipped table's correlation."""
    from adaptergym.calibration.lengths import fit_copula_correlation, held_tokens

    profile = load_profile("llama-3.1-8b-instruct")
    frame = read_runs(shared_data / "real_runs.csv")
    items, _ = replays(frame)
    train = {i.line: i.config for i in items if i.model == profile.model and i.status == "ok"
             and not i.group.startswith("digital_twin_modelling/")}
    shipped = fit_copula_correlation(frame, train, profile)
    assert shipped["runs"] >= 30 and shipped["copula_correlation"] == pytest.approx(
        shipped["shipped_copula_correlation"], abs=0.02)
    # every kept-up run holding what a correlation of -0.1 would hold
    ratio = held_tokens(-0.1, profile.engine.block_size) / shipped["kv_tokens_per_running_median"]
    synthetic = frame.assign(npy_mean_kv_usage=frame["npy_mean_kv_usage"] * ratio)
    assert fit_copula_correlation(synthetic, train, profile)["copula_correlation"] == pytest.approx(-0.1, abs=0.01)


def test_a_light_hour_is_judged_from_its_first_900_s_as_the_whole_hour_would_be(sample_report):
    """The sample's runs keep up with their load: ``validate`` judges those whose adapters all have a slot from
    their first 900 s, and simulates those that swap adapters (8 slots for 32) to the end."""
    full = validate(SAMPLE, workers=1, full=True).rows().set_index("line")
    short = sample_report.rows().set_index("line")
    served = short["status"] == "ok"
    swaps = short.index.isin([4, 8])  # the two _8_32_16_ rows
    assert served.sum() >= 5
    for metric, tolerance in (("total_throughput", 0.02), ("mean_itl_ms", 0.03), ("mean_ttft_ms", 0.1)):
        twin, hour = short.loc[served & ~swaps, f"{metric}_twin"], full.loc[served & ~swaps, f"{metric}_twin"]
        assert not np.allclose(twin, hour, rtol=1e-9)  # different spans were simulated...
        assert np.allclose(twin, hour, rtol=tolerance), metric  # ...and agree
        # the same hour, run in two stretches (a decode jump ends at 900 s): equal but for rounding
        assert short.loc[swaps, f"{metric}_twin"].tolist() == pytest.approx(full.loc[swaps, f"{metric}_twin"].tolist(),
                                                                           rel=1e-9)


def test_api_server_hold_up_from_ttft_tails_and_its_burst_bound(shared_data):
    """Runs whose first requests are more than 1% of all and that keep up with few requests at once give the
    hold-up as their 99th minus median TTFT less the engine's first load; busier runs and runs whose first
    requests are too few to reach the 99th percentile are left out. On the real runs it lies under the bound the
    micro-benchmark's Prometheus scrapes give."""
    from adaptergym.calibration.loading import api_server_burst_ms, api_server_new_adapter_ms
    from adaptergym.profile import LoadTimeModel

    loading = LoadTimeModel({"8": 5.0, "16": 5.0}, {"8": 20.0, "16": 30.0})  # first load: median of 25, 35 = 30 ms
    frame = pd.DataFrame({"line": [2, 3, 4, 5, 6], "status": "ok", "num_adapters": [64, 64, 64, 64, 8],
                          "successful_requests": [5000, 5000, 5000, 5000, 5000],
                          "p99_ttft_ms": [340.0, 360.0, 400.0, 2000.0, 90.0], "median_ttft_ms": 40.0,
                          "npy_mean_running": [2.0, 4.0, 6.0, 40.0, 2.0], "npy_mean_waiting": 0.0})
    value, fit = api_server_new_adapter_ms(frame, {2, 3, 4, 5, 6}, loading)
    assert fit["runs"] == 3 and value == pytest.approx(320.0 - 30.0)
    real = read_runs(shared_data / "real_runs.csv")
    for model in ("llama-3.1-8b-instruct", "qwen-2.5-7b-instruct"):
        train = set(real.loc[(real["model"] == model) & ~real["dataset_group"].str.startswith(
            "digital_twin_modelling"), "line"])
        measured, _ = api_server_new_adapter_ms(real, train, load_profile(model).loading)
        bound = api_server_burst_ms(shared_data / "raw_estimator_runs", model)
        assert 200.0 < measured < bound < 400.0


def test_step_fit_is_not_dragged_by_a_few_runs_far_off():
    """Relative residuals of 200 runs that a known coefficient vector explains to within 2%, plus 5 runs 90% off
    whose third feature is large: the least-absolute-error fit lands on the known vector, where least squares
    inflates the third coefficient to explain the 5."""
    from scipy.optimize import lsq_linear

    from adaptergym.calibration.end_to_end import _robust_fit

    rng = np.random.default_rng(0)
    truth = np.array([10.0, 0.02, 0.5])
    features = np.c_[np.ones(205), rng.uniform(10, 500, 205), rng.uniform(0, 20, 205)]
    features[:5, 2] = 20.0
    itl = features @ truth * (1 + rng.uniform(-0.02, 0.02, 205))
    itl[:5] *= 1.9
    a, b = features / itl[:, None], np.ones(205)  # relative residual (features @ c - itl) / itl
    robust = np.array(_robust_fit(a, b, np.ones(3)))
    plain = lsq_linear(a, b, bounds=(0, np.inf)).x
    assert robust == pytest.approx(truth, rel=0.02)
    assert abs(plain[2] / truth[2] - 1) > 0.05  # dragged by the five


def test_rows_of_one_workload_draw_its_requests_once_with_the_same_predictions(monkeypatch):
    import adaptergym.simulation
    from adaptergym.validation import _drawn, predict_all, replay, resolve_profiles

    items = [i for i in replays(read_runs(SAMPLE))[0] if i.status == "ok"]
    profiles, _ = resolve_profiles((i.system for i in items), "auto")
    alone = []
    for item in items:  # each row with its own draw
        _drawn.cache_clear()
        alone.append(replay(item, profiles[item.system]))
    drawn = []
    draw = adaptergym.simulation.draw_requests
    monkeypatch.setattr(adaptergym.simulation, "draw_requests", lambda *a, **k: drawn.append(a) or draw(*a, **k))
    _drawn.cache_clear()
    together = predict_all(items, profiles, workers=1)
    assert len(drawn) == len({i.workload for i in items}) < len(items)
    assert [p.predicted for p in together] == [p.predicted for p in alone]


def _startup_run(root: Path, model: str, max_loras: int, launched: str, saved: str, duration: float) -> None:
    """One start-up run folder as the benchmark client writes it: its log and its result JSON."""
    from adaptergym.calibration.startup_time import STARTUP_RUNS

    run = root / STARTUP_RUNS / model / f"_{max_loras}_8_"
    run.mkdir(parents=True)
    (run / "log_1.out").write_text(f"INFO {launched} [__init__.py:239] Automatically detected platform cuda.\n"
                                   "Server started\n")
    (run / "openai-infqps-x.json").write_text(json.dumps({"date": saved, "duration": duration}))


def test_startup_time_fit_recovers_hand_computed_start_ups(tmp_path):
    from adaptergym.calibration.startup_time import fit_startup_time, startup_rows

    # start-up = saved - launched - benchmark duration: 200 s at 10 slots, 300 s at 60, 400 s at 110.
    _startup_run(tmp_path, "m", 10, "05-19 18:00:00", "20250519-180322", 2.0)
    _startup_run(tmp_path, "m", 60, "05-19 19:00:00", "20250519-190502", 2.0)
    _startup_run(tmp_path, "m", 110, "05-20 20:00:00", "20250520-200642", 2.0)
    rows = startup_rows(tmp_path, "m")
    assert rows["startup_s"].tolist() == [200.0, 300.0, 400.0]
    terms, fit = fit_startup_time(rows)
    assert terms == {"base_s": 180.0, "per_lora_slot_s": 2.0} and fit["rmse_s"] == 0.0


@pytest.mark.parametrize("name", [n for n in shipped_profiles() if "startup_time" in
                                  load_profile(n).provenance.get("terms", {})])
def test_shipped_startup_times_are_the_fit_of_the_start_up_logs(name, shared_data):
    from adaptergym.calibration.startup_time import fit_startup_time, startup_rows

    profile = load_profile(name)
    rows = startup_rows(shared_data / "raw_estimator_runs", profile.model)
    if rows.empty:
        assert "not measured" in profile.provenance["terms"]["startup_time"]["source"]
        return
    terms, fit = fit_startup_time(rows)
    assert terms == {"base_s": profile.startup_time.base_s, "per_lora_slot_s": profile.startup_time.per_lora_slot_s}
    assert fit == profile.provenance["terms"]["startup_time"] and fit["runs"] >= 20
