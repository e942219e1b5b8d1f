"""The online policies: each decides, before every epoch, the plan the fleet follows in it.

* ``static-mean`` / ``static-peak``: one plan for the whole episode, every adapter at its mean rate over the
  episode / at its own peak epoch rate; never changes.
* ``periodic``: plans on a forecast of the coming epoch's rates from what arrived so far; changes the fleet when
  the surrogate predicts the running plan starves at the forecast, or when the forecast fits on fewer GPUs with
  room to spare (hysteresis).
* ``oracle``: ``periodic`` on the true rates of the coming epoch.
* ``reactive``: no forecast; a replica that starved in the last epoch gets a new replica that takes half its
  traffic; when utilisation is low, the least loaded replica is removed.

Every policy packs with the greedy policy's surrogate (:mod:`baselines.online.packing`), never the twin, so a
decision takes milliseconds to a fraction of a second. The adaptive ones (``periodic``, ``oracle``,
``reactive``) start the episode from a fleet packed for its first epoch's true rates (the fleet an operator
would be running when the episode begins); the static ones plan once for the whole episode. The static and
oracle policies read the future (``fleet.true_rates``): they are references, not deployable policies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from adaptergym.dynamic import DynamicFleet, FleetPlan, ReplicaSpec
from adaptergym.envs.common import rank_cover
from adaptergym.errors import ConfigError
from baselines.capacity import capacity_model
from baselines.online.packing import Packer

#: Rates are packed with this much room (a GPU filled to 1/1.25 = 80% of the surrogate's starvation edge).
HEADROOM = 0.25
#: ``periodic``/``oracle`` shrink only when the forecast also packs on fewer GPUs with this much more room.
SHRINK_BAND = 0.15

#: A forecaster: per-adapter rates observed so far, shape (epochs, adapters) -> next epoch's rates, shape (adapters,).
Forecast = Callable[[np.ndarray], np.ndarray]


@dataclass
class StaticPolicy:
    """One plan for the whole episode, packed for each adapter's mean (``"mean"``) or peak (``"peak"``) rate."""

    load: str = "mean"
    headroom: float = HEADROOM
    name: str = field(default="", init=False)
    _plan: FleetPlan = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.load not in ("mean", "peak"):
            raise ConfigError(f"load: {self.load!r} must be 'mean' or 'peak'")
        self.name = f"static-{self.load}"

    def reset(self, fleet: DynamicFleet) -> None:
        table = fleet.rate_table()
        weights = np.diff(fleet.traffic.edges)
        rates = weights @ table / weights.sum() if self.load == "mean" else table.max(axis=0)
        self._plan = Packer(fleet, self.headroom).fresh_plan(rates)

    def plan(self, fleet: DynamicFleet) -> FleetPlan:
        return self._plan


@dataclass
class Replanner:
    """Re-plan each epoch on the rates :meth:`rates` expects, with hysteresis.

    Keeps the running plan when the surrogate predicts it serves those rates (times ``1 + headroom``) without
    starving and a fresh packing needs as many GPUs or more; adopts the fresh packing (fitted to the running
    replicas, :meth:`Packer.fit`) when the running plan would starve, or when the rates pack on fewer GPUs
    even with ``shrink_band`` more room.
    """

    headroom: float = HEADROOM
    shrink_band: float = SHRINK_BAND
    name: str = "replanner"
    _packer: Packer | None = field(default=None, init=False, repr=False)

    def reset(self, fleet: DynamicFleet) -> None:
        self._packer = Packer(fleet, self.headroom)

    def rates(self, fleet: DynamicFleet) -> np.ndarray:
        """The rates the coming epoch is planned on, req/s per adapter."""
        raise NotImplementedError

    def plan(self, fleet: DynamicFleet) -> FleetPlan:
        packer = self._packer
        if fleet.epoch == 0:
            return packer.fresh_plan(fleet.true_rates())
        rates = self.rates(fleet)
        current = fleet.plan
        target = packer.pack(rates)
        if not packer.starved(current, rates):
            if len(target) >= len(current):
                return current
            roomy = Packer(fleet, self.headroom + self.shrink_band)
            if len(roomy.pack(rates)) >= len(current):
                return current
        return packer.fit(target, current)


