"""The ``optuna`` policy: Optuna's TPE sampler searches a family of placements, each scored by the twin.

**Search space.** A trial draws a few numbers and builds one placement from them:

- ``gpus``, from the lower bound (:func:`baselines.bound.lower_bound_gpus`) to twice it plus one;
- ``hot_fill`` in [0.3, 1]: an adapter hotter than that share of one admissible GPU is replicated (``ceil`` as
  many copies, at most ``gpus``, traffic split evenly);
- per GPU ``k``: ``weight_k`` in [0.5, 1.5], the share of load the balancer gives it relative to its capacity,
  and ``slots_k``, its ``max_loras`` as a fraction of its adapters (1/8, 1/4, 1/2 or 1, within what starts at
  its rank).

Copies are dealt by greedy's balancer (:func:`baselines.greedy.spread_into`, weighted), so every trial is a
plausible placement and TPE shapes it: which GPUs run hot, how many slots each gets, how much replication.

**Scoring.** Each trial is verified exactly as :func:`adaptergym.placement.verify` does (same seed and
duration, per-GPU runs cached across trials); a trial with starved GPUs is infeasible (an Optuna
constraint), so it ranks below every starvation-free one. ``objective="gpus"``: minimise GPUs, ties
broken by p99 TTFT (value ``gpus + p99 / (p99 + 1 s)``). ``objective="latency"``: a second study at the first
study's fewest GPUs minimises p99 TTFT (ms), starting from the first study's best.

**Determinism and scale.** With ``n_jobs=1`` and no storage the result depends on ``seed`` only (the sampler
is seeded). ``n_jobs > 1`` runs trials in threads (Optuna's ``n_jobs``; the order trials finish in, hence the
result, then varies). ``storage`` takes an RDB URL (``sqlite:///optuna.db``, ``postgresql://...``): every
worker running the same workload, seed and objective joins one study (named from them unless ``study_name``
is given), adds its ``n_trials``, and returns the best placement found by all so far.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from adaptergym.errors import ConfigError
from adaptergym.placement import VERIFY_DURATION_S, Placement
from adaptergym.profile import TwinProfile
from adaptergym.workload import WorkloadSpec
from baselines import POLICIES
from baselines.bound import lower_bound_gpus
from baselines.capacity import CapacityModel, servable_model
from baselines.common import Copy, Verifier, check_objective, copies_needed, group_cover, make_copies, to_placement
from baselines.greedy import spread_into

if TYPE_CHECKING:
    import optuna

#: ``max_loras`` choices per GPU, as a fraction of its adapters.
SLOT_FRACTIONS = (0.125, 0.25, 0.5, 1.0)
#: Range of each GPU's weight in the balancer.
WEIGHT_RANGE = (0.5, 1.5)
#: Range of the replication threshold (share of one admissible GPU a copy may take).
HOT_FILL_RANGE = (0.3, 1.0)
#: The first trial: an even spread on the most GPUs searched, every adapter in a slot (a feasible start).
EVEN = {"hot_fill": 0.9, "weight": 1.0, "slots": 1.0}
#: p99 TTFT (ms) that adds half a GPU to a ``gpus`` trial's value: the tie-break between equal GPU counts.
LATENCY_SCALE_MS = 1000.0


@dataclass(frozen=True)
class _Space:
    """Builds a trial's placement (module doc) for one workload."""

    workload: WorkloadSpec
    model: CapacityModel
    low: int
    high: int

    def build(self, params: Any, gpus: int | None = None) -> Placement:
        """The placement of ``params`` (an Optuna trial or a plain dict of its values); ``gpus`` fixes the
        GPU count instead of drawing it."""
        suggest = _Suggest(params)
        n = gpus if gpus is not None else suggest.int("gpus", self.low, self.high)
        fill = suggest.float("hot_fill", *HOT_FILL_RANGE)
        weights = [suggest.float(f"weight_{k}", *WEIGHT_RANGE) for k in range(n)]
        fractions = [suggest.categorical(f"slots_{k}", SLOT_FRACTIONS) for k in range(n)]
        counts = np.minimum(copies_needed(self.workload, self.model, fill), n)
        groups = spread_into([[] for _ in range(n)], make_copies(self.workload, self.model, counts), self.model,
                             weights)
        assert groups is not None  # at most n copies of an adapter always fit n GPUs
        return to_placement(groups, [self._slots(g, f) for g, f in zip(groups, fractions, strict=True)])

    def _slots(self, group: list[Copy], fraction: float) -> int:
        return max(1, min(math.ceil(fraction * len(group)), self.model.max_slots[group_cover(group)])) if group else 1

    def start(self, gpus: int) -> dict[str, Any]:
        """The parameters of an even spread on ``gpus`` GPUs."""
        return {"gpus": gpus, "hot_fill": EVEN["hot_fill"], **{f"weight_{k}": EVEN["weight"] for k in range(gpus)},
                **{f"slots_{k}": EVEN["slots"] for k in range(gpus)}}


