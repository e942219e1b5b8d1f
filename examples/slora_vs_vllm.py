"""The adapter caching problem's optimum on one GPU under S-LoRA and under vLLM, on the same workloads.

The workloads are those of the real S-LoRA runs (shared/data/slora_llama2_7b_runs.csv): Llama-2-7B, n rank-32
adapters each receiving Poisson requests at a fixed rate, prompts of 250 tokens and outputs of 231. For each
rate, the caching problem asks how many adapters one GPU can serve without starving (served throughput 10% or
more short of the offered load, the papers' rule) and, for vLLM, with which ``max_loras``. S-LoRA has no slot
count: the adapters it keeps in its pool are those of the running batch, as many as the pool allows, so the
table reports how many that is (its "concurrent adapters"). The real S-LoRA runs give the measured answer on
their grid of adapter counts; real vLLM runs of the same shape exist for two rates (rank 16, 300 s each,
``motivation_figure/with_slots/llama-2-7b/loaded_adapters_rate_*`` in shared/data/real_runs.csv).

    python examples/slora_vs_vllm.py [--duration 1440] [--workers 2]
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from adaptergym import LengthSpec, ServerConfig, draw_requests
from adaptergym.metrics import summarize
from adaptergym.profile import find_profile
from adaptergym.real_runs import read_runs, replays
from adaptergym.twin import check_startup, run_replica
from adaptergym.workload import cycled_workload

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SLORA_RUNS, VLLM_RUNS = DATA / "slora_llama2_7b_runs.csv", DATA / "real_runs.csv"
VLLM_GROUPS = "motivation_figure/with_slots/llama-2-7b/loaded_adapters_rate_"
RATES = (0.0125, 0.025, 0.05, 0.1, 0.2, 0.4)
COUNTS = (8, 16, 32, 64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640)  # the real runs' grid from 32
LEVELS = (8, 16, 32, 48, 64, 96, 128, 192, 256, 384)  # vLLM max_loras tried (those that start)
LENGTHS = LengthSpec("fixed", input_tokens=250, output_tokens=231)


def run(args: tuple[str, int, float, int | None, float]) -> dict:
    """One simulation: (framework, adapters, rate, max_loras or None for S-LoRA, duration)."""
    framework, count, rate, max_loras, duration = args
    profile = find_profile("llama-2-7b", framework)
    config = ServerConfig(max_loras=max_loras or count, max_cpu_loras=count, max_lora_rank=32).resolved(profile)
    requests = draw_requests(cycled_workload(count, [rate], [32], duration_s=duration, lengths=LENGTHS))
    record = run_replica(profile, config, requests)
    m, steps = summarize(record), record.step_counts
    return {"framework": framework, "count": count, "rate": rate, "max_loras": max_loras, "starved": m.starved,
            "throughput": m.total_throughput, "running": m.mean_running,
            "adapters": float(steps[4] / steps[0]) if steps is not None and steps[0] else 0.0}


def measured_capacity(runs: Path, group_prefix: str) -> dict[float, tuple[int, int]]:
    """Per rate, the most adapters real runs served without starving (the papers' rule), with the ``max_loras``
    of the best such run (its throughput the highest)."""
    best: dict[float, tuple[int, float, int]] = {}
    for item in replays(read_runs(runs))[0]:
        if not item.group.startswith(group_prefix) or not item.measured_status_ok:
            continue
        w, served = item.workload, item.measured["total_throughput"]
        rate = min(RATES, key=lambda r: abs(r - float(item.group.rsplit("rate_", 1)[1])))
        if served >= 0.9 * w.total_rate * (w.lengths.input_tokens + w.lengths.output_tokens):
            best[rate] = max(best.get(rate, (0, 0.0, 0)), (len(w.adapters), served, item.config.max_loras))
    return {rate: (count, max_loras) for rate, (count, _, max_loras) in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=1440.0,
                        help="simulated seconds per configuration (the real runs lasted about 1,440 s)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    vllm = find_profile("llama-2-7b", "vllm-v1")
    starts = [m for m in LEVELS if check_startup(vllm, ServerConfig(max_loras=m, max_lora_rank=32).resolved(vllm)).ok]
    jobs = [("slora", n, r, None, args.duration) for r in RATES for n in COUNTS]
    jobs += [("vllm-v1", n, r, m, args.duration) for r in RATES for n in COUNTS for m in starts if m <= n]
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(run, jobs, chunksize=4))
    slora_real = measured_capacity(SLORA_RUNS, "scaling_adapters/")
    vllm_real = measured_capacity(VLLM_RUNS, VLLM_GROUPS)
    print("| req/s per adapter | S-LoRA real: adapters | S-LoRA twin: adapters | tok/s | adapters in the pool "
          "| batch | vLLM twin: adapters | best max_loras | tok/s | vLLM real, rank 16: adapters (max_loras) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for rate in RATES:
        slora = max((r for r in results if r["framework"] == "slora" and r["rate"] == rate and not r["starved"]),
                    key=lambda r: r["count"], default=None)
        fine = [r for r in results if r["framework"] == "vllm-v1" and r["rate"] == rate and not r["starved"]]
        top = max((r["count"] for r in fine), default=0)
        vllm_best = max((r for r in fine if r["count"] == top), key=lambda r: r["throughput"], default=None)
        s = (f"{slora['count']} | {slora['throughput']:,.0f} | {slora['adapters']:.0f} | {slora['running']:.0f}"
             if slora else "none | | | ")
        v = (f"{vllm_best['count']} | {vllm_best['max_loras']} | {vllm_best['throughput']:,.0f}"
             if vllm_best else "none | | ")
        real = vllm_real.get(rate)
        print(f"| {rate} | {slora_real.get(rate, ('none',))[0]} | {s} | {v} | "
              f"{f'{real[0]} ({real[1]})' if real else 'no runs'} |")


if __name__ == "__main__":
    main()
