"""``adaptergym collect``: drive a workload against an OpenAI-compatible endpoint; write real-runs rows."""

from __future__ import annotations

import argparse
import shlex

from adaptergym.cli.base import Command


class Collect(Command):
    """Send a workload's request stream to an OpenAI-compatible server and record what it measured.

    Requests arrive as the workload draws them (same --seed, same stream as `adaptergym simulate`), each a
    streamed completion with exact prompt length (token ids) and output length (max_tokens, ignore_eos).
    One row per run goes to --out in the columns of shared/data/real_runs.csv; one row per request to
    <out>.requests.csv, appended as each request ends. With --launch, vLLM is started for each run with
    zero-weight LoRA adapters of the workload's ranks, and stopped afterwards. Server flags (--max-loras ...)
    configure a launched vLLM, or describe the server at --endpoint for the row.
    """

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        what = parser.add_mutually_exclusive_group(required=True)
        what.add_argument("--workload", help="workload JSON or trace CSV")
        what.add_argument("--sweep", help="sweep JSON: a list of runs (workload + server flags)")
        parser.add_argument("--out", required=True, help="runs CSV to append to (requests go to <out>.requests.csv)")
        parser.add_argument("--endpoint", default="http://127.0.0.1:8000", help="server base URL")
        parser.add_argument("--seed", type=int, default=0, help="seed of the request draw")
        parser.add_argument("--duration", type=float, default=None, help="override the workload's duration_s")
        parser.add_argument("--speed", type=float, default=None,
                            help="run seconds per wall second (default: the twin server's --speed, else 1)")
        parser.add_argument("--timeout", type=float, default=600.0, help="seconds without a reply byte -> timeout")
        parser.add_argument("--model", default=None, help="what --launch serves; the rows' model is its last path "
                            "component, lower-cased (default: the endpoint's base model)")
        parser.add_argument("--group", default="collect", help="dataset_group of the rows")
        for flag in ("--max-loras", "--max-cpu-loras", "--max-lora-rank", "--max-num-seqs",
                     "--max-num-batched-tokens"):
            parser.add_argument(flag, type=int, default=None, help=f"vLLM {flag}")
        launch = parser.add_argument_group("launching vLLM")
        launch.add_argument("--launch", action="store_true", help="start `vllm serve --model ...` for each run")
        launch.add_argument("--vllm-args", default="", help="extra vllm serve arguments, e.g. '--max-model-len 8192'")
        launch.add_argument("--port", type=int, default=8000, help="port of the launched server")
        launch.add_argument("--work-dir", default="collect-work", help="where adapters and server logs go")
        launch.add_argument("--startup-timeout", type=float, default=1800.0, help="seconds to wait for /health")

    def take_action(self, args: argparse.Namespace) -> int:
        import dataclasses
        import logging
        import math

        from adaptergym.collect import RunPlan, Target, collect_run, load_sweep
        from adaptergym.collect.session import sweep_model
        from adaptergym.errors import ConfigError

        for name in ("speed", "timeout", "duration"):
            value = getattr(args, name)
            if value is not None and (not math.isfinite(value) or value <= 0):
                raise ConfigError(f"--{name}: {value} must be a number > 0")
        flags = {k: getattr(args, k) for k in ("max_loras", "max_cpu_loras", "max_lora_rank", "max_num_seqs",
                                               "max_num_batched_tokens")}
        if args.sweep:
            # server flags on the command line fill in what a sweep's runs leave unset
            plans = [dataclasses.replace(p, **{k: v for k, v in flags.items() if v is not None and
                                              getattr(p, k) is None}) for p in load_sweep(args.sweep)]
            model = args.model or sweep_model(args.sweep)
        else:
            plans = [RunPlan(args.workload, args.seed, args.duration, **flags)]
            model = args.model
        target = Target(args.endpoint, model, args.speed, args.timeout, args.launch,
                        tuple(shlex.split(args.vllm_args)), args.port, args.work_dir, args.startup_timeout, args.group)
        log = logging.getLogger("adaptergym.collect")
        for i, plan in enumerate(plans, 1):
            row = collect_run(plan, target, args.out)
            errors = row.get("errors") or "{}"
            log.info("run %d/%d %s: %s, %s requests ok, %s failed %s, total throughput %s tok/s", i, len(plans),
                     row["exp_name"], row["status"], row.get("successful_requests", ""),
                     row.get("failed_requests", ""), errors, _fmt(row.get("total_throughput_tok_s")))
        return 0


def _fmt(value: object) -> str:
    return f"{value:,.1f}" if isinstance(value, float) else str(value)
