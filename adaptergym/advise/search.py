"""Optuna over the fast model: which server configs deserve a twin run.

One TPE study (seeded) draws ``max_lora_rank``, ``max_loras``, ``max_cpu_loras`` (as a share of the adapters
beyond ``max_loras``), ``max_num_seqs`` (a power of two, or the profile's default) and the KV budget (as a
share of the way from the configuration's smallest starting ``gpu_memory_utilization`` to the cap;
:meth:`Space.choose`). Each trial is scored by
:class:`FastModel` under the objective (:data:`FAST_VALUES`); a config that does not start or is estimated to
starve (for ``memory``: to serve less than 99% of the offered load) is infeasible, an Optuna constraint. The
finalists are the best :data:`FINALISTS` feasible configs, the :data:`LOW_LATENCY` with the lowest TTFT proxy
(so an SLO has candidates whatever the objective), and the reference config (every adapter in a slot if that
starts, the profile's defaults otherwise), which the study also starts from; no two alike but for their KV
budget, which the twin sweeps afterwards (:func:`_signature`).
"""

from __future__ import annotations

from collections.abc import Callable

from adaptergym.advise.fast import Estimate, FastModel
from adaptergym.advise.knobs import MIN_MAX_NUM_SEQS, Space
from adaptergym.twin import ServerConfig

#: Trials of the study; scoring one takes well under a millisecond, so TPE's own sampling is most of the time.
DEFAULT_TRIALS = 150
#: Finalists by the objective's fast value.
FINALISTS = 5
#: Finalists by the TTFT proxy, besides.
LOW_LATENCY = 1
#: Served share of the offered load the ``memory`` objective keeps (the fast model's side of its 1% rule).
MEMORY_SERVED_SHARE = 0.99
#: What the study minimises per objective.
FAST_VALUES: dict[str, Callable[[Estimate], float]] = {
    "throughput": lambda e: -e.capacity_tok_s,
    "latency": lambda e: e.ttft_ms,
    "memory": lambda e: -e.free_gib,
}
#: The value of a trial whose config does not start (it is infeasible anyway).
REFUSED = 1e18


def reference_config(space: Space) -> ServerConfig:
    """Every adapter in a GPU slot and in the CPU cache, the smallest rank cover, the profile's engine defaults
    and utilization: where a vLLM user starts (fewer slots if that many do not start)."""
    rank = space.rank_choices[0]
    slots = max(1, space.max_slots(rank))
    return space.config(slots, rank, max_cpu_loras=max(slots, space.adapters),
                        gpu_memory_utilization=space.utilization_cap)


def finalists(space: Space, fast: FastModel, objective: str, trials: int, seed: int) -> list[ServerConfig]:
    """The configs to run on the twin (module doc), reference first, each once."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    reference = reference_config(space)
    value = FAST_VALUES[objective]
    served_floor = MEMORY_SERVED_SHARE * fast.offered_tok_s if objective == "memory" else 0.0
    slots_high = max(1, space.max_slots(space.rank_choices[0]))
    seqs_high = space.profile.engine.max_num_seqs
    seq_choices = tuple(sorted({*(2**k for k in range(20) if MIN_MAX_NUM_SEQS <= 2**k < seqs_high), seqs_high}))
    scored: list[tuple[float, float, ServerConfig, tuple[int, ...]]] = []

    def trial_value(trial: optuna.Trial) -> float:
        slots = trial.suggest_int("max_loras", 1, slots_high, log=True)
        cpu_share = trial.suggest_float("cpu_share", 0.0, 1.0)
        config = space.choose(
            max_loras=slots, max_cpu_loras=slots + round(cpu_share * (space.adapters - slots)),
            max_num_seqs=trial.suggest_categorical("max_num_seqs", seq_choices),
            max_lora_rank=trial.suggest_categorical("max_lora_rank", space.rank_choices),
            kv_share=trial.suggest_float("kv_share", 0.0, 1.0))
        estimate = fast.estimate(config) if config is not None else None
        if estimate is None:
            trial.set_constraint("refused", 1.0)
            return REFUSED
        shortfall = max(float(estimate.starved), served_floor - estimate.served_tok_s)
        trial.set_constraint("starved", shortfall)  # feasible at <= 0
        if shortfall <= 0:
            scored.append((value(estimate), estimate.ttft_ms, config, _signature(config)))
        return value(estimate)

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True),
                                direction="minimize")
    study.enqueue_trial({"max_loras": reference.max_loras, "cpu_share": 1.0, "max_num_seqs": seqs_high,
                         "max_lora_rank": reference.max_lora_rank, "kv_share": 1.0})
    study.optimize(trial_value, n_trials=trials)
    chosen = {_signature(reference): reference}
    for key, count in ((0, FINALISTS), (1, LOW_LATENCY)):
        fresh = {}
        for *_, config, signature in sorted(scored, key=lambda s: s[key]):
            if len(fresh) == count:
                break
            if signature not in chosen and signature not in fresh:
                fresh[signature] = config
        chosen |= fresh
    return list(chosen.values())


def _signature(config: ServerConfig) -> tuple[int, ...]:
    """The knobs finalists must differ in: all but the KV budget (the twin's curve sweeps it for the pick)."""
    return (config.max_loras, config.max_cpu_loras, config.max_lora_rank, config.max_num_seqs)
