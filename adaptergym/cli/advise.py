"""``adaptergym advise``: the vLLM server flags for one GPU serving a workload, or the BCA study (``--bca``)."""

from __future__ import annotations

import argparse
import math
from typing import Any

from adaptergym.cli.base import Command, print_json, print_table


class Advise(Command):
    """Recommend the vLLM flags for one GPU serving a workload, verified by the twin (or, with --bca, how much KV
    cache near-peak throughput needs on each profile).

    Searches --max-loras, --max-cpu-loras, --max-num-seqs, --gpu-memory-utilization (the KV budget) and
    --max-lora-rank: Optuna over a fast estimate proposes finalists, the twin runs them and sweeps the KV budget of
    the best (the trade-off curve; --plot writes it as a PNG). --max-model-len is the workload's longest request
    rounded up to a power of two. Objectives: throughput (the most capacity), latency (the lowest p99 TTFT),
    memory (the most GPU memory left free while serving as much); without --slo-ttft-ms a recommendation keeps
    p99 TTFT within 2x of the lowest found. It prints the `adaptergym simulate` command that reproduces the
    verdict. A workload one GPU cannot serve gets the GPU count of a greedy placement instead.
    """

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--workload", default=None, help="workload JSON (adapters with rates)")
        parser.add_argument("--profile", default=None, help="profile name, model name or JSON path "
                            "(default: h100-64gb__llama-3.1-8b-instruct__vllm-0.8.5; with --bca: every shipped one)")
        parser.add_argument("--objective", default="throughput", help="throughput (default), latency or memory")
        parser.add_argument("--slo-ttft-ms", type=float, default=None, help="p99 TTFT the server must meet, ms")
        parser.add_argument("--seed", type=int, default=0, help="seed of the search and of every twin run")
        parser.add_argument("--trials", type=int, default=None, help="Optuna trials over the fast estimate (150)")
        parser.add_argument("--duration", type=float, default=None,
                            help="simulated seconds of each twin run (default: 600, or long enough for 500 requests)")
        parser.add_argument("--plot", default=None, metavar="PNG", help="write the trade-off curve (or BCA curves)")
        parser.add_argument("--bca", action="store_true", help="the batching-configuration-advisor study instead")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def take_action(self, args: argparse.Namespace) -> int:
        from adaptergym import WorkloadSpec
        from adaptergym.advise import advise
        from adaptergym.advise.search import DEFAULT_TRIALS
        from adaptergym.errors import ConfigError

        if args.bca:
            return _bca(args)
        if not args.workload:
            raise ConfigError("--workload: required (a workload JSON), or --bca for the BCA study")
        workload = WorkloadSpec.from_json(args.workload)
        advice = advise(workload, args.profile, objective=args.objective, slo_ttft_ms=args.slo_ttft_ms,
                        seed=args.seed, trials=args.trials or DEFAULT_TRIALS, duration_s=args.duration)
        if not advice.fits_one_gpu:
            return _does_not_fit(advice, args)
        if args.plot:
            from adaptergym.advise.plot import plot_curve

            plot_curve(advice, args.plot)
        if args.json:
            print_json(advice.to_dict(args.workload))
            return 0
        _print_advice(advice, args.workload)
        return 0


def _print_advice(advice: Any, workload_path: str) -> None:
    best, memory = advice.best, advice.profile.memory
    m = best.metrics
    print(f"{advice.vllm_command()}\n")
    rows = [("offered tok/s", m.offered_throughput), ("served tok/s", m.total_throughput),
            ("capacity tok/s (saturated)", best.capacity_tok_s), ("mean TTFT ms", m.mean_ttft_ms),
            ("p99 TTFT ms", m.p99_ttft_ms), ("mean ITL ms", m.mean_itl_ms),
            ("starved", "yes" if m.starved else "no"), ("preemptions", m.preemptions),
            ("KV cache GiB (tokens)", f"{best.kv_cache_gib:.1f} ({m.kv_cache_tokens:,})"),
            ("LoRA slots GiB", best.lora_gib),
            ("GPU memory left free GiB", f"{best.free_gib:.1f} of {memory.gpu_memory_gib:g}")]
    slo = f", p99 TTFT <= {advice.slo_ttft_ms:g} ms" if advice.slo_ttft_ms else ""
    print_table(f"twin prediction ({advice.objective}{slo}, {advice.duration_s:g} s, seed {advice.seed})", rows)
    curve = [{"util.": f"{v.config.gpu_memory_utilization:g}", "KV GiB": v.kv_cache_gib,
              "served tok/s": v.metrics.total_throughput, "capacity tok/s": v.capacity_tok_s,
              "p99 TTFT ms": v.p99_ttft_ms if math.isfinite(v.p99_ttft_ms) else math.nan,
              "mean ITL ms": v.metrics.mean_itl_ms,
              "verdict": v.metrics.startup if v.metrics.startup != "ok" else ("starved" if v.metrics.starved
                                                                                else "serves"),
              "": "<-" if v.config == best.config else ""} for v in advice.curve]
    print_table("trade-off vs KV budget (the recommendation's other flags)", curve)
    print(f"re-simulate: {advice.simulate_command(workload_path)}")
    print(f"search: {advice.trials} Optuna trials over the fast estimate, {len(advice.finalists)} finalists, "
          f"{advice.twin_runs} twin runs, {advice.seconds:.1f} s")