@dataclass
class PeriodicPolicy(Replanner):
    """:class:`Replanner` on a forecast of the coming epoch's rates from those observed so far.

    Args:
        forecast: observed rates so far, shape (epochs, adapters) -> next epoch's, shape (adapters,).
        forecaster: the forecast's name, for reports.
    """

    forecast: Forecast | None = None
    forecaster: str = "forecast"
    name: str = "periodic"

    def __post_init__(self) -> None:
        if self.forecast is None:
            raise ConfigError("periodic: needs a forecast (a function of the observed rates)")

    def rates(self, fleet: DynamicFleet) -> np.ndarray:
        return np.maximum(np.asarray(self.forecast(fleet.observed_rates()), float), 0.0)


@dataclass
class OraclePolicy(Replanner):
    """:class:`Replanner` on the true rates of the coming epoch: what a perfect forecast would give."""

    name: str = "oracle"

    def rates(self, fleet: DynamicFleet) -> np.ndarray:
        return fleet.true_rates()


@dataclass
class ReactivePolicy:
    """React to what the last epoch measured, without forecasting (module doc).

    A replica that starved (and is serving, not starting) gets a new replica that takes the half of its adapters
    carrying the less traffic, alternating by load; with no starvation, when the fleet's offered load is below
    ``low`` of its replicas' capacity (the twin's saturated throughput of each, :mod:`baselines.capacity`), the
    replica offered the least is removed and its adapters go, one by one, to the replica with the most spare
    capacity.
    """

    headroom: float = HEADROOM
    low: float = 0.5
    name: str = "reactive"
    _packer: Packer | None = field(default=None, init=False, repr=False)

    def reset(self, fleet: DynamicFleet) -> None:
        self._packer = Packer(fleet, self.headroom)

    def plan(self, fleet: DynamicFleet) -> FleetPlan:
        if fleet.epoch == 0:
            return self._packer.fresh_plan(fleet.true_rates())
        last = fleet.results[-1]
        rates = dict(zip(fleet.adapter_ids, last.offered_rates, strict=True))
        plan = dict(fleet.plan)
        next_id = max(plan, default=-1) + 1
        starved = [r.id for r in last.replicas if r.starved and r.state == "serving" and r.id in plan]
        for rid in starved:
            by_load = sorted(plan[rid].adapters, key=lambda a: -rates[a])
            stay, move = tuple(by_load[0::2]), tuple(by_load[1::2])
            if not move:
                continue
            old = plan[rid]
            plan[rid] = ReplicaSpec(stay, old.max_loras, old.max_lora_rank)
            plan[next_id] = ReplicaSpec(move, old.max_loras, old.max_lora_rank)
            next_id += 1
        if starved or len(plan) < 2:
            return plan
        model = capacity_model(fleet.profile, fleet.lengths)
        capacity = {rid: model.peak_tok_s(spec.max_lora_rank or rank_cover(8), len(spec.adapters))
                    for rid, spec in plan.items()}
        offered = {r.id: r.offered_tok_s for r in last.replicas if r.id in plan}
        if sum(offered.values()) >= self.low * sum(capacity.values()):
            return plan
        victim = min(plan, key=lambda rid: offered.get(rid, 0.0))
        spare = {rid: capacity[rid] - offered.get(rid, 0.0) for rid in plan if rid != victim}
        tokens = self._packer.tokens_per_request
        moved: dict[int, list[str]] = {rid: list(plan[rid].adapters) for rid in spare}
        for a in sorted(plan[victim].adapters, key=lambda a: -rates[a]):
            covered = [rid for rid in spare if (plan[rid].max_lora_rank or 0) >= self._packer.ranks[a]]
            target = max(covered, key=lambda rid: spare[rid], default=None)
            if target is None:  # no replica's max_lora_rank covers it: keep the victim
                return plan
            moved[target].append(a)
            spare[target] -= rates[a] * tokens
        del plan[victim]
        for rid, adapters in moved.items():
            plan[rid] = ReplicaSpec(tuple(adapters), plan[rid].max_loras, plan[rid].max_lora_rank)
        return plan

