"""Run one replica: start-up check, then the engine over a request batch."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from adaptergym.errors import ConfigError
from adaptergym.profile import TwinProfile
from adaptergym.twin.config import ServerConfig
from adaptergym.twin.frameworks import check_startup, new_engine
from adaptergym.twin.record import ITL_BINS, RunRecord
from adaptergym.workload.requests import RequestBatch

ProgressCallback = Callable[[float], None]


def check_ranks(requests: RequestBatch, config: ServerConfig, served: np.ndarray | None = None) -> None:
    """vLLM rejects an adapter whose rank exceeds ``max_lora_rank``: name the first such adapter."""
    ranks = requests.adapter_ranks if served is None else requests.adapter_ranks[served]
    ids = requests.adapter_ids if served is None else [requests.adapter_ids[i] for i in served]
    too_big = np.flatnonzero(ranks > (config.max_lora_rank or 0))
    if config.enable_lora and too_big.size:
        i = int(too_big[0])
        raise ConfigError(f"adapter {ids[i]!r}: rank {int(ranks[i])} exceeds max_lora_rank "
                          f"{config.max_lora_rank}; raise --max-lora-rank to at least {int(ranks[i])}")


def check_lengths(requests: RequestBatch, config: ServerConfig, mask: np.ndarray | None = None) -> None:
    """vLLM rejects a request longer (prompt + output) than ``max_model_len``: name the first such request."""
    if config.max_model_len is None:
        return
    tokens = requests.input_tokens + requests.output_tokens
    if mask is not None:
        tokens = np.where(mask, tokens, 0)
    too_long = np.flatnonzero(tokens > config.max_model_len)
    if too_long.size:
        i = int(too_long[0])
        raise ConfigError(f"request {i} (adapter {requests.adapter_ids[requests.adapter[i]]!r}): {int(tokens[i])} "
                          f"tokens exceed max_model_len {config.max_model_len}, which vLLM rejects; raise "
                          f"--max-model-len to at least {int(tokens.max())}")


def failed_record(profile: TwinProfile, config: ServerConfig, requests: RequestBatch, duration_s: float) -> RunRecord:
    """The record of a replica that did not start: every request is lost."""
    n = len(requests)
    nan = np.full(n, np.nan)
    return RunRecord(
        startup=check_startup(profile, config), duration_s=duration_s, arrival_s=requests.arrival_s,
        adapter=requests.adapter, input_tokens=requests.input_tokens, output_tokens=requests.output_tokens,
        first_token_s=nan, finish_s=nan, preemptions=np.zeros(n, np.int64), refused=np.zeros(n, bool),
        adapter_ids=requests.adapter_ids, itl_hist=np.zeros(ITL_BINS, np.int64),
    )


def run_replica(
    profile: TwinProfile,
    config: ServerConfig,
    requests: RequestBatch,
    progress: ProgressCallback | None = None,
) -> RunRecord:
    """Simulate one replica over ``requests`` until ``requests.duration_s`` (or until drained for bursts)."""
    engine = new_engine(profile, config, requests)
    if engine is None:
        return failed_record(profile, config, requests, requests.duration_s)
    if requests.drain:
        engine.run_until(math.inf)
        duration = max(engine.now, 1e-9)
    else:
        duration = requests.duration_s
        chunks = 50 if progress else 1
        for k in range(1, chunks + 1):
            engine.run_until(duration * k / chunks)
            if progress:
                progress(min(engine.now, duration) / duration)
    return engine.record(duration)
