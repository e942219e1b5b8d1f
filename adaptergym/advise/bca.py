"""The batching configuration advisor (BCA) study on the twin: how much KV cache near-peak throughput needs.

BCA's observation: large-batch decoding is memory-bound, so throughput flattens as the batch grows, and the
smallest KV budget / batch that keeps near-peak throughput frees memory for other work. Its published figures:
OPT-1.3B keeps 83% of peak throughput with 16% of the KV cache; Llama-2-7B frees 10.5% of GPU memory.

Here, for each profile, one GPU is saturated as the twin's reference capacity is measured
(:func:`adaptergym.server_capacity.saturated_throughput`: :data:`ADAPTERS` rank-:data:`RANK` adapters sharing
40,000 tokens/s of ShareGPT requests, every adapter in a slot, tokens/s completed in the second half of 240
simulated s), with ``--max-model-len`` 2048 (ShareGPT's longest request) so the model's full context does not
floor the KV cache. Two curves:

- throughput vs KV budget: ``gpu_memory_utilization`` from the smallest that starts to the profile's (0.9) in
  steps of :data:`UTILIZATION_GRID`; the KV cache is what the memory model leaves;
- throughput vs batch: ``max_num_seqs`` in :data:`BATCHES` at the profile's utilization.

Peak is the highest throughput on the KV curve. For each tolerance in :data:`TOLERANCES`, the smallest budget
from which every larger one stays within it; the memory that frees is ``(0.9 - utilization)`` x GPU memory.
What it buys: more GPU adapter slots (of rank :data:`RANK`) at the same KV budget. It does not buy CPU cache
(``--max-cpu-loras`` holds adapters in host memory, not GPU memory). Another replica on the same GPU: the
profiles model one vLLM process per GPU and hold no co-location measurements (two processes share the GPU's
compute), so the study only says whether a second replica's start-up memory would fit, never its throughput.

``adaptergym advise --bca [--profile P] [--plot bca.png] [--json]`` prints it, for every shipped profile whose KV
cache that budget sizes (:func:`budget_sets_kv`: not S-LoRA's fixed pool) or for ``--profile``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from adaptergym.advise.knobs import model_len_cover, utilization_floor
from adaptergym.errors import ConfigError
from adaptergym.profile import GIB, TwinProfile, load_profile
from adaptergym.server_capacity import saturated_throughput
from adaptergym.twin import ServerConfig, check_startup, lora_memory_gib
from adaptergym.workload import LengthSpec

ADAPTERS, RANK = 8, 16
TOLERANCES = (0.01, 0.05, 0.10)
UTILIZATION_GRID = 0.02
BATCHES = tuple(2**k for k in range(12))
#: BCA's published figures.
PAPER_KV_SHARE, PAPER_THROUGHPUT_SHARE = 0.16, 0.83  # OPT-1.3B
PAPER_LLAMA2_FREED_SHARE = 0.105


@dataclass(frozen=True)
class Point:
    """One twin run of the saturated GPU."""

    gpu_memory_utilization: float
    max_num_seqs: int
    kv_cache_gib: float
    kv_share: float  # of the KV cache at the profile's utilization and max_num_seqs
    throughput_tok_s: float


@dataclass(frozen=True)
class Budget:
    """The smallest KV budget within ``tolerance`` of peak, and what the memory it frees buys."""

    tolerance: float
    point: Point
    throughput_share: float
    freed_gib: float
    freed_share: float  # of GPU memory
    extra_slots: int  # rank-RANK adapter slots the freed memory holds
    smallest_batch: int  # the smallest max_num_seqs within tolerance on the batch curve


@dataclass(frozen=True)
class Study:
    """The BCA study of one profile (module doc)."""

    profile: str
    peak_tok_s: float
    kv_curve: tuple[Point, ...]
    batch_curve: tuple[Point, ...]
    budgets: tuple[Budget, ...]
    share_at_paper_kv: float | None  # throughput share at 16% of the KV cache (linear between curve points)
    replica_gib: float  # start-up memory of another replica of the same server (weights, slots, activations, KV)
    colocation_modeled: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _config(profile: TwinProfile, utilization: float | None = None, max_num_seqs: int | None = None) -> ServerConfig:
    return ServerConfig(max_loras=ADAPTERS, max_cpu_loras=ADAPTERS, max_lora_rank=RANK, max_num_seqs=max_num_seqs,
                        gpu_memory_utilization=utilization,
                        max_model_len=model_len_cover(LengthSpec("sharegpt"), profile)).resolved(profile)


def _kv_cache_gib(profile: TwinProfile, config: ServerConfig) -> float:
    """The KV cache ``profile``'s server allocates at start-up with ``config``, in GiB."""
    return check_startup(profile, config).kv_cache_tokens * profile.memory.kv_bytes_per_token / GIB


def _utilization_range(profile: TwinProfile) -> tuple[ServerConfig, float | None]:
    """The study's config at the profile's ``gpu_memory_utilization`` (the top of the KV curve) and the smallest
    utilization it starts at (the bottom; None if none does)."""
    default = _config(profile)
    return default, utilization_floor(profile, default)


