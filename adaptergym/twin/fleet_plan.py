"""A fleet plan (which replicas exist, what each serves, with which vLLM flags) and what changing plans costs.

A plan maps stable replica ids to :class:`ReplicaSpec`. Going from one plan to the next (:func:`plan_changes`):

* an id only in the new plan is a **cold start**: a new GPU that serves after the profile's start-up time;
* an id only in the old plan is a **removal**: the replica drains (what runs finishes) and its GPU is freed;
* an id in both whose server flags differ (``max_loras``, or ``max_lora_rank``, also when it is derived from the
  adapters' ranks and they change) is a **restart**: it drains, then starts again with the new flags;
* otherwise the replica stays up and adapters are **loaded** (vLLM's runtime ``load_lora_adapter``) or
  **unloaded** (``unload_lora_adapter``) on it.

An adapter that leaves one replica and joins another in the same change is a **migration**.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from adaptergym.errors import ConfigError
from adaptergym.twin.config import VLLM_MAX_LORA_RANKS, ServerConfig, default_rank


@dataclass(frozen=True, slots=True)
class ReplicaSpec:
    """What one replica should be: the adapters it serves (ids) and its vLLM start-up flags.

    Attributes:
        adapters: ids of the adapters it serves; empty is an idle replica (a warm spare).
        max_loras: GPU adapter slots (``--max-loras``).
        max_lora_rank: ``--max-lora-rank``; None: the smallest value vLLM accepts that covers its adapters' ranks
            (so adding a higher-rank adapter then changes it, which is a restart).
    """

    adapters: tuple[str, ...]
    max_loras: int = field(default=8)
    max_lora_rank: int | None = field(default=None)

    def config(self, ranks: Mapping[str, int], cpu_slots: int) -> ServerConfig:
        """The replica's server flags; the CPU cache (``cpu_slots``) holds every adapter of the workload, so
        adapters moved onto it never need a restart for room."""
        base = ServerConfig(max_loras=self.max_loras, max_cpu_loras=max(cpu_slots, self.max_loras),
                            max_lora_rank=self.max_lora_rank)
        return base if self.max_lora_rank is not None else default_rank(base, [ranks[a] for a in self.adapters])


#: replica id -> spec; ids are the caller's (stable across plans), any non-negative integers.
FleetPlan = Mapping[int, ReplicaSpec]


def check_plan(plan: FleetPlan, ranks: Mapping[str, int]) -> None:
    """Reject a plan vLLM could not follow, naming the replica and field.

    Raises:
        ConfigError: a negative or non-integer id, an unknown adapter, an adapter twice on one replica,
            ``max_loras`` < 1, a ``max_lora_rank`` vLLM does not accept or below an adapter's rank.
    """
    for rid, spec in plan.items():
        if not isinstance(rid, int) or isinstance(rid, bool) or rid < 0:
            raise ConfigError(f"plan: replica id {rid!r} must be an integer >= 0")
        where = f"plan[{rid}]"
        if not isinstance(spec, ReplicaSpec):
            raise ConfigError(f"{where}: expected a ReplicaSpec, got {type(spec).__name__}")
        check_adapters(where, spec.adapters, ranks)
        if not isinstance(spec.max_loras, int) or spec.max_loras < 1:
            raise ConfigError(f"{where}.max_loras: {spec.max_loras!r} must be an integer >= 1")
        if spec.max_lora_rank is not None:
            if spec.max_lora_rank not in VLLM_MAX_LORA_RANKS:
                raise ConfigError(f"{where}.max_lora_rank: {spec.max_lora_rank} is not one vLLM accepts "
                                  f"{VLLM_MAX_LORA_RANKS}")
            too_big = [a for a in spec.adapters if ranks[a] > spec.max_lora_rank]
            if too_big:
                raise ConfigError(f"{where}.max_lora_rank: {spec.max_lora_rank} is below adapter {too_big[0]!r}'s "
                                  f"rank {ranks[too_big[0]]}; raise it or leave it None")


def check_adapters(where: str, adapters: Sequence[str], known: Collection[str]) -> None:
    """Reject adapters of one server that the workload does not have, or that are listed twice (``where``: the
    server's name in the message)."""
    unknown = [a for a in adapters if a not in known]
    if unknown:
        raise ConfigError(f"{where}.adapters: {unknown[:3]} are not in the workload")
    if len(set(adapters)) != len(adapters):
        raise ConfigError(f"{where}.adapters: an adapter is listed twice on one server")


@dataclass(frozen=True, slots=True)
class PlanChanges:
    """What going from one plan to the next does (module doc). Replica ids are sorted.

    ``loads`` lists, per replica, the adapters it loads: those added to a replica that stays up (at runtime),
    and every adapter of a replica that (re)starts (when its server comes up).
    """

    cold_starts: tuple[int, ...] = ()
    removals: tuple[int, ...] = ()
    restarts: tuple[int, ...] = ()
    loads: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    unloads: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    migrations: int = 0

    @property
    def adapter_loads(self) -> int:
        return sum(len(v) for v in self.loads.values())


def plan_changes(old: FleetPlan, new: FleetPlan, ranks: Mapping[str, int], cpu_slots: int) -> PlanChanges:
    """The changes from ``old`` to ``new`` (module doc)."""
    kept = sorted(set(old) & set(new))
    restarts = tuple(r for r in kept
                     if old[r] != new[r] and old[r].config(ranks, cpu_slots) != new[r].config(ranks, cpu_slots))
    cold_starts = tuple(sorted(set(new) - set(old)))
    loads = {r: new[r].adapters for r in (*cold_starts, *restarts) if new[r].adapters}
    unloads = {}
    gained: Counter[str] = Counter()
    lost: Counter[str] = Counter()
    for r in set(old) | set(new):
        before = set(old[r].adapters) if r in old else set()
        after = set(new[r].adapters) if r in new else set()
        gained.update(after - before)
        lost.update(before - after)
        if r in kept and r not in restarts:
            if after - before:
                loads[r] = tuple(a for a in new[r].adapters if a not in before)
            if before - after:
                unloads[r] = tuple(a for a in old[r].adapters if a not in after)
    return PlanChanges(cold_starts, tuple(sorted(set(old) - set(new))), restarts, dict(sorted(loads.items())),
                       dict(sorted(unloads.items())), sum(min(n, lost[a]) for a, n in gained.items()))