def _does_not_fit(advice: Any, args: argparse.Namespace) -> int:
    """The smallest GPU count greedy placement (``baselines``) verifies, for a workload one GPU cannot serve."""
    from baselines import get_policy
    from baselines.evaluation import place_and_verify

    outcome = place_and_verify(get_policy("greedy"), advice.workload, advice.profile, seed=args.seed)
    closest = advice.closest.metrics
    if args.json:
        print_json({**advice.to_dict(args.workload), "gpus": outcome.placement.gpus,
                    "lower_bound_gpus": outcome.lower_bound_gpus, "placement": outcome.placement.to_dicts(),
                    "verified": outcome.verification.to_dict()})
        return 0
    print(f"does not fit on one GPU: of {len(advice.finalists)} configurations the twin ran, the best serves "
          f"{closest.total_throughput:,.0f} of {closest.offered_throughput:,.0f} offered tok/s (starved).")
    starved = outcome.verification.starved_gpus
    print(f"smallest GPU count found: {outcome.placement.gpus} (greedy placement, {starved} starved GPUs on "
          f"verification; lower bound {outcome.lower_bound_gpus}). The placement: adaptergym place --workload "
          f"{args.workload} --policy greedy --profile {advice.profile.name} --seed {args.seed} --export DIR; "
          "then adaptergym advise --workload DIR/gpu<k>.json sizes each GPU.")
    return 0


def _bca(args: argparse.Namespace) -> int:
    """The BCA study of every shipped profile, or of --profile."""
    from adaptergym.advise.bca import budget_sets_kv, plot_studies, study
    from adaptergym.profile import shipped_profiles

    profiles = [args.profile] if args.profile else [p for p in shipped_profiles() if budget_sets_kv(p)]
    studies = [study(p) for p in profiles]
    if args.plot:
        plot_studies(studies, args.plot)
    if args.json:
        print_json([s.to_dict() for s in studies])
    else:
        _print_bca(studies)
    return 0


def _print_bca(studies: Any) -> None:
    """The tables of :func:`study` results, and the comparison with BCA's figures."""
    from adaptergym.advise.bca import PAPER_KV_SHARE, PAPER_THROUGHPUT_SHARE, profile_label

    rows = []
    for s in studies:
        for b in s.budgets:
            rows.append({"model": profile_label(s.profile), "within": f"{b.tolerance:.0%}",
                         "util.": f"{b.point.gpu_memory_utilization:.2f}",
                         "KV GiB (of default)": f"{b.point.kv_cache_gib:.1f} ({b.point.kv_share:.0%})",
                         "tok/s (of peak)": f"{b.point.throughput_tok_s:,.0f} ({b.throughput_share:.1%})",
                         "freed GiB (of GPU)": f"{b.freed_gib:.1f} ({b.freed_share:.1%})",
                         "+slots": b.extra_slots, "seqs": b.smallest_batch})
    print_table("BCA on the twin: the smallest KV budget within 1/5/10% of saturated peak (+slots: rank-16 "
                "adapter slots the freed memory holds; seqs: the smallest max_num_seqs within the tolerance)", rows)
    for s in studies:
        share = f"{s.share_at_paper_kv:.0%}" if s.share_at_paper_kv is not None else "no start"
        widest = s.budgets[-1]
        fits = "fits in" if s.replica_gib <= widest.freed_gib else "is more than"
        print(f"{profile_label(s.profile)}: {share} of peak at {PAPER_KV_SHARE:.0%} of the KV cache (BCA's OPT-1.3B: "
              f"{PAPER_THROUGHPUT_SHARE:.0%}). Another replica needs {s.replica_gib:.1f} GiB to start, which {fits} "
              f"the {widest.freed_gib:.1f} GiB freed within {widest.tolerance:.0%}; its throughput beside this one is "
              "not modeled (no measurements of two vLLM processes sharing a GPU). Freed GPU memory buys no CPU "
              "cache (--max-cpu-loras holds adapters in host memory).")