def _point(profile: TwinProfile, config: ServerConfig, default_kv_gib: float) -> Point:
    kv_gib = _kv_cache_gib(profile, config)
    throughput = saturated_throughput(profile, LengthSpec("sharegpt"), ADAPTERS, RANK, config=config)
    return Point(config.gpu_memory_utilization, config.max_num_seqs, kv_gib, kv_gib / default_kv_gib, throughput)


def study(profile: TwinProfile | str, utilization_grid: float = UTILIZATION_GRID,
          batches: Sequence[int] = BATCHES) -> Study:
    """Both curves of ``profile`` and its budgets (module doc); ``utilization_grid`` and ``batches`` set the
    curves' points."""
    prof = load_profile(profile)
    if not budget_sets_kv(prof):
        raise ConfigError(f"profile {prof.name!r} ({prof.framework}): its KV cache is the same at every "
                          "--gpu-memory-utilization from the smallest that starts to its default (S-LoRA's pool is a "
                          "fixed number of tokens), so there is no KV budget to sweep; use a vLLM profile")
    default, floor = _utilization_range(prof)
    default_kv, cap = _kv_cache_gib(prof, default), default.gpu_memory_utilization
    steps = int((cap - floor) / utilization_grid + 1e-9)
    utilizations = sorted({*np.round(floor + utilization_grid * np.arange(steps + 1), 6), cap})
    kv_curve = tuple(_point(prof, _config(prof, float(u)), default_kv) for u in utilizations)
    batch_curve = tuple(_point(prof, _config(prof, max_num_seqs=b), default_kv) for b in batches)
    peak = max(p.throughput_tok_s for p in kv_curve)
    slot_gib = lora_memory_gib(prof, 1, RANK)
    budgets = []
    for tolerance in TOLERANCES:
        point = _smallest_within(kv_curve, peak, tolerance)
        freed = prof.memory.gpu_memory_gib * (cap - point.gpu_memory_utilization)
        batch = next((p.max_num_seqs for p in batch_curve if p.throughput_tok_s >= (1 - tolerance) * peak),
                     batch_curve[-1].max_num_seqs)
        budgets.append(Budget(tolerance, point, point.throughput_tok_s / peak, freed,
                              freed / prof.memory.gpu_memory_gib, int(freed // slot_gib), batch))
    shares = [p.kv_share for p in kv_curve]
    at_paper = float(np.interp(PAPER_KV_SHARE, shares, [p.throughput_tok_s / peak for p in kv_curve])) \
        if shares[0] <= PAPER_KV_SHARE else None
    mem = prof.memory
    replica = mem.weights_gib + mem.activation_gib + lora_memory_gib(prof, ADAPTERS, RANK) + (
        default.max_model_len * mem.kv_bytes_per_token / GIB)
    return Study(prof.name, peak, kv_curve, batch_curve, tuple(budgets), at_paper, replica)


def budget_sets_kv(profile: TwinProfile | str) -> bool:
    """Whether ``--gpu-memory-utilization`` sizes ``profile``'s KV cache (vLLM's does; S-LoRA's pool is a fixed
    number of tokens): the study sweeps that budget."""
    prof = load_profile(profile)
    default, floor = _utilization_range(prof)
    return _kv_cache_gib(prof, _config(prof, floor)) != _kv_cache_gib(prof, default)


def _smallest_within(curve: Sequence[Point], peak: float, tolerance: float) -> Point:
    """The smallest-budget point from which every larger budget stays within ``tolerance`` of ``peak``."""
    chosen = curve[-1]
    for point in reversed(curve):
        if point.throughput_tok_s < (1 - tolerance) * peak:
            break
        chosen = point
    return chosen


def profile_label(profile_name: str) -> str:
    """A profile's model and framework (``h100-64gb__llama-2-7b__slora`` -> ``llama-2-7b (slora)``), so two
    profiles of one model stay apart in the tables and the plot."""
    _, model, framework = [*profile_name.split("__"), "", ""][:3]
    return f"{model} ({framework})" if framework else model or profile_name


def plot_studies(studies: Sequence[Study], path: str) -> None:
    """Throughput (share of peak) vs KV budget and vs ``max_num_seqs``, one line per profile; BCA's OPT-1.3B
    point for reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (kv_ax, batch_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for s in studies:
        label = profile_label(s.profile)
        kv_ax.plot([100 * p.kv_share for p in s.kv_curve],
                   [100 * p.throughput_tok_s / s.peak_tok_s for p in s.kv_curve], marker=".", label=label)
        batch_ax.plot([p.max_num_seqs for p in s.batch_curve],
                      [100 * p.throughput_tok_s / s.peak_tok_s for p in s.batch_curve], marker=".", label=label)
    kv_ax.scatter([100 * PAPER_KV_SHARE], [100 * PAPER_THROUGHPUT_SHARE], marker="*", s=120, color="k",
                  label="BCA paper, OPT-1.3B")
    kv_ax.set(xlabel="KV cache, % of the default (gpu_memory_utilization 0.9)", ylabel="throughput, % of peak",
              title="throughput vs KV budget (saturated, twin)")
    batch_ax.set(xscale="log", xlabel="max_num_seqs", ylabel="throughput, % of peak",
                 title="throughput vs batch cap (saturated, twin)")
    for ax in (kv_ax, batch_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
