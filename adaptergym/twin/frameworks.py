"""Serving frameworks the twin can run, keyed by a profile's ``framework`` field (data, never a model name).

Each framework brings its engine factory (one replica's scheduler loop, producing a ``RunRecord``), its start-up
memory accounting and the way its steps map onto the step-time model's features. How the twin's knobs map onto
each framework's flags (vLLM V1 ``vllm-v1``; S-LoRA ``slora``):

* ``max_num_seqs``: ``--max-num-seqs``; S-LoRA's ``--running_max_req_size``.
* ``max_num_batched_tokens``: ``--max-num-batched-tokens`` (tokens per step, chunked prefill); S-LoRA's
  ``--batch_max_tokens`` (prompt tokens of one admitted mini-batch, prefilled whole).
* ``max_loras``: ``--max-loras`` (GPU adapter slots); S-LoRA has none: any number of adapters is resident, as
  its pool allows, so the flag is ignored.
* ``max_cpu_loras``: ``--max-cpu-loras``; S-LoRA has none: with ``--swap`` every adapter sits in host memory.
* ``max_lora_rank``: ``--max-lora-rank`` (every slot is padded to it); S-LoRA has none (an adapter takes
  ``memory.adapter_pages_per_rank`` x its own rank slots); it only sets the rank of the step model's rank terms.
* KV budget: ``memory.gpu_memory_utilization`` is ``--gpu-memory-utilization``; S-LoRA's is a fixed pool,
  ``memory.kv_pool_tokens`` (``--max_total_token_num``).
* ``max_model_len``: ``--max-model-len``; S-LoRA's ``--max_req_total_len`` (longest prompt + output).
* ``engine.admit_every_steps``: 1 in vLLM; S-LoRA's router constant ``max_wait_tokens`` (10).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from adaptergym.errors import UnknownName
from adaptergym.profile import TwinProfile
from adaptergym.registry import Registry
from adaptergym.twin.config import ServerConfig
from adaptergym.twin.engine import ReplicaEngine
from adaptergym.twin.frontend import ApiServer, through_api_server
from adaptergym.twin.record import RunRecord
from adaptergym.twin.slora import SLoraEngine, pool_startup, slora_step_timer
from adaptergym.twin.startup import Startup, vllm_startup
from adaptergym.twin.step_time import StepTimer
from adaptergym.workload.requests import RequestBatch


class Engine(Protocol):
    """What every framework's engine offers (``adaptergym.long_runs`` and the fleet read these)."""

    now: float
    n_arrived: int
    n_refused: int
    max_waiting: int
    adapter_ids: tuple[str, ...]

    @property
    def max_loras(self) -> int: ...

    @property
    def n_outstanding(self) -> int: ...

    @property
    def n_waiting(self) -> int: ...

    def run_until(self, t_stop: float) -> None: ...

    def record(self, duration_s: float) -> RunRecord: ...

    def generated_tokens(self) -> np.ndarray: ...

    def exclude(self, rid: int) -> None: ...


@dataclass(frozen=True)
class Framework:
    """One serving framework as the twin runs it.

    Attributes:
        engine: the engine factory (a class or function), called as ``engine(profile, config, requests, startup)``.
        startup: start-up accounting, ``startup(profile, config) -> Startup``.
        step_timer: the step-time features of a step, ``step_timer(profile, config) -> StepTimer``.
        online: whether the engine takes requests one by one (``submit``), as ``adaptergym serve`` needs.
        api_server: the server ahead of each engine, ``api_server(profile, config, resolved) -> ApiServer``
            (``resolved``: the adapters it has resolved already), which online callers pass requests through.
        label: the framework part of a profile name (``<gpu>__<model>__<label>``).
    """

    engine: Callable[[TwinProfile, ServerConfig, RequestBatch, Startup], Engine]
    startup: Callable[[TwinProfile, ServerConfig], Startup]
    step_timer: Callable[[TwinProfile, ServerConfig], StepTimer]
    online: bool
    label: Callable[[TwinProfile], str]
    api_server: Callable[[TwinProfile, ServerConfig, Sequence[int]], ApiServer]


FRAMEWORKS: Registry[Framework] = Registry("serving framework", UnknownName)


@FRAMEWORKS.register("vllm-v1")
def _vllm_v1() -> Framework:
    return Framework(vllm_engine, vllm_startup, vllm_step_timer, online=True,
                     label=lambda profile: f"vllm-{profile.vllm_version}", api_server=vllm_api_server)


@FRAMEWORKS.register("slora")
def _slora() -> Framework:
    return Framework(SLoraEngine, pool_startup, slora_step_timer, online=False, label=lambda profile: "slora",
                     api_server=lambda profile, config, resolved=(): ApiServer(0.0, 0))  # none modelled


def vllm_engine(profile: TwinProfile, config: ServerConfig, requests: RequestBatch, startup: Startup) -> ReplicaEngine:
    """vLLM's engine, its requests having come through its API server first (``adaptergym.twin.frontend``)."""
    return ReplicaEngine(profile, config, through_api_server(requests, vllm_api_server(profile, config)), startup)


def vllm_api_server(profile: TwinProfile, config: ServerConfig, resolved: Sequence[int] = ()) -> ApiServer:
    """The API server ahead of a vLLM replica of ``config``: it keeps ``max(max_loras, max_num_seqs)`` adapters
    resolved, and holds nothing up without LoRA."""
    return ApiServer(profile.loading.api_server_new_adapter_ms if config.enable_lora else 0.0,
                     max(config.max_loras, int(config.max_num_seqs or profile.engine.max_num_seqs)), resolved)


def vllm_step_timer(profile: TwinProfile, config: ServerConfig) -> StepTimer:
    """vLLM's step features: slots padded to ``max_lora_rank``, ``max_loras`` slots walked by its kernels."""
    return StepTimer(profile, int(config.max_lora_rank or 0), config.enable_lora, config.max_loras)


def framework_of(profile: TwinProfile) -> Framework:
    """The framework a profile names (an unknown name gets the closest known ones)."""
    return FRAMEWORKS.get(profile.framework)()


def check_startup(profile: TwinProfile, config: ServerConfig) -> Startup:
    """Does the profile's framework start with ``config``, and how much KV memory does it get?"""
    return framework_of(profile).startup(profile, config)


def new_engine(profile: TwinProfile, config: ServerConfig, requests: RequestBatch) -> Engine | None:
    """An engine of the profile's framework ready to run, or None when the server would not start."""
    framework = framework_of(profile)
    startup = framework.startup(profile, config)
    return framework.engine(profile, config, requests, startup) if startup.ok else None
