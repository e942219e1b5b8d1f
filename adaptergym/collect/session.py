"""One collect run end to end (optionally launching vLLM), and sweeps of runs from a JSON file.

A sweep file lists runs, each a workload plus the server flags it runs with; top-level keys are defaults
for every run::

    {"model": "meta-llama/Llama-3.1-8B-Instruct", "seed": 0,
     "runs": [{"workload": "w.json", "max_loras": 8, "max_lora_rank": 16},
              {"workload": "w.json", "max_loras": 32, "max_lora_rank": 16, "duration_s": 600}]}

Each run becomes one row of the runs CSV; with ``--launch`` every run gets a fresh server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from adaptergym.collect.adapters import load_model_config, write_adapters
from adaptergym.collect.launcher import LaunchSpec, VllmServer, require_vllm_and_gpu, vllm_command
from adaptergym.collect.runner import RunOutcome, run_requests
from adaptergym.collect.summary import ServerDescription, result_columns, run_row, server_columns, workload_columns
from adaptergym.collect.writer import RequestLog, append_run, requests_path
from adaptergym.errors import ConfigError
from adaptergym.simulation import draw_requests
from adaptergym.twin.config import ServerConfig, default_rank
from adaptergym.workload import WorkloadSpec

log = logging.getLogger(__name__)

SERVER_FLAGS = ("max_loras", "max_cpu_loras", "max_lora_rank", "max_num_seqs", "max_num_batched_tokens")


@dataclass(frozen=True, slots=True)
class RunPlan:
    """One run: a workload, its seed and duration, and the server flags (``None``: unknown / vLLM default)."""

    workload: str
    seed: int = 0
    duration_s: float | None = None
    max_loras: int | None = None
    max_cpu_loras: int | None = None
    max_lora_rank: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how to send: endpoint, or a vLLM to launch for each run."""

    endpoint: str = "http://127.0.0.1:8000"
    model: str | None = None  # the runs CSV's model column (default: the endpoint's base model)
    speed: float | None = None  # default: what the server reports (a twin's --speed), else 1
    timeout_s: float = 600.0
    launch: bool = False  # start `vllm serve <model>` for each run
    vllm_args: tuple[str, ...] = ()
    port: int = 8000
    work_dir: str = "collect-work"  # adapters and server logs when launching
    startup_timeout_s: float = 1800.0
    group: str = "collect"


async def _describe(endpoint: str) -> dict[str, Any]:
    """The endpoint's ``/version`` and base model (the ``/v1/models`` entry without parent); {} if unreachable."""
    info: dict[str, Any] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for path in ("/version", "/v1/models"):
            try:
                async with session.get(endpoint + path) as response:
                    data = await response.json(content_type=None) if response.status == 200 else None
            except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError, UnicodeDecodeError):
                data = None
            if isinstance(data, dict) and path == "/version":
                info.update(data)
            elif isinstance(data, dict) and isinstance(data.get("data"), list):
                bases = [m.get("id") for m in data["data"] if isinstance(m, dict) and not m.get("parent")]
                info["base_model"] = next((b for b in bases if b), None)
    return info


def collect_run(plan: RunPlan, target: Target, out: str | Path) -> dict[str, Any]:
    """Run ``plan`` against ``target``, append its row to ``out`` (and requests to ``<out>.requests.csv``).

    Returns the run's row. A vLLM that refuses to start yields a row with that status, not an error.
    """
    spec = WorkloadSpec.from_json(plan.workload)
    requests = draw_requests(spec, plan.seed, plan.duration_s)
    if plan.duration_s is not None:
        spec = spec.with_duration(plan.duration_s)
    ranks = [int(r) for r in requests.adapter_ranks]
    flags = {name: getattr(plan, name) for name in SERVER_FLAGS}
    endpoint = target.endpoint.rstrip("/")
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S")
    run_id = f"{target.group}/{spec.name}/{_label(flags)}/{started_at}"
    base: dict[str, Any] = {"run_id": run_id, "dataset_group": target.group, "workload": plan.workload,
                            "seed": plan.seed, "started_at": started_at, "endpoint": endpoint}
    base |= workload_columns(spec, requests)
    server: VllmServer | None = None
    try:
        gpu = ""
        if target.launch:
            if not target.model:
                raise ConfigError("--launch needs --model (the model vLLM serves)")
            gpu = require_vllm_and_gpu()
            flags = _launch_flags(flags, ranks, len(requests.adapter_ids))
            endpoint = f"http://127.0.0.1:{target.port}"
            base["endpoint"] = endpoint
            server, status = _launch(target, flags, dict(zip(requests.adapter_ids, ranks, strict=True)), run_id)
            if status != "ok":
                log.warning("vLLM did not start (%s); see %s", status, server.log_path)
                description = _description(model_label(target.model), flags, gpu, "")
                row = run_row(base | server_columns(description) | {"status": status})
                append_run(out, row)
                return row
        info = asyncio.run(_describe(endpoint))
        if not info:
            log.warning("%s does not answer /version or /v1/models; sending the workload anyway", endpoint)
        speed = target.speed or float(info.get("speed") or 1.0)
        model = model_label(target.model or info.get("base_model") or "")
        version = str(info.get("version", ""))
        if "twin_profile" in info:  # a twin server says what it runs: its flags fill those not given
            version, gpu = f"{version} (adaptergym twin {info['twin_profile']})", str(info.get("gpu", ""))
            served = info.get("config") if isinstance(info.get("config"), dict) else {}
            flags = {k: v if v is not None else served.get(k) for k, v in flags.items()}
        description = _description(model, flags, gpu, version)
        request_log = RequestLog(requests_path(out), run_id)
        outcome = RunOutcome([], 0.0)
        try:
            asyncio.run(run_requests(endpoint, requests, speed=speed, timeout_s=target.timeout_s, seed=plan.seed,
                                     on_result=request_log.write, into=outcome))
        except KeyboardInterrupt:  # keep what was measured, marked so that nobody fits on it
            append_run(out, run_row(base | server_columns(description) | result_columns(outcome)
                                    | {"speed": speed, "status": "interrupted"}))
            raise
        finally:
            request_log.close()
        row = run_row(base | server_columns(description) | result_columns(outcome) | {"speed": speed})
        append_run(out, row)
        return row
    finally:
        if server is not None:
            server.stop()


