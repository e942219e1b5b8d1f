"""Fitting a twin profile to real vLLM measurements (``adaptergym calibrate``).

Each profile term comes from the measurements that isolate it (see the submodules), then the step-time model
gets a final fit against end-to-end runs. Runs whose ``dataset_group`` matches ``holdout`` are never used, so
``adaptergym validate`` on them measures error on workloads the fit has not seen. The micro-benchmarks beside
the runs measured vLLM; a profile of another framework (S-LoRA) keeps its base's memory, loading and scheduler
terms, and its end-to-end fit moves only the step terms its base sets (nothing else tells collinear terms apart).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from adaptergym.calibration.end_to_end import Prior, fit_end_to_end
from adaptergym.calibration.lengths import fit_copula_correlation
from adaptergym.calibration.loading import api_server_burst_ms, api_server_new_adapter_ms, loading_table
from adaptergym.calibration.memory import fit_memory, fit_memory_from_startups
from adaptergym.calibration.micro import (
    decode_error_pct,
    decode_rows,
    fit_decode,
    fit_prefill,
    fit_scheduler,
)
from adaptergym.calibration.startup_time import fit_startup_time, startup_rows
from adaptergym.errors import ConfigError, DataError, ProfileError
from adaptergym.profile import (
    DEFAULT_FRAMEWORK,
    DEFAULT_PROFILE,
    SchedulerOverhead,
    StartupTimeModel,
    TwinProfile,
    find_profile,
    load_profile,
)
from adaptergym.real_runs import Replay, group_pattern, read_runs, replays
from adaptergym.twin.frameworks import framework_of
from adaptergym.twin.step_time import StepTimer

#: Held out by default: the published twin's validation series, so our error is comparable with its error.
DEFAULT_HOLDOUT = r"^digital_twin_modelling/"
#: How firmly micro-benchmark terms hold in the end-to-end fit (see ``Prior``), and by default the other step
#: terms to the base profile's values (``calibrate(base_prior=...)``, ``--base-prior``).
MEASURED, GUESSED = 1.0, 0.05
#: The serving framework the micro-benchmarks (kv_capacity.csv, raw_estimator_runs/, raw_scheduler_overhead/,
#: anchor_twin_constants.json) measured: only its profiles take terms from them.
MICRO_BENCHMARKED = "vllm-v1"

__all__ = ["DEFAULT_HOLDOUT", "calibrate", "profile_name"]


def profile_name(base: TwinProfile, model: str) -> str:
    gpu = re.sub(r"[^a-z0-9]+", "-", base.gpu.lower()).strip("-")
    return f"{gpu}__{model}__{framework_of(base).label(base)}"


def calibrate(
    runs: str | Path,
    model: str,
    *,
    base: str | TwinProfile | None = None,
    data_dir: str | Path | None = None,
    holdout: str = DEFAULT_HOLDOUT,
    rounds: int = 3,
    duration_s: float = 900.0,
    workers: int | None = None,
    framework: str | None = None,
    base_prior: float = GUESSED,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[TwinProfile, dict[str, Any]]:
    """Fit a profile for ``model`` from a real-runs CSV and the micro-benchmarks beside it.

    Args:
        runs: real-runs CSV (the columns of ``shared/data/real_runs.csv``, or a format of
            ``adaptergym.run_formats``).
        model: the ``model`` column value to fit.
        base: profile whose values stand for terms the data cannot fit (default: the model's shipped
            profile on the runs' framework, else the default profile); its provenance's ``sources`` (where
            hand-set values come from) are kept.
        data_dir: folder with ``kv_capacity.csv``, ``raw_estimator_runs/``, ``raw_scheduler_overhead/`` and
            ``anchor_twin_constants.json`` (default: the folder of ``runs``); each is optional.
        holdout: regex on ``dataset_group``; matching rows are not used ('' uses every row).
        rounds: end-to-end refit rounds; duration_s: simulated seconds per training run.
        framework: the serving framework of the rows to fit (default: the one framework of the model's rows).
        base_prior: how firmly the step terms no micro-benchmark measures stay at ``base``'s values in the
            end-to-end fit (a ``Prior`` strength; 0: the training runs alone set them).
    """
    if isinstance(base_prior, bool) or not isinstance(base_prior, (int, float)) or not 0 <= base_prior < float("inf"):
        raise ConfigError(f"--base-prior {base_prior!r}: must be a finite number >= 0 (0: the training runs alone "
                          "set the step terms no micro-benchmark measures)")
    folder = Path(data_dir) if data_dir else Path(runs).resolve().parent
    frame = read_runs(runs)
    items, problems = replays(frame)
    items = [i for i in items if i.model == model]
    framework = framework or _only_framework(items, model)
    items = [i for i in items if i.framework == framework]
    base_profile = _base(base, model, framework)
    pattern = group_pattern(holdout, "--holdout") if holdout else None
    train = [i for i in items if pattern is None or not pattern.search(i.group)]
    if not [i for i in train if i.status == "ok"]:
        raise DataError(f"--model {model!r}: no usable ok runs outside --holdout {holdout!r} in {runs} "
                        f"(models present: {sorted(set(frame['model'].dropna()))})")
    report: dict[str, Any] = {"runs_csv": str(runs), "model": model, "framework": framework, "holdout": holdout,
                              "train_rows": len(train), "train_groups": sorted({i.group for i in train}),
                              "skipped_rows": len(problems), "terms": {}}
    if base_profile.framework == MICRO_BENCHMARKED:
        profile, priors, rows = _micro_terms(base_profile, folder, frame, train, model, report, base_prior)
        free = None
    else:
        profile, rows = base_profile, pd.DataFrame()
        priors = _base_profile_priors(profile, base_prior)
        free = [name for name, value in profile.step_time.coefficients.items() if value != 0]
        report["terms"]["kept_from_base"] = {
            "source": f"{base_profile.name} (memory, loading, scheduler, engine): the micro-benchmarks measured "
                      f"{MICRO_BENCHMARKED}", "free_step_terms": free}
    start = {name: prior.value for name, prior in priors.items()}
    profile = dataclasses.replace(profile, step_time=dataclasses.replace(profile.step_time, coefficients=start))
    profile, fit = fit_end_to_end(profile, train, priors, rounds=rounds, duration_s=duration_s, workers=workers,
                                  free=free, progress=progress)
    report["terms"]["step_time"] = {"source": "end-to-end runs outside the holdout", "base_prior": base_prior, **fit}
    if len(rows):
        timer = StepTimer(profile, profile.engine.max_lora_rank, lora_enabled=False)
        report["terms"]["step_time"]["decode_microbenchmark_mape"] = decode_error_pct(
            lambda batch, context: timer.step_ms(batch, 0, context, 0) + timer.scheduler_ms(batch, 0), rows)
    sources = {"sources": base_profile.provenance["sources"]} if "sources" in base_profile.provenance else {}
    profile = dataclasses.replace(profile, name=profile_name(base_profile, model), model=model,
                                  provenance={"fitted_by": "adaptergym calibrate", **report, **sources})
    return profile, report


def _base_profile_priors(profile: TwinProfile, strength: float) -> dict[str, Prior]:
    """Every step term held to ``profile``'s value with ``strength`` (``--base-prior``) in the end-to-end fit: the
    priors of the terms no micro-benchmark measures (measured terms replace theirs)."""
    return {name: Prior(value, strength) for name, value in profile.step_time.coefficients.items()}


def _micro_terms(profile: TwinProfile, folder: Path, frame: pd.DataFrame, train: list[Replay], model: str,
                 report: dict[str, Any], base_prior: float) -> tuple[TwinProfile, dict[str, Prior], pd.DataFrame]:
    """The terms the vLLM micro-benchmarks (and start-up outcomes) fix, the step-term priors they give (the
    others hold to the base's values with strength ``base_prior``), and the decode micro-benchmark rows (to
    report the fitted model's error on them)."""
    kv_path = folder / "kv_capacity.csv"
    kv = pd.read_csv(kv_path) if kv_path.is_file() else pd.DataFrame(columns=["model"])
    if (kv["model"] == model).any():
        memory, fit = fit_memory(kv, model, profile.memory)
        report["terms"]["memory"] = {"source": kv_path.name, **fit}
    else:  # no KV capacity measured: bracket the memory model by which runs started
        startups = pd.DataFrame([{"max_loras": i.config.max_loras, "max_lora_rank": i.config.max_lora_rank,
                                  "status": i.status} for i in train if i.config.enable_lora])
        memory, fit = fit_memory_from_startups(startups, profile.memory)
        report["terms"]["memory"] = {"source": "start-up outcomes of the training runs", **fit}
    profile = dataclasses.replace(profile, memory=memory)

    lengths = fit_copula_correlation(frame, {i.line: i.config for i in train if i.status == "ok"}, profile)
    if lengths:  # a check of the shared ShareGPT table (adaptergym/data/sharegpt_lengths.json), not a profile term
        report["terms"]["sharegpt_lengths"] = {"source": "KV usage of the training runs that kept up", **lengths}

    scheduler, fit = fit_scheduler(folder / "raw_scheduler_overhead")
    if scheduler:
        profile = dataclasses.replace(profile, scheduler=SchedulerOverhead(**scheduler))
        report["terms"]["scheduler"] = {"source": "raw_scheduler_overhead", **fit}

    loading, fit = loading_table(folder / "anchor_twin_constants.json", model)
    if loading:
        profile = dataclasses.replace(profile, loading=dataclasses.replace(profile.loading, cpu_to_gpu_ms=loading))
        report["terms"]["loading"] = fit
    api_ms, fit = api_server_new_adapter_ms(frame, {i.line for i in train}, profile.loading)
    if api_ms is not None:
        # TTFT tails have other causes too: the estimate stands only under the bound the burst scrapes give
        bound = api_server_burst_ms(folder / "raw_estimator_runs", model)
        used = bound is not None and api_ms <= bound
        if used:
            profile = dataclasses.replace(profile, loading=dataclasses.replace(profile.loading,
                                                                               api_server_new_adapter_ms=api_ms))
        report["terms"]["api_server"] = {
            "source": "TTFT tails of training runs with few requests at once", "new_adapter_ms": round(api_ms, 1),
            **fit, "predictor_loading_bound_ms": None if bound is None else round(bound, 1), "used": used}

    priors = _base_profile_priors(profile, base_prior)
    micro = folder / "raw_estimator_runs"
    startups = startup_rows(micro, model) if micro.is_dir() else pd.DataFrame()
    if len(startups) >= 3:  # otherwise the base profile's start-up time stands
        terms, fit = fit_startup_time(startups)
        profile = dataclasses.replace(profile, startup_time=StartupTimeModel(**terms))
        report["terms"]["startup_time"] = fit
    rows = decode_rows(micro, model, profile.engine.cuda_graph_max_tokens) if micro.is_dir() else pd.DataFrame()
    if len(rows) >= 4:
        sched = profile.scheduler
        terms, fit = fit_decode(rows.assign(step_ms=rows["step_ms"] - sched.base_ms - sched.per_running_ms
                                            * rows["batch"]))  # the benchmark's TPOT includes the scheduler
        priors.update({name: Prior(value, MEASURED) for name, value in terms.items()})
        report["terms"]["decode"] = {"source": "predictor_default_latency/output", **fit, "coefficients": terms}
        per_token, fit = fit_prefill(micro, model, profile.engine.max_num_batched_tokens)
        if per_token is not None:
            priors["per_prefill_token_ms"] = Prior(per_token, MEASURED)
        report["terms"]["prefill"] = {"source": "predictor_default_latency/input", **fit}
    return profile, priors, rows


def _only_framework(items: list[Replay], model: str) -> str:
    frameworks = sorted({i.framework for i in items})
    if len(frameworks) > 1:
        raise DataError(f"--model {model!r}: its rows ran on {frameworks}; pick one with --framework")
    return frameworks[0] if frameworks else DEFAULT_FRAMEWORK


def _base(base: str | TwinProfile | None, model: str, framework: str) -> TwinProfile:
    if isinstance(base, TwinProfile):
        profile = base
    elif base is not None:
        profile = load_profile(base)
    else:
        try:
            return find_profile(model, framework)
        except ProfileError:
            profile = dataclasses.replace(load_profile(DEFAULT_PROFILE), model=model)
    if profile.framework != framework:
        raise ProfileError(f"--base {profile.name!r} runs framework {profile.framework!r} but the rows ran on "
                           f"{framework!r}; pass --base with a profile of {framework!r} (its memory and engine "
                           "settings are not fitted from end-to-end runs)")
    return profile
