"""Workload specs and request sampling: formats, distributions, reproducibility, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from adaptergym.errors import WorkloadError
from adaptergym.workload import (
    ArrivalSpec,
    LengthSpec,
    WorkloadSpec,
    cycled_workload,
    powerlaw_workload,
    sample_requests,
)
from adaptergym.workload.lengths import sample_lengths


def test_sharegpt_lengths_match_published_statistics():
    inp, out = sample_lengths(LengthSpec("sharegpt"), 200_000, np.random.default_rng(1))
    assert abs(inp.mean() - 222) < 5 and abs(out.mean() - 194) < 5
    assert np.percentile(inp, 25) == pytest.approx(23, abs=2) and np.percentile(inp, 75) == pytest.approx(423, abs=8)
    assert np.percentile(out, 25) == pytest.approx(27, abs=2) and np.percentile(out, 75) == pytest.approx(357, abs=8)
    assert inp.min() >= 4 and inp.max() <= 1024 and out.min() >= 4 and (inp + out).max() <= 2048


def test_poisson_and_gamma_arrivals_have_requested_rate_and_burstiness():
    for cv in (1.0, 3.0):
        w = cycled_workload(1, [5.0], [16], duration_s=20_000)
        w = WorkloadSpec(w.adapters, LengthSpec("fixed"), ArrivalSpec("gamma", cv), w.duration_s)
        req = sample_requests(w, np.random.default_rng(0))
        gaps = np.diff(req.arrival_s)
        assert len(req) / w.duration_s == pytest.approx(5.0, rel=0.05)
        assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.1)


def test_same_seed_same_requests_and_sorted_arrivals():
    w = powerlaw_workload(50, 20.0, alpha=1.2, rng=np.random.default_rng(3), duration_s=300)
    a = sample_requests(w, np.random.default_rng(7))
    b = sample_requests(w, np.random.default_rng(7))
    c = sample_requests(w, np.random.default_rng(8))
    assert np.array_equal(a.arrival_s, b.arrival_s) and np.array_equal(a.input_tokens, b.input_tokens)
    assert not np.array_equal(a.arrival_s[:10], c.arrival_s[:10])
    assert np.all(np.diff(a.arrival_s) >= 0)


def test_powerlaw_rates_sum_and_decay():
    w = powerlaw_workload(100, 30.0, alpha=1.0)
    rates = np.array([a.rate for a in w.adapters])
    assert rates.sum() == pytest.approx(30.0)
    assert rates[0] / rates[9] == pytest.approx(10.0)


def test_json_round_trip_and_trace_replay(tmp_path):
    w = cycled_workload(3, [1.0, 0.5], [8, 16], duration_s=60, name="x")
    path = tmp_path / "w.json"
    path.write_text(json.dumps(w.to_dict()))
    assert WorkloadSpec.from_json(path) == w
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,adapter_id,input_tokens,output_tokens\n0.5,b,10,5\n0.1,a,20,3\n")
    req = sample_requests(WorkloadSpec.from_json(trace), np.random.default_rng(0))
    assert req.arrival_s.tolist() == [0.1, 0.5] and req.adapter_ids == ("a", "b")
    assert req.input_tokens.tolist() == [20, 10]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"adapters": [{"id": "a", "rate": -1}]}, "rate"),
        ({"adapters": [{"id": "a", "rank": 0}]}, "rank"),
        ({"adapters": [{"id": "a"}, {"id": "a"}]}, "duplicate"),
        ({"adapters": [{"id": "a"}], "lengths": {"kind": "zipf"}}, "lengths.kind"),
        ({"adapters": [{"id": "a"}], "arrival": {"kind": "gamma", "cv": 0}}, "arrival.cv"),
        ({"adapters": [{"id": "a"}], "duration_s": -5}, "duration_s"),
        ({"adapters": [{"id": "a"}], "colour": 1}, "unknown field"),
    ],
)
def test_bad_workloads_name_the_field(tmp_path, payload, field):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(WorkloadError, match=field):
        WorkloadSpec.from_json(path)


def test_malformed_json_and_trace_errors_give_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"adapters": [}')
    with pytest.raises(WorkloadError, match="line 1"):
        WorkloadSpec.from_json(path)
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,adapter_id,input_tokens,output_tokens\n0.5,b,10,5\n0.7,b,x,5\n")
    with pytest.raises(WorkloadError, match="line 3"):
        sample_requests(WorkloadSpec.from_json(trace), np.random.default_rng(0))


def test_arrival_order_is_the_stable_sort_with_or_without_ties():
    from adaptergym.workload.requests import _arrival_order

    rng = np.random.default_rng(3)
    for times in (rng.uniform(0, 10, 1000), np.repeat(rng.uniform(0, 10, 50), 4), np.zeros(5), np.empty(0)):
        assert _arrival_order(times).tolist() == np.argsort(times, kind="stable").tolist()
