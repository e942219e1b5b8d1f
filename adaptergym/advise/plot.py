"""The trade-off curve of an advice as a PNG: throughput and latency against the KV budget."""

from __future__ import annotations

import math

from adaptergym.advise.advisor import Advice


def plot_curve(advice: Advice, path: str) -> None:
    """Served throughput and capacity (left axis), p99 TTFT and mean ITL (right axis, log) against the KV cache
    in GiB, one point per ``gpu_memory_utilization`` of the curve (its value along the top); the recommendation
    is circled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [v for v in advice.curve if v.metrics.startup == "ok"]
    kv = [v.kv_cache_gib for v in points]
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.plot(kv, [v.metrics.total_throughput for v in points], "o-", label="served tok/s (the workload)")
    ax.plot(kv, [v.capacity_tok_s for v in points], "s--", label="capacity tok/s (saturated)")
    ax.set(xlabel="KV cache, GiB (--gpu-memory-utilization along the top)", ylabel="tokens/s")
    fig.suptitle(f"{advice.workload.name or 'workload'} on {advice.profile.name}", fontsize=9)
    latency = ax.twinx()
    latency.plot(kv, [v.p99_ttft_ms if math.isfinite(v.p99_ttft_ms) else None for v in points], "^-", color="C3",
                 label="p99 TTFT, ms")
    latency.plot(kv, [v.metrics.mean_itl_ms for v in points], "v-", color="C2", label="mean ITL, ms")
    latency.set(ylabel="ms", yscale="log")
    for v in points:
        if v.metrics.starved:
            ax.annotate("starved", (v.kv_cache_gib, v.metrics.total_throughput), fontsize=7, color="C3")
    best = advice.best
    ax.scatter([best.kv_cache_gib], [best.metrics.total_throughput], s=250, facecolors="none", edgecolors="k",
               label=f"recommended (--gpu-memory-utilization {best.config.gpu_memory_utilization:g})")
    for v in points:  # each point's flag value along the top
        ax.annotate(f"{v.config.gpu_memory_utilization:g}", (v.kv_cache_gib, 1.0), xycoords=("data", "axes fraction"),
                    textcoords="offset points", xytext=(0, 3), ha="center", fontsize=7)
    handles = ax.get_legend_handles_labels()[0] + latency.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