def model_label(model: str) -> str:
    """The runs CSV's model name: last path component, lower-cased, as in real_runs.csv
    (``meta-llama/Llama-3.1-8B-Instruct`` -> ``llama-3.1-8b-instruct``)."""
    return Path(model.rstrip("/")).name.lower() if model else ""


def _launch_flags(flags: dict[str, int | None], ranks: list[int], n_adapters: int) -> dict[str, int | None]:
    """Server flags for a launched vLLM: unset ones as `adaptergym simulate` sets them (one slot per adapter,
    the smallest --max-lora-rank covering the workload), so the row says exactly what ran."""
    config = default_rank(ServerConfig(max_loras=flags["max_loras"] or max(1, n_adapters),
                                       max_cpu_loras=flags["max_cpu_loras"],
                                       max_lora_rank=flags["max_lora_rank"]), ranks)
    config.validate()
    return flags | {"max_loras": config.max_loras, "max_cpu_loras": config.max_cpu_loras or config.max_loras,
                    "max_lora_rank": config.max_lora_rank}


def _launch(target: Target, flags: dict[str, int | None], adapters: dict[str, int],
            run_id: str) -> tuple[VllmServer, str]:
    assert target.model
    work = Path(target.work_dir)
    model_config = load_model_config(target.model)
    paths = write_adapters(work / "adapters", target.model, model_config, adapters)
    spec = LaunchSpec(target.model, target.port, int(flags["max_loras"] or 1), flags["max_cpu_loras"],
                      int(flags["max_lora_rank"] or 16), flags["max_num_seqs"], flags["max_num_batched_tokens"],
                      target.vllm_args)
    server = VllmServer(vllm_command(spec, paths), work / "logs" / (run_id.replace("/", "_") + ".log"))
    log.info("starting: %s", " ".join(server.command[:12]) + " ...")
    server.start()
    return server, asyncio.run(server.wait_ready(f"http://127.0.0.1:{target.port}", target.startup_timeout_s))


def _description(model: str, flags: dict[str, int | None], gpu: str, version: str) -> ServerDescription:
    return ServerDescription(model, flags["max_loras"], flags["max_cpu_loras"], flags["max_lora_rank"],
                             flags["max_num_seqs"], flags["max_num_batched_tokens"], True, gpu, version)


def _label(flags: dict[str, int | None]) -> str:
    return "_".join(f"{k}={v}" for k, v in flags.items() if v is not None) or "default"


def load_sweep(path: str | Path) -> list[RunPlan]:
    """The runs of a sweep file (workload paths relative to the file); raises ConfigError naming the field."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"--sweep {str(path)!r}: cannot read ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--sweep {str(path)!r}: malformed JSON at line {exc.lineno}: {exc.msg}") from None
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list) or not data["runs"]:
        raise ConfigError(f"--sweep {str(path)!r}: expected an object with a non-empty 'runs' list")
    fields = {f.name for f in dataclasses.fields(RunPlan)}
    defaults = {k: v for k, v in data.items() if k in fields}
    unknown = set(data) - fields - {"runs", "model"}
    if unknown:
        raise ConfigError(f"--sweep {str(path)!r}: unknown key(s) {sorted(unknown)}; allowed: runs, model, "
                          f"{', '.join(sorted(fields))}")
    plans = []
    for i, run in enumerate(data["runs"]):
        if not isinstance(run, dict) or set(run) - fields:
            bad = sorted(set(run) - fields) if isinstance(run, dict) else run
            raise ConfigError(f"--sweep {str(path)!r}: runs[{i}]: unknown key(s) {bad}; allowed: "
                              f"{', '.join(sorted(fields))}")
        merged = defaults | run
        if "workload" not in merged:
            raise ConfigError(f"--sweep {str(path)!r}: runs[{i}] has no 'workload'")
        workload = Path(str(merged["workload"]))
        merged["workload"] = str(workload if workload.is_absolute() else path.parent / workload)
        try:
            plans.append(RunPlan(**merged))
        except TypeError as exc:
            raise ConfigError(f"--sweep {str(path)!r}: runs[{i}]: {exc}") from None
    return plans


def sweep_model(path: str | Path) -> str | None:
    """The sweep file's ``model`` (what --launch serves), if it names one."""
    data = json.loads(Path(path).read_text())
    return data.get("model") if isinstance(data, dict) else None

