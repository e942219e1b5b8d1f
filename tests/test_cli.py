"""The command line: contract of `simulate --json`, one-line errors without tracebacks, `bench`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from adaptergym.cli import main

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "workloads" / "sharegpt_24_adapters.json"


def test_simulate_json_has_the_contract_fields(capsys):
    assert main(["simulate", "--workload", str(EXAMPLE), "--duration", "60", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("startup", "starved", "offered_throughput", "total_throughput", "mean_itl_ms", "mean_ttft_ms",
                "p99_ttft_ms", "per_adapter"):
        assert key in out
    assert out["startup"] == "ok" and out["config"]["max_loras"] == 24 and out["config"]["max_lora_rank"] == 32
    assert 0 < out["total_throughput"] <= out["offered_throughput"]


def test_simulate_reports_a_config_vllm_refuses_as_an_outcome(capsys):
    assert main(["simulate", "--workload", str(EXAMPLE), "--duration", "10", "--max-loras", "512",
                 "--max-lora-rank", "64", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["startup"] in ("oom", "no_kv_memory") and out["starved"] and out["total_throughput"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--profile", "no-such-gpu"], "unknown profile 'no-such-gpu'"),
        (["--max-lora-rank", "16"], "exceeds max_lora_rank 16"),
        (["--max-lora-rank", "12"], "max_lora_rank: 12"),
        (["--max-loras", "8", "--max-cpu-loras", "4"], "max_cpu_loras"),
    ],
)
def test_bad_arguments_give_one_line_errors(capsys, args, message):
    assert main(["simulate", "--workload", str(EXAMPLE), "--duration", "5", *args]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_bad_workload_file_through_the_real_entry_point(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"adapters": [{"id": "a", "rate": -2}]}')
    proc = subprocess.run([sys.executable, "-m", "adaptergym", "simulate", "--workload", str(bad)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert "rate" in proc.stderr and "Traceback" not in proc.stderr
