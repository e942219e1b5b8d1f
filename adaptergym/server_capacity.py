"""What one vLLM server can serve, as the twin measures it: the slot levels a server may start with, the rank it is
started at, its saturated throughput (the unit every load is counted in) and a request's mean tokens.

Shared by placement, the surrogate, the advisor, the dynamic fleet and the environments; it knows nothing of
gymnasium, so those layers can use it without importing the environments.
"""

from __future__ import annotations

import json
from functools import cache

import numpy as np

from adaptergym.profile import TwinProfile
from adaptergym.twin import ReplicaPlan, ServerConfig, check_startup, simulate_fleet
from adaptergym.twin.config import VLLM_MAX_LORA_RANKS
from adaptergym.workload import AdapterSpec, LengthSpec, WorkloadSpec, sample_requests
from adaptergym.workload.lengths import sample_lengths

#: Default ``max_loras`` choices (GPU adapter slots) an action picks from.
MAX_LORAS_LEVELS = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384)
def rank_cover(rank: int) -> int:
    """The smallest ``--max-lora-rank`` vLLM accepts that covers ``rank`` (what a server would be started with)."""
    return next((r for r in VLLM_MAX_LORA_RANKS if r >= rank), VLLM_MAX_LORA_RANKS[-1])


def slot_caps(profile: TwinProfile, levels: tuple[int, ...]) -> dict[int, int]:
    """For each vLLM ``max_lora_rank``, how many of ``levels`` (a prefix) start on the profile's GPU."""
    caps = {}
    for rank in VLLM_MAX_LORA_RANKS:
        ok = [check_startup(profile, ServerConfig(max_loras=m, max_lora_rank=rank)).ok for m in levels]
        caps[rank] = next((i for i, good in enumerate(ok) if not good), len(levels))
    return caps


@cache
def mean_lengths(lengths: LengthSpec) -> tuple[float, float]:
    """Mean prompt and output tokens of one request under ``lengths`` (20,000 draws from a fixed seed)."""
    inp, out = sample_lengths(lengths, 20_000, np.random.default_rng(0))
    return float(inp.mean()), float(out.mean())


def mean_request_tokens(lengths: LengthSpec) -> float:
    """Mean prompt + output tokens of one request under ``lengths``."""
    return sum(mean_lengths(lengths))


def saturated_throughput(profile: TwinProfile, lengths: LengthSpec, adapters: int = 8, rank: int = 16,
                         max_loras: int = 8, duration_s: float = 240.0, config: ServerConfig | None = None) -> float:
    """Throughput of one GPU offered far more than it can serve, tokens/s, as the twin measures it.

    ``adapters`` adapters of ``rank`` share 40,000 tokens/s of requests; the result counts the prompt and output
    tokens of requests completed in the second half of ``duration_s``. The server runs ``config`` if given, else
    ``max_loras`` slots, a CPU cache holding every adapter and the smallest ``max_lora_rank`` covering ``rank``.
    """
    rate = 40_000.0 / mean_request_tokens(lengths) / adapters
    spec = WorkloadSpec(tuple(AdapterSpec(f"sat-{i}", rank, rate) for i in range(adapters)), lengths,
                        duration_s=duration_s)
    if config is None:
        config = ServerConfig(max_loras=max_loras, max_cpu_loras=max(max_loras, adapters),
                              max_lora_rank=rank_cover(rank))
    return second_half_throughput(profile, spec, config)


def second_half_throughput(profile: TwinProfile, workload: WorkloadSpec, config: ServerConfig, seed: int = 0) -> float:
    """Tokens/s (prompt + output) of the requests one GPU completes in the second half of ``workload``'s
    duration: its saturated throughput when ``workload`` offers more than it can serve (0 if it does not start)."""
    requests = sample_requests(workload, np.random.default_rng(seed))
    record = simulate_fleet(profile, requests, [ReplicaPlan(config, requests.adapter_ids)])[0]
    half = workload.duration_s / 2
    done = np.isfinite(record.finish_s) & (record.finish_s >= half)
    tokens = record.input_tokens[done].sum() + record.output_tokens[done].sum()
    return float(tokens) / half


_CAPACITY: dict[tuple[str, LengthSpec], float] = {}
_PROFILE_KEYS: dict[int, tuple[TwinProfile, str]] = {}  # id -> (the profile, kept alive so its id stays its own; key)


def _profile_key(profile: TwinProfile) -> str:
    """The profile's fields as JSON, serialised once per profile object (milliseconds each; envs ask at every
    reset)."""
    if id(profile) not in _PROFILE_KEYS:
        _PROFILE_KEYS[id(profile)] = (profile, json.dumps(profile.to_dict(), sort_keys=True, default=str))
    return _PROFILE_KEYS[id(profile)][1]


def reference_capacity(profile: TwinProfile, lengths: LengthSpec) -> float:
    """Saturated throughput of one GPU, tokens/s: the unit of every "load" in observations.

    Measured once per process and (profile, lengths) by :func:`saturated_throughput` with its defaults: 8
    rank-16 adapters on ``max_loras`` 8, over 240 simulated seconds.
    """
    key = (_profile_key(profile), lengths)
    if key not in _CAPACITY:
        _CAPACITY[key] = max(saturated_throughput(profile, lengths), 1.0)
    return _CAPACITY[key]
