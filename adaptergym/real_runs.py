"""Real-run rows (the columns of ``shared/data/real_runs.csv``): reading, checking, and turning into replays.

A row describes one vLLM benchmark run: the server flags (``srv_*``), the workload (per-adapter Poisson rates
from ``bench_adapter_rates`` cycled over ``num_adapters`` adapters, or ``adapter_rate_values`` x
``adapter_rate_counts``; ranks cycled from ``dummy_lora_ranks_cycle``; ShareGPT or fixed-length prompts; or
vLLM's ``--request-rate inf`` burst of ``bench_num_prompts``, or ``bench_num_prompts`` at a per-adapter
``bench_request_rate_by_lora``), the duration, and what was measured. Rows that
cannot be replayed are reported with their CSV line number and the reason, never dropped silently. A row's
``framework`` column names the serving framework that ran it (vLLM V1 when absent); tables of other benchmarks
(S-LoRA's) are mapped onto these columns by ``adaptergym.run_formats``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from adaptergym.errors import DataError
from adaptergym.profile import DEFAULT_FRAMEWORK
from adaptergym.run_formats import detect_format, run_formats, to_real_runs
from adaptergym.twin.config import ServerConfig, default_rank
from adaptergym.workload import AdapterSpec, ArrivalSpec, LengthSpec, WorkloadSpec

#: Columns every row needs (the rest are read when present).
REQUIRED_COLUMNS = ("model", "status", "srv_max_loras", "enable_lora")
#: Measured metrics a replay is compared on: real-runs column -> twin metric name.
METRICS = {
    "total_throughput_tok_s": "total_throughput",
    "mean_itl_ms": "mean_itl_ms",
    "mean_tpot_ms": "mean_tpot_ms",
    "mean_ttft_ms": "mean_ttft_ms",
}
#: Statuses that say what vLLM did at start-up (ground truth); others (no_summary, slurm_timeout) say nothing.
STARTUP_STATUSES = ("ok", "oom", "no_kv_memory", "kv_insufficient_for_max_model_len")


@dataclass(frozen=True)
class RowProblem:
    """A row that cannot be replayed: its 1-based CSV line and why."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True)
class Replay:
    """One real run as the twin replays it."""

    line: int
    run_id: str
    group: str
    model: str
    status: str
    config: ServerConfig
    workload: WorkloadSpec | None  # None for a refused start-up whose workload columns are empty
    measured: dict[str, float]
    framework: str = DEFAULT_FRAMEWORK

    @property
    def measured_status_ok(self) -> bool:
        return self.status == "ok"

    @property
    def system(self) -> tuple[str, str]:
        """(model, framework): what picks the row's profile."""
        return self.model, self.framework