class _Suggest:
    """One interface over a live trial (draws values) and a finished trial's params (reads them back)."""

    def __init__(self, source: Any) -> None:
        self.source = source

    def _get(self, method: str, name: str, *args: Any) -> Any:
        if isinstance(self.source, dict):
            return self.source[name]
        return getattr(self.source, method)(name, *args)

    def int(self, name: str, low: int, high: int) -> int:
        return int(self._get("suggest_int", name, low, high))

    def float(self, name: str, low: float, high: float) -> float:
        return float(self._get("suggest_float", name, low, high))

    def categorical(self, name: str, choices: tuple[float, ...]) -> float:
        return float(self._get("suggest_categorical", name, choices))


@dataclass
class OptunaPolicy:
    """TPE search over placements scored by the twin (module doc).

    Args:
        objective: ``"gpus"`` (fewest GPUs without starvation) or ``"latency"`` (lowest p99 TTFT on that many).
        n_trials: trials per study (the latency objective runs two studies); 40 took 44 s and 181 s on two
            zipf-large workloads of 151 and 123 adapters on the 2-core dev box (starved trials simulate slowest).
        n_jobs: trials run in parallel threads (Optuna's ``n_jobs``).
        storage: an Optuna RDB URL shared by many workers (None: in memory, this process only).
        study_name: the study to join in ``storage`` (default: one per workload, profile, seed and objective).
        verify_s: simulated seconds of each GPU's verification.
    """

    objective: str = "gpus"
    n_trials: int = 20
    n_jobs: int = 1
    storage: str | None = None
    study_name: str | None = None
    verify_s: float = VERIFY_DURATION_S
    name: str = "optuna"
    studies: list[optuna.Study] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        check_objective(self.name, self.objective)
        if self.n_trials < 1:
            raise ConfigError(f"n_trials: {self.n_trials} must be >= 1")
        if self.n_jobs < 1 and self.n_jobs != -1:
            raise ConfigError(f"n_jobs: {self.n_jobs} must be >= 1 (or -1: one per CPU)")

    def place(self, workload: WorkloadSpec, profile: TwinProfile, *, seed: int = 0) -> Placement:
        model = servable_model(profile, workload)
        low = lower_bound_gpus(workload, profile)
        space = _Space(workload, model, low, 2 * low + 1)
        verifier = Verifier(workload, profile, seed, self.verify_s)
        base = self.study_name or self._default_name(workload, profile, seed)
        self.studies = []
        best = self._search(f"{base}-gpus", space, verifier, seed, None, space.start(space.high))
        if self.objective == "latency":
            best = self._search(f"{base}-latency", space, verifier, seed, best["gpus"], best)
        return space.build(best)

    def _search(self, study_name: str, space: _Space, verifier: Verifier, seed: int, gpus: int | None,
                start: dict[str, Any]) -> dict[str, Any]:
        """Run one study (``gpus`` fixed, or drawn when None) from the trial ``start``; returns its best
        feasible trial's params, ``gpus`` included."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.TPESampler(seed=seed)
        study = optuna.create_study(storage=self.storage, sampler=sampler, study_name=study_name,
                                    direction="minimize", load_if_exists=self.storage is not None)
        self.studies.append(study)
        if not study.trials:
            study.enqueue_trial({k: v for k, v in start.items() if gpus is None or k != "gpus"})

        def objective(trial: optuna.Trial) -> float:
            verification = verifier.verification(space.build(trial, gpus))
            p99 = verification.p99_ttft_ms if math.isfinite(verification.p99_ttft_ms) else math.inf
            trial.set_constraint("starved_gpus", verification.starved_gpus)  # feasible at 0
            trial.set_user_attr("starved_gpus", verification.starved_gpus)
            trial.set_user_attr("gpus", len(verification.gpus))
            trial.set_user_attr("p99_ttft_ms", p99)
            if gpus is not None:
                return p99
            return len(verification.gpus) + p99 / (p99 + LATENCY_SCALE_MS)

        study.optimize(objective, n_trials=self.n_trials, n_jobs=self.n_jobs)
        feasible = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
                    and t.user_attrs["starved_gpus"] == 0]
        if not feasible:
            raise ConfigError(f"optuna: none of {len(study.trials)} trials of study {study_name!r} is starvation-free; "
                              "raise n_trials")
        best = min(feasible, key=lambda t: (t.value, t.number))
        return {**best.params, **({"gpus": gpus} if gpus is not None else {})}

    def _default_name(self, workload: WorkloadSpec, profile: TwinProfile, seed: int) -> str:
        """One study per (workload, profile, seed, verification length): workers of one search share it."""
        key = json.dumps([workload.to_dict(), profile.name, seed, self.verify_s], sort_keys=True, default=str)
        return f"adaptergym-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


POLICIES.register("optuna")(OptunaPolicy)
