"""The server knobs ``adaptergym advise`` searches for one workload on one GPU, and how a choice is spelled.

Knobs and their ranges (:class:`Space`):

- ``max_loras``: 1 to the workload's adapter count, within what starts at ``max_lora_rank``;
- ``max_cpu_loras``: ``max_loras`` to the adapter count (vLLM's default is ``max_loras``, which reloads adapters
  from disk whenever more are served than fit in the cache);
- ``max_num_seqs``: powers of two from :data:`MIN_MAX_NUM_SEQS` up to the profile's default (the calibrated
  runs' setting), and that default;
- ``gpu_memory_utilization`` (the KV budget): from the smallest value the configuration starts at to the
  profile's (0.9, vLLM's default and the setting of every start-up the memory model was fitted on: above it the
  twin would extrapolate), on a grid of :data:`UTILIZATION_STEP`;
- ``max_lora_rank``: the smallest value vLLM accepts covering the largest adapter rank, or the next one.

``max_model_len`` is not searched: it is set to the smallest power of two holding the workload's longest
request (capped at the model's context), because the KV cache must hold one ``max_model_len`` sequence to start
and the model's full context (131,072 tokens for Llama-3.1-8B) would otherwise floor the KV budget at 16 GiB.
``max_num_batched_tokens`` stays the profile's (the setting its step-time model was fitted at).
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, replace

from adaptergym.profile import GIB, TwinProfile
from adaptergym.twin import ServerConfig, check_startup, lora_memory_gib
from adaptergym.twin.config import VLLM_MAX_LORA_RANKS
from adaptergym.workload import LengthSpec, WorkloadSpec
from adaptergym.workload.lengths import longest_request_tokens

#: Resolution of ``--gpu-memory-utilization`` (vLLM takes any float; two decimals are what people type).
UTILIZATION_STEP = 0.01
#: The smallest ``--max-num-seqs`` searched.
MIN_MAX_NUM_SEQS = 8


def model_len_cover(lengths: LengthSpec, profile: TwinProfile) -> int:
    """The smallest power of two holding the longest request of ``lengths``, capped at the model's context."""
    longest = longest_request_tokens(lengths)
    return min(profile.memory.max_model_len, 1 << max(0, math.ceil(math.log2(longest))))


def utilization_floor(profile: TwinProfile, config: ServerConfig) -> float | None:
    """The smallest ``gpu_memory_utilization`` on the :data:`UTILIZATION_STEP` grid at which ``config`` starts
    (weights, LoRA slots, activations and one ``max_model_len`` sequence of KV blocks fit); None if none does."""
    mem, block = profile.memory, profile.engine.block_size
    longest = config.max_model_len or mem.max_model_len
    lora = lora_memory_gib(profile, config.max_loras, config.max_lora_rank or 0) if config.enable_lora else 0.0
    kv = math.ceil(longest / block) * block * mem.kv_bytes_per_token / GIB
    share = (mem.weights_gib + lora + mem.activation_gib + kv) / mem.gpu_memory_gib
    steps = math.ceil(share / UTILIZATION_STEP - 1e-9)
    for k in (steps, steps + 1):  # the next step absorbs floating-point rounding at the boundary
        utilization = round(k * UTILIZATION_STEP, 6)
        if utilization <= 1.0 and check_startup(profile, replace(config, gpu_memory_utilization=utilization)).ok:
            return utilization
    return None


