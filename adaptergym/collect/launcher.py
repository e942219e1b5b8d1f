"""Start a real vLLM server with LoRA enabled for one run, wait for ``/health``, stop it afterwards.

The command follows vLLM's CLI (``vllm serve MODEL --enable-lora --max-loras N --max-cpu-loras N
--max-lora-rank R --lora-modules name=path ...``), with prefix caching off as in the calibration data. A server
that exits during start-up is classified from its log into the real-runs statuses (``oom``, ``no_kv_memory``,
``kv_insufficient_for_max_model_len``, else ``launch_failed``): a refused start-up is a result, not a crash.
Without ``vllm`` on PATH or without an NVIDIA GPU, launching stops with a one-line error; nothing is faked.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from adaptergym.errors import DependencyNotInstalled

#: (status, phrases of vLLM's start-up errors), checked in order
STARTUP_FAILURES = (
    ("kv_insufficient_for_max_model_len", ("larger than the maximum number of tokens that can be stored in KV cache",
                                           "KV cache is needed, which is larger than the available KV cache memory")),
    ("no_kv_memory", ("No available memory for the cache blocks",)),
    ("oom", ("CUDA out of memory", "OutOfMemoryError", "is less than desired GPU memory utilization")),
)


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    """The vLLM server one run needs."""

    model: str
    port: int = 8000
    max_loras: int = 1
    max_cpu_loras: int | None = None
    max_lora_rank: int = 16
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    extra_args: tuple[str, ...] = ()


def vllm_command(spec: LaunchSpec, adapters: dict[str, Path]) -> list[str]:
    """The ``vllm serve`` command line for ``spec`` serving ``adapters`` (name -> directory)."""
    cmd = ["vllm", "serve", spec.model, "--host", "127.0.0.1", "--port", str(spec.port), "--enable-lora",
           "--max-loras", str(spec.max_loras), "--max-cpu-loras", str(spec.max_cpu_loras or spec.max_loras),
           "--max-lora-rank", str(spec.max_lora_rank), "--no-enable-prefix-caching"]
    if spec.max_num_seqs:
        cmd += ["--max-num-seqs", str(spec.max_num_seqs)]
    if spec.max_num_batched_tokens:
        cmd += ["--max-num-batched-tokens", str(spec.max_num_batched_tokens)]
    if adapters:
        cmd += ["--lora-modules", *(f"{name}={path}" for name, path in adapters.items())]
    return cmd + list(spec.extra_args)


def require_vllm_and_gpu() -> str:
    """The GPU's description (``1x NAME``); raises DependencyNotInstalled without vLLM or an NVIDIA GPU."""
    if shutil.which("vllm") is None:
        raise DependencyNotInstalled("--launch needs vLLM, and `vllm` is not on PATH: on a GPU machine, "
                                     "pip install 'adaptergym[vllm]'; or point --endpoint at a running server")
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30, check=True).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        raise DependencyNotInstalled("--launch needs an NVIDIA GPU and `nvidia-smi` found none; run collect on a "
                                     "GPU machine or point --endpoint at a running server") from None
    names = [n.strip() for n in out if n.strip()]
    return f"{len(names)}x {names[0]}" if names else "unknown GPU"


def classify_startup_failure(log_text: str) -> str:
    """The real-runs status of a vLLM start-up that failed, from its log."""
    for status, phrases in STARTUP_FAILURES:
        if any(phrase in log_text for phrase in phrases):
            return status
    return "launch_failed"


class VllmServer:
    """One ``vllm serve`` process whose output goes to ``log_path``."""

    def __init__(self, command: list[str], log_path: str | Path) -> None:
        self.command = command
        self.log_path = Path(log_path)
        self._process: subprocess.Popen | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                             start_new_session=True)

    async def wait_ready(self, endpoint: str, timeout_s: float) -> str:
        """``ok`` once ``/health`` answers 200; else the start-up failure status (or ``startup_timeout``)."""
        assert self._process is not None, "start() first"
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    return classify_startup_failure(self.log_path.read_text(errors="replace"))
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with session.get(f"{endpoint}/health", timeout=aiohttp.ClientTimeout(total=5)) as r:
                        if r.status == 200:
                            return "ok"
                await asyncio.sleep(2.0)
        return "startup_timeout"

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGINT the server's process group (vLLM shuts down cleanly on it), then kill it if it lingers."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)  # its own session: the engine-core children go too
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
