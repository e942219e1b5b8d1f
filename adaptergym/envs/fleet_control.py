"""What ``AdapterFleet-v0`` and any policy acting through its knobs share, on any :class:`DynamicFleet`: the
observation, the action masks, and the plan an action makes (knob levels and :class:`KnobPacker`).

The environment wraps one :class:`FleetControl` per episode; an agent replayed on a twin-scored fleet (the
dynamic leaderboard) wraps one too, so it sees exactly the observations it trained on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from adaptergym.dynamic import DynamicFleet, EpochResult, FleetPlan
from adaptergym.edges import shipped_edges
from adaptergym.envs.common import log_feature, rank_feature
from adaptergym.envs.fleet_packer import KnobPacker, Knobs, effective_count
from adaptergym.forecast import make_forecaster
from adaptergym.profile import TwinProfile
from adaptergym.server_capacity import MAX_LORAS_LEVELS, mean_request_tokens, rank_cover
from adaptergym.workload import LengthSpec

#: Knob levels an action picks from (one index each): target fill, shrink hysteresis, new replicas' slot fraction.
FILLS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 1.0)
HYSTERESIS = (0.0, 0.1, 0.25, 0.5)
SLOT_FRACTIONS = (0.125, 0.25, 0.5, 1.0)
KNOB_LEVELS = (FILLS, HYSTERESIS, SLOT_FRACTIONS)
#: The knobs of the fleet every episode starts with (fill 0.5, hysteresis 0.25, slot fraction 0.5).
START_ACTION = (6, 2, 2)
FLEET_FEATURES = 15
ADAPTER_FEATURES = 6
REPLICA_FEATURES = 10


def replica_capacity(profile: TwinProfile, lengths: LengthSpec, cover: int, adapters: int,
                     capacity_tok_s: float) -> tuple[np.ndarray, str]:
    """What a replica of ``max_lora_rank`` ``cover`` holding ``k`` adapters serves without starving, GPUs' worth,
    for ``k`` in ``0 .. adapters``, and where that comes from: the shipped starvation edges of (profile,
    lengths) interpolated in log2 of the count (``"starvation edges"``), or, where none ship, one GPU's
    saturated throughput whatever the count (``"saturated throughput"``, so ``fill`` is relative to that)."""
    grid = sorted((count, v) for (c, count), v in shipped_edges(profile, lengths).items() if c == cover)
    if not grid:
        return np.ones(adapters + 1), "saturated throughput"
    counts, values = (np.array(x, float) for x in zip(*grid, strict=True))
    k = np.maximum(np.arange(adapters + 1), 1)
    return np.interp(np.log2(k), np.log2(counts), values) / capacity_tok_s, "starvation edges"


def knobs_of(action: np.ndarray | tuple[int, int, int]) -> Knobs:
    """The knobs of an action (indices into :data:`KNOB_LEVELS`)."""
    return Knobs(*(levels[int(i)] for levels, i in zip(KNOB_LEVELS, action, strict=True)))


@dataclass(frozen=True, slots=True)
class Decision:
    """A plan made from an action: the knobs applied, and what was replaced because it was masked."""

    plan: FleetPlan
    knobs: Knobs
    replicas: int  # replicas of the packer's target (the plan may hold more while new ones start)
    invalid: str = ""


class FleetControl:
    """Observes a :class:`DynamicFleet` and turns knob actions into its plans (the environment's doc has the
    observation tables).

    Args:
        fleet: the fleet, before its first epoch.
        forecaster: a name of :func:`adaptergym.forecast.forecaster_names`.
        capacity_tok_s: one GPU's saturated throughput, tokens/s (the unit of loads).
        capacity: the load (GPUs' worth) a replica holding ``k`` adapters serves without starving, for ``k`` in
            ``0 .. adapters``, and ``capacity_source`` where that comes from (:func:`replica_capacity`).
        max_replicas: the largest fleet the packer plans; rows of the replica table.
        top_k: rows of the adapter table.
        max_slots: the largest ``max_loras`` vLLM starts with at the workload's rank cover.
    """

    def __init__(self, fleet: DynamicFleet, *, forecaster: str, capacity_tok_s: float, capacity: np.ndarray,
                 capacity_source: str, max_replicas: int, top_k: int, max_slots: int) -> None:
        self.fleet = fleet
        self.forecaster = make_forecaster(forecaster, fleet.epoch_s, fleet.season_s)
        self.tokens_per_request = mean_request_tokens(fleet.lengths)
        self.unit = self.tokens_per_request / capacity_tok_s  # req/s -> GPUs' worth
        self.capacity_tok_s = capacity_tok_s
        self.capacity_source = capacity_source
        self.max_replicas = max_replicas
        self.top_k = top_k
        self.packer = KnobPacker(fleet.adapter_ids, fleet.adapter_ranks, capacity, max_replicas, MAX_LORAS_LEVELS,
                                 max_slots)
        self._rank_feature = rank_feature(np.array([rank_cover(int(r)) for r in fleet.adapter_ranks]))
        self._seen = 0
        self.next_load = self.planned_load = np.zeros(len(fleet.adapter_ids))

    # ------------------------------------------------------------------ deciding
    def lead_epochs(self) -> int:
        """The coming epoch, and those a replica launched at the next decision spends starting (at the largest
        ``max_loras`` of the fleet), as the periodic policy plans."""
        slots = max(self.packer.slots.values(), default=self.packer.levels[-1])
        return 1 + math.ceil(self.fleet.profile.startup_time.seconds(slots) / self.fleet.epoch_s)

    def first_plan(self) -> FleetPlan:
        """The fleet an episode starts with: :data:`START_ACTION` on the true rates of its first epochs (what an
        operator would be running when the episode begins; the online baselines start the same way)."""
        ahead = self.fleet.rate_table()[: self.lead_epochs()].max(axis=0)
        return self.packer.plan(ahead * self.unit, knobs_of(START_ACTION), {})

    def action_masks(self) -> np.ndarray:
        """Valid levels of each knob, concatenated (sb3-contrib's MultiDiscrete mask): a fill is masked when the
        planned load needs more than ``max_replicas`` at it (the largest fill never is)."""
        total = float(self.planned_load.sum())
        spread = effective_count(self.planned_load)
        fills = np.array([self.packer.carries(total, spread, self.max_replicas, f) for f in FILLS])
        fills[-1] = True
        return np.concatenate([fills, np.ones(len(HYSTERESIS), bool), np.ones(len(SLOT_FRACTIONS), bool)])

    def decide(self, action: np.ndarray | tuple[int, int, int]) -> Decision:
        """The plan of the coming epoch for ``action``; a masked fill is replaced by the smallest valid one."""
        fill, hysteresis, slots = (int(i) for i in action)
        valid = np.flatnonzero(self.action_masks()[: len(FILLS)])
        note = ""
        if fill not in valid:
            chosen, fill = fill, int(valid[0])
            note = (f"fill {FILLS[chosen]} needs more than max_replicas ({self.max_replicas}) for the planned load; "
                    f"used fill {FILLS[fill]}")
        knobs = knobs_of((fill, hysteresis, slots))
        last = self.fleet.results[-1]
        starting = {r.id for r in last.replicas if r.state == "starting"}
        plan = self.packer.plan(self.planned_load, knobs, self.fleet.plan, starting)
        return Decision(plan, knobs, len(self.packer.replicas), note)

    # ------------------------------------------------------------------ observing
    def update(self) -> None:
        """Feed the forecaster the epochs run since the last call, and forecast the coming ones."""
        for counts in self.fleet.observed_counts()[self._seen:]:
            self.forecaster.observe(counts)
            self._seen += 1
        forecast = self.forecaster.predict(self.lead_epochs())
        self.next_load = forecast[0] * self.unit
        self.planned_load = forecast.max(axis=0) * self.unit

    def observation(self) -> dict[str, np.ndarray]:
        """The observation after the last epoch run (the environment's doc has the tables)."""
        fleet, results = self.fleet, self.fleet.results
        last = results[-1]
        n = len(fleet.adapter_ids)
        observed = last.offered_rates * self.unit
        before = results[-2].offered_rates.sum() * self.unit if len(results) > 1 else observed.sum()
        starting = sum(r.state == "starting" for r in last.replicas)
        offered = float(last.offered_tok_s.sum())
        planned = self.planned_load
        top = np.argsort(-planned, kind="stable")[: self.top_k]
        copies = self.packer.copies
        phase = 2.0 * math.pi * last.end_s / fleet.season_s if fleet.season_s else None
        startup = fleet.profile.startup_time.seconds(max(self.packer.slots.values(), default=1))
        fleet_row = np.array([
            observed.sum(), self.next_load.sum(), planned.sum(), observed.sum() - before,
            len(last.replicas) / self.max_replicas, starting / self.max_replicas, last.starved.sum() / n,
            float(last.served_tok_s.sum()) / offered if offered > 0 else 1.0, fleet.epoch / fleet.epochs,
            0.0 if phase is None else math.sin(phase), 0.0 if phase is None else math.cos(phase), log_feature(n),
            planned[top].sum() / planned.sum() if planned.sum() > 0 else 1.0, startup / fleet.epoch_s,
            self._fleet_utilisation(),
        ], np.float32)
        adapters = np.zeros((self.top_k, ADAPTER_FEATURES), np.float32)
        adapters[: top.size] = np.column_stack([observed[top], self.next_load[top], planned[top],
                                                self._rank_feature[top], log_feature(copies[top]),
                                                last.starved[top]])
        return {"fleet": fleet_row, "adapters": adapters.ravel(), "replicas": self._replica_table(last).ravel()}

    def _fleet_utilisation(self) -> float:
        """Planned load over the capacity of the packer's replicas (their effective adapter counts)."""
        loads, capacities = self.packer.target_loads(self.planned_load)
        return float(loads.sum() / capacities.sum()) if capacities.size else 0.0

    def _replica_table(self, last: EpochResult) -> np.ndarray:
        """One row per replica of the plan that ran (by id, the first ``max_replicas``), zeros past them."""
        table = np.zeros((self.max_replicas, REPLICA_FEATURES), np.float32)
        loads, capacities = self.packer.target_loads(self.planned_load)
        planned = dict(zip(self.packer.replicas, zip(loads, capacities, strict=True), strict=True))
        for row, r in zip(table, last.replicas[: self.max_replicas], strict=False):
            queue = r.waiting if r.waiting is not None else self.fluid_queue(r.offered_tok_s, r.served_tok_s,
                                                                             last.length_s)
            row[:] = (1.0, r.state == "starting", log_feature(r.adapters), log_feature(r.max_loras),
                      r.offered_tok_s / self.capacity_tok_s,
                      r.served_tok_s / r.offered_tok_s if r.offered_tok_s > 0 else 1.0, log_feature(queue),
                      r.starved, *planned.get(r.id, (0.0, 0.0)))
        return table

    def fluid_queue(self, offered_tok_s: float, served_tok_s: float, length_s: float) -> float:
        """Requests left waiting at an epoch's end when a fast scorer serves ``served`` of ``offered`` tokens/s:
        the shortfall over the epoch, in mean requests (fast scorers count no queue)."""
        return max(0.0, offered_tok_s - served_tok_s) * length_s / self.tokens_per_request