@dataclass(frozen=True)
class Space:
    """What each knob may be for ``workload`` on ``profile`` (module doc)."""

    profile: TwinProfile
    adapters: int
    rank_choices: tuple[int, ...]
    max_model_len: int
    utilization_cap: float

    @classmethod
    def of(cls, workload: WorkloadSpec, profile: TwinProfile) -> Space:
        largest = max(a.rank for a in workload.adapters)
        covers = tuple(r for r in VLLM_MAX_LORA_RANKS if r >= largest)[:2]
        return cls(profile, len(workload.adapters), covers, model_len_cover(workload.lengths, profile),
                   profile.memory.gpu_memory_utilization)

    def config(self, max_loras: int, max_lora_rank: int, max_cpu_loras: int | None = None,
               max_num_seqs: int | None = None, gpu_memory_utilization: float | None = None) -> ServerConfig:
        """The resolved config of these knobs (unset ones: the profile's, ``max_model_len`` the space's)."""
        return ServerConfig(max_loras=max_loras, max_cpu_loras=max_cpu_loras, max_lora_rank=max_lora_rank,
                            max_num_seqs=max_num_seqs, gpu_memory_utilization=gpu_memory_utilization,
                            max_model_len=self.max_model_len).resolved(self.profile)

    def max_slots(self, max_lora_rank: int) -> int:
        """The most ``max_loras`` (up to the adapter count) that start at ``max_lora_rank`` and the utilization
        cap (0: not even one); start-up memory grows with slots, so a bisection finds it."""
        def starts(slots: int) -> bool:
            config = self.config(slots, max_lora_rank, gpu_memory_utilization=self.utilization_cap)
            return check_startup(self.profile, config).ok

        if not starts(1):
            return 0
        low, high = 1, self.adapters
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if starts(mid) else (low, mid - 1)
        return low

    def choose(self, max_loras: int, max_cpu_loras: int, max_num_seqs: int, max_lora_rank: int,
               kv_share: float) -> ServerConfig | None:
        """The config of one choice, ``kv_share`` in [0, 1] placing ``gpu_memory_utilization`` between the
        configuration's floor (:func:`utilization_floor`) and :attr:`utilization_cap`; None when it does not start
        at the cap."""
        config = self.config(max_loras, max_lora_rank, max_cpu_loras, max_num_seqs)
        floor = utilization_floor(self.profile, config)
        if floor is None or floor > self.utilization_cap:
            return None
        steps = round(kv_share * (self.utilization_cap - floor) / UTILIZATION_STEP)
        return replace(config, gpu_memory_utilization=round(floor + steps * UTILIZATION_STEP, 6))


#: The fields advise sets, in the order printed; each is a vLLM flag (and an ``adaptergym simulate`` flag) of the
#: same name with dashes.
FLAG_FIELDS = ("max_loras", "max_cpu_loras", "max_lora_rank", "max_num_seqs", "max_num_batched_tokens",
               "gpu_memory_utilization", "max_model_len")


def vllm_flags_dict(config: ServerConfig) -> dict[str, float | int]:
    """The fields of :data:`FLAG_FIELDS` of a resolved config, by name."""
    return {name: getattr(config, name) for name in FLAG_FIELDS}


def flag_args(config: ServerConfig) -> list[str]:
    """``--max-loras 8 --max-cpu-loras 24 ...`` for a resolved config, as vLLM and ``adaptergym simulate`` spell
    them."""
    return [arg for name, value in vllm_flags_dict(config).items()
            for arg in ("--" + name.replace("_", "-"), f"{value:g}" if isinstance(value, float) else str(value))]


def vllm_serve_command(profile: TwinProfile, config: ServerConfig) -> str:
    """The ``vllm serve`` command line of ``config`` for the profile's model (adapters are added with
    ``--lora-modules`` or loaded at run time)."""
    return shlex.join(["vllm", "serve", profile.model, "--enable-lora", *flag_args(config)])


def simulate_command(workload_path: str, profile: TwinProfile, config: ServerConfig, duration_s: float,
                     seed: int) -> str:
    """The ``adaptergym simulate`` run that reproduces the twin's verdict on ``config``."""
    return shlex.join(["adaptergym", "simulate", "--workload", workload_path, "--profile", profile.name,
                       *flag_args(config), "--duration", f"{duration_s:.12g}", "--seed", str(seed), "--json"])