def read_runs(path: str | Path) -> pd.DataFrame:
    """The CSV as a frame with a ``line`` column (1-based file line of each row, header is line 1); a table of
    another benchmark's columns is mapped onto the real-runs columns (``adaptergym.run_formats``)."""
    try:
        frame = pd.read_csv(path, on_bad_lines="warn", engine="python")
    except FileNotFoundError:
        raise DataError(f"--runs {str(path)!r}: no such file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"--runs {str(path)!r}: not a readable CSV ({exc})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    spec = detect_format(frame) if missing else None
    if spec is not None:
        frame, missing = to_real_runs(frame, spec), []
    if missing:
        raise DataError(f"--runs {str(path)!r}: missing column(s) {missing}; a real-runs CSV needs "
                        f"{list(REQUIRED_COLUMNS)} and the columns of shared/data/real_runs.csv (or the columns "
                        f"of a known format: {', '.join(run_formats())})")
    return frame.assign(line=_file_lines(path, len(frame)))


def _file_lines(path: str | Path, n: int) -> np.ndarray:
    """File line of each parsed row, robust to quoted newlines (pandas numbers rows, not lines)."""
    import csv

    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        starts = []
        line = 2
        for _record in reader:
            starts.append(line)
            line = reader.line_num + 1
    return np.asarray(starts[:n] + [0] * max(0, n - len(starts)))


def group_pattern(regex: str, option: str) -> re.Pattern[str]:
    """The compiled regex a command's ``option`` (``--group``, ``--holdout``) applies to ``dataset_group``."""
    try:
        return re.compile(regex)
    except re.error as exc:
        raise DataError(f"{option} {regex!r}: not a regular expression ({exc})") from None


def replays(frame: pd.DataFrame) -> tuple[list[Replay], list[RowProblem]]:
    """Every row that can be replayed, and a problem for every row that cannot."""
    out: list[Replay] = []
    problems: list[RowProblem] = []
    for row in frame.to_dict("records"):
        try:
            out.append(replay_of(row))
        except (DataError, ValueError, TypeError, KeyError) as exc:
            problems.append(RowProblem(int(row["line"]), str(exc)))
    return out, problems


def replay_of(row: dict) -> Replay:
    """The replay of one row; raises DataError naming the column when the row cannot be replayed."""
    status = str(row.get("status") or "")
    if status not in STARTUP_STATUSES:
        raise DataError(f"status {status!r}: the run produced no result to compare (only {STARTUP_STATUSES})")
    enable_lora = _bool(row, "enable_lora")
    # Without LoRA the slot count does not matter; a refused start-up cannot be judged without it.
    max_loras = _int(row, "srv_max_loras") if enable_lora or status != "ok" else _int(row, "srv_max_loras", 1)
    if status == "ok":
        workload: WorkloadSpec | None = _workload(row, enable_lora)
    else:  # a refused start-up is judged on the server flags alone; its workload columns are often empty
        try:
            workload = _workload(row, enable_lora)
        except DataError:
            workload = None
    ranks = [a.rank for a in workload.adapters] if workload else []
    config = default_rank(ServerConfig(
        max_loras=max_loras,
        max_cpu_loras=_int(row, "srv_max_cpu_loras", None),
        max_lora_rank=_int(row, "srv_max_lora_rank", None),
        max_num_seqs=_int(row, "srv_max_num_seqs", None),
        max_num_batched_tokens=_int(row, "max_num_batched_tokens", None),
        enable_lora=enable_lora,
    ), ranks)
    measured = {name: float(row[col]) for col, name in METRICS.items()
                if status == "ok" and _finite(row.get(col))}
    framework = str(row["framework"]) if _present(row, "framework") else DEFAULT_FRAMEWORK
    return Replay(int(row["line"]), str(row.get("run_id", "")), str(row.get("dataset_group", "")),
                  str(row["model"]), status, config, workload, measured, framework)


def _workload(row: dict, enable_lora: bool) -> WorkloadSpec:
    ranks = _ranks(row) if enable_lora else [8]
    lengths = _lengths(row)
    if _finite(row.get("bench_total_time")):
        rates = _rates(row)
        adapters = tuple(AdapterSpec(f"a{i}", ranks[i % len(ranks)], rate) for i, rate in enumerate(rates))
        return WorkloadSpec(adapters, lengths, ArrivalSpec("poisson"), float(row["bench_total_time"]),
                            name=str(row.get("exp_name", "")))
    n_adapters = _prompt_adapters(row) if enable_lora else 1
    per_adapter = row.get("bench_request_rate_by_lora")
    if _finite(row.get("bench_num_prompts")) and _finite(per_adapter):
        # The benchmark fork's per-LoRA rate: each adapter its own Poisson stream until the prompts are sent.
        requests, rate = _int(row, "bench_num_prompts"), float(per_adapter)
        adapters = tuple(AdapterSpec(f"a{i}", ranks[i % len(ranks)], rate) for i in range(n_adapters))
        return WorkloadSpec(adapters, lengths, ArrivalSpec("poisson"), requests / (rate * n_adapters),
                            num_requests=requests, name=str(row.get("exp_name", "")))
    if _finite(row.get("bench_num_prompts")) and str(row.get("bench_request_rate")) == "inf":
        adapters = tuple(AdapterSpec(f"a{i}", ranks[i % len(ranks)], 1.0) for i in range(n_adapters))
        return WorkloadSpec(adapters, lengths, ArrivalSpec("burst"), 1.0, num_requests=_int(row, "bench_num_prompts"),
                            name=str(row.get("exp_name", "")))
    raise DataError("bench_total_time / bench_num_prompts: neither a timed rate run nor a request-rate-inf burst")


def _prompt_adapters(row: dict) -> int:
    """Adapters a run without a rate list spread its prompts over: ``num_adapters``, else the benchmark's
    ``--restrict-loras`` (``bench_restrict_loras``, or the last field of the published LoRA-overhead runs' names
    ``_{max_num_seqs}_{max_loras}_{rank}__{input}_{output}_{restrict}``), else every slot."""
    for column in ("num_adapters", "bench_restrict_loras"):
        if _finite(row.get(column)):
            return _int(row, column)
    name = re.fullmatch(r"_\d+_\d+_\d+__\d+_\d+_(\d+)", str(row.get("exp_name", "")))
    if name and "predictor_latency_overhead" in str(row.get("dataset_group", "")):
        return int(name.group(1))
    return _int(row, "srv_max_loras")


def _rates(row: dict) -> list[float]:
    n = _int(row, "num_adapters")
    cycle = row.get("bench_adapter_rates")
    if isinstance(cycle, str) and cycle.strip():
        try:
            values = [float(v) for v in json.loads(cycle)]
        except (json.JSONDecodeError, TypeError, ValueError):
            raise DataError(f"bench_adapter_rates: {cycle!r} is not a JSON list of rates") from None
        return [values[i % len(values)] for i in range(n)]
    values = _numbers(row, "adapter_rate_values")
    counts = [int(c) for c in _numbers(row, "adapter_rate_counts")]
    if len(values) != len(counts) or sum(counts) != n:
        raise DataError("adapter_rate_values / adapter_rate_counts: lengths differ or counts do not sum to "
                        "num_adapters")
    return [v for v, c in zip(values, counts, strict=True) for _ in range(c)]


def _ranks(row: dict) -> list[int]:
    return [int(r) for r in _numbers(row, "dummy_lora_ranks_cycle")] if _present(row, "dummy_lora_ranks_cycle") \
        else [_int(row, "srv_max_lora_rank")]


def _lengths(row: dict) -> LengthSpec:
    """ShareGPT when the run sampled it; otherwise fixed lengths from the prompt pool or the realized means."""
    dataset = str(row.get("bench_dataset_path") or "")
    if "sharegpt" in dataset.lower() and not _finite(row.get("bench_sharegpt_output_len")):
        return LengthSpec("sharegpt")
    for inp, out, count in (("pool_input_tokens", "pool_output_tokens", "pool_prompts"),
                            ("total_input_tokens", "total_generated_tokens", "successful_requests")):
        if all(_finite(row.get(c)) for c in (inp, out, count)) and float(row[count]) > 0:
            n = float(row[count])
            return LengthSpec("fixed", input_tokens=max(1, round(row[inp] / n)),
                              output_tokens=max(1, round(row[out] / n)))
    raise DataError("pool_* / total_*_tokens: no prompt lengths to replay (neither ShareGPT nor token totals)")


def _present(row: dict, col: str) -> bool:
    value = row.get(col)
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and str(value).strip() != ""


def _finite(value: object) -> bool:
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _numbers(row: dict, col: str) -> list[float]:
    if not _present(row, col):
        raise DataError(f"{col}: missing")
    try:
        return [float(v) for v in str(row[col]).replace(",", " ").split()]
    except ValueError:
        raise DataError(f"{col}: {row[col]!r} is not a space-separated list of numbers") from None


def _int(row: dict, col: str, default: int | type | None = DataError) -> int | None:
    value = row.get(col)
    if not _finite(value):
        if default is DataError:
            raise DataError(f"{col}: {value!r} is not a number")
        return default  # type: ignore[return-value]
    return int(float(value))  # type: ignore[arg-type]


def _bool(row: dict, col: str) -> bool:
    value = row.get(col)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "1.0"):
        return True
    if text in ("false", "0", "0.0"):
        return False
    raise DataError(f"{col}: {value!r} is not true/false")
