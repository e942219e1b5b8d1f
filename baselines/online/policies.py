"""The online policies: each decides, before every epoch, the plan the fleet follows in it.

* ``static-mean`` / ``static-peak``: one plan for the whole episode, every adapter at its mean rate over the
  episode / at its own peak epoch rate; never changes.
* ``periodic``: provisions for an upper forecast (learnt from its own errors) of each adapter's peak before new
  capacity could serve, held through short dips; changes the fleet when the surrogate predicts the running plan
  falls short of it, or when it fits on fewer GPUs with room to spare (:class:`Replanner`).
* ``oracle``: the same provisioning on the true rates of the coming epochs.
* ``reactive``: no forecast; a replica that starved in the last epoch gets a new replica that takes half its
  traffic; when utilisation is low, the least loaded replica is removed.

Every policy packs with the greedy policy's surrogate (:mod:`baselines.online.packing`), never the twin, so a
decision takes milliseconds to a fraction of a second. The adaptive ones (``periodic``, ``oracle``,
``reactive``) start the episode from a fleet packed for its first epoch's true rates (the fleet an operator
would be running when the episode begins); the static ones plan once for the whole episode. The static and
oracle policies read the future (``fleet.true_rates``): they are references, not deployable policies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from adaptergym.dynamic import DynamicFleet, FleetPlan, ReplicaSpec
from adaptergym.errors import ConfigError
from adaptergym.forecast import Forecaster, make_forecaster
from adaptergym.server_capacity import rank_cover
from baselines.capacity import capacity_model
from baselines.online.packing import Group, Packer, plan_of

#: Rates are packed with this much room (a GPU filled to 1/1.25 = 80% of the surrogate's starvation edge).
HEADROOM = 0.25
#: ``periodic``/``oracle`` shrink only when the forecast also packs on fewer GPUs with this much more room.
SHRINK_BAND = 0.05
#: ``periodic``/``oracle`` keep the running plan while the surrogate says it serves the rates with this much room.
KEEP_HEADROOM = HEADROOM
#: ``periodic``/``oracle`` provision each GPU for this many standard deviations of its forecast error.
MARGIN_Z = 1.5
#: ``periodic``/``oracle`` plan for the highest upper forecast of this many decisions (1: the latest alone).
HOLD_EPOCHS = 1
#: ``periodic``/``oracle`` measure their forecast error over this many past decisions.
ERROR_WINDOW = 12
#: ``periodic``/``oracle`` add ``shrink_band`` of room to a packing the surrogate judges starved at most this often.
REPACK_STEPS = 3


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


def lead_epochs(startup_s: float, epoch_s: float) -> int:
    """The epochs a plan made now must cover: the coming one, and those a replica launched at the next decision
    spends starting (``startup_s``), so a ramp is provisioned before it arrives."""
    return 1 + math.ceil(startup_s / epoch_s)


def upper_rates(expected: np.ndarray, errors: np.ndarray, z: float, gpus: int) -> np.ndarray:
    """Per adapter, the highest of the ``expected`` rates (shape (epochs, adapters)) plus its share of a
    ``z``-sigma margin per GPU: an upper forecast learnt from the forecast's own past ``errors`` (req/s it fell
    short by, shape (past peaks, adapters); none: no margin).

    A GPU overloads when the sum of its adapters' errors does, so the margin is sized per GPU: ``z`` times the
    root of the summed error variances of a GPU's share (``1/gpus``) of the adapters, shared by the adapters in
    proportion to their variance. An adapter whose forecasts miss gets most of the room, one they hit none, and
    the fleet's total margin grows as the square root of its adapters' error, not linearly in it.
    """
    peak = expected.max(axis=0)
    if not len(errors):
        return peak
    variance = np.mean(np.square(errors), axis=0)
    total = variance.sum()
    if total <= 0:
        return peak
    return peak + z * variance * np.sqrt(max(gpus, 1) / total)


def shortfall(observed: np.ndarray, peak: np.ndarray) -> np.ndarray:
    """By how much each adapter's highest rate in ``observed`` (shape (epochs, adapters)) exceeded the ``peak``
    planned for those epochs; 0 where it did not (over-forecasting is the headroom's business, not an error
    the margin must cover)."""
    return np.maximum(observed.max(axis=0) - peak, 0.0)


def held(needs: Sequence[np.ndarray], hold: int) -> np.ndarray:
    """The per-adapter maximum of the last ``hold`` of ``needs`` (one rate vector per decision, oldest first):
    a rise is planned for at once, a fall only once it has lasted ``hold`` decisions (asymmetric hysteresis)."""
    return np.max(np.stack(needs[-hold:]), axis=0)


@dataclass
class Replanner:
    """Re-plan each epoch for the rates an operator would provision: an upper forecast of the peak before new
    capacity could come up, held through short dips, with hysteresis.

    **Look-ahead** (:func:`lead_epochs`). A replica added now serves only after its start-up time (7-8 min at 80
    GPU slots on the default profile, longer than a 5-minute epoch), so the plan covers the highest rate each
    adapter is expected to reach before a replica added at the next decision could serve.

    **Upper forecast** (:func:`upper_rates`). To that peak each adapter adds its share of a ``margin_z``-sigma
    margin per GPU, learnt from the policy's own errors: for each of the last ``error_window`` look-ahead peaks, by
    how much the highest rate that has arrived in its epochs so far exceeded it (:func:`shortfall`). An adapter
    whose peaks came in above the forecast gets room, one they did not gets none.

    **Asymmetric hysteresis** (:func:`held`). The rates planned for are the maximum of the last ``hold_epochs``
    upper forecasts: up at once, down only after sustained low load. The default, 1, plans for the latest alone
    (the shrink band and the rising-load rule below hold capacity instead): on the train seeds it spent fewer
    GPU-hours than 2 for every forecaster and family (README, "Online policies").

    **A slot per adapter** (``slot_each``, :class:`Packer`): every replica gets at least as many LoRA slots as
    adapters it is packed with, and keeps a group only if it has them.

    **Keep or re-pack.** Packs with ``headroom`` (25%: GPUs filled to 80% of the surrogate's starvation edge) but
    keeps the running plan while the surrogate predicts it serves the rates with ``keep_headroom`` of room (the
    surrogate is optimistic near its edge) and a fresh packing needs as many GPUs or more. It re-packs (fitted to
    the running replicas, :meth:`Packer.fit`) when the running plan fails that margin, and shrinks only to a
    packing with ``shrink_band`` more room, when that needs fewer GPUs (consolidating is where the surrogate errs),
    and never while the observed load is rising (:func:`rising`: a forecast that calls the top of a ramp too early,
    as a forecaster with no day behind it does, would otherwise drop the GPUs the ramp is about to need).
    A packing the surrogate itself judges short at ``keep_headroom`` (the greedy's packing and the judge can
    disagree near the edge) gets ``shrink_band`` more room first, up to :data:`REPACK_STEPS` times (:meth:`pack`),
    so a new plan passes the test that keeps it. Running replicas are never restarted: a group their flags cannot
    serve goes to a new replica. Make before break (:func:`make_before_break`): new replicas are added first,
    what runs is left as it is, and adapters move only once every replica is up; while one is starting the plan
    stays, unless it fails the margin (then more replicas are added at once). Once they are up, the change they
    were started for is finished (if the surrogate still judges it enough), not re-planned from scratch: a fresh
    packing each epoch had started replicas for each new packing and held them all (9-14 GPUs where 6 served, on
    diurnal-v0). A shrink only moves adapters onto running replicas: one that needs new replicas (a packing on
    fewer GPUs gives each more adapters than the running ones have slots for) is declined, as it paid their
    start-up for a GPU less and, on diurnal-v0's train seeds, starved when the load turned.

    **Spill while replicas start** (``spill``, :meth:`Packer.spill`). A change that starts replicas leaves the
    running ones as they are for minutes; meanwhile the hottest adapters of a replica the surrogate judges starved
    are copied onto serving replicas with a free LoRA slot (a runtime load of seconds), so a flash crowd on one
    adapter is shared by the fleet's spare room. The copies go when the change is finished (a running plan kept
    because it serves the rates keeps them). On flash-crowd-v0's first six train seeds it cut the starved
    adapter-minutes of ``gbr`` / ``last`` from 382 / 391 to 318 / 318; on drift-v0's first three ``gbr`` / ``last`` /
    ``ewma`` starve 0 / 0 / 38 with it, 0 / 102 / 12 without; GPU-hours within 0.4 on every family
    (``python examples/spill_ablation.py [FAMILY] [SEEDS] [FORECASTERS]``; README, "Online policies").
    """

    headroom: float = HEADROOM
    shrink_band: float = SHRINK_BAND
    keep_headroom: float = KEEP_HEADROOM
    margin_z: float = MARGIN_Z
    hold_epochs: int = HOLD_EPOCHS
    error_window: int = ERROR_WINDOW
    slot_each: bool = True
    spill: bool = True
    name: str = "replanner"
    _packer: Packer | None = field(default=None, init=False, repr=False)
    _packers: dict[float, Packer] = field(default_factory=dict, init=False, repr=False)  # by headroom
    _peaks: list[tuple[int, int, np.ndarray]] = field(default_factory=list, init=False, repr=False)
    _errors: list[np.ndarray] = field(default_factory=list, init=False, repr=False)
    _needs: list[np.ndarray] = field(default_factory=list, init=False, repr=False)
    _pending: FleetPlan | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        for knob in ("headroom", "shrink_band", "keep_headroom", "margin_z"):
            if not 0 <= getattr(self, knob) <= 4:
                raise ConfigError(f"{knob}: {getattr(self, knob)!r} must be in [0, 4]")
        for knob in ("hold_epochs", "error_window"):
            if getattr(self, knob) < 1:
                raise ConfigError(f"{knob}: {getattr(self, knob)!r} must be an integer >= 1")

    def reset(self, fleet: DynamicFleet) -> None:
        self._packer = Packer(fleet, self.headroom, self.slot_each)
        self._packers = {self.headroom: self._packer}
        self._peaks, self._errors, self._needs = [], [], []
        self._pending = None

    def rates(self, fleet: DynamicFleet, epochs: int) -> np.ndarray:
        """The rates expected in the next ``epochs`` epochs, req/s: shape (epochs, adapters)."""
        raise NotImplementedError

    def lead_epochs(self, fleet: DynamicFleet, plan: FleetPlan) -> int:
        """:func:`lead_epochs` at the start-up time of the largest ``max_loras`` of ``plan``."""
        slots = max((spec.max_loras for spec in plan.values()), default=1)
        return lead_epochs(fleet.profile.startup_time.seconds(slots), fleet.epoch_s)

    def needed_rates(self, fleet: DynamicFleet, plan: FleetPlan) -> np.ndarray:
        """The rates to provision for (class doc): the held upper forecast of the look-ahead peak. Also measures
        the errors of the past look-ahead peaks on what has arrived since (:meth:`_learn`)."""
        lead = self.lead_epochs(fleet, plan)
        expected = self.rates(fleet, lead)
        self._learn(fleet.observed_rates())
        self._peaks.append((fleet.epoch, lead, expected.max(axis=0)))
        upper = upper_rates(expected, np.array(self._errors), self.margin_z, len(plan))
        self._needs = [*self._needs, upper][-self.hold_epochs:]
        return held(self._needs, self.hold_epochs)

    def _learn(self, observed: np.ndarray) -> None:
        """The errors of the last ``error_window`` look-ahead peaks (``observed``: req/s, one row per epoch so
        far): for each, by how much each adapter's highest rate in its epochs observed so far exceeded it. A peak
        whose epochs are still running counts what they have shown, so a ramp widens the margin at once."""
        self._peaks = self._peaks[-self.error_window:]
        self._errors = [shortfall(observed[start: start + lead], peak) for start, lead, peak in self._peaks
                        if start < len(observed)]

    def plan(self, fleet: DynamicFleet) -> FleetPlan:
        if fleet.epoch == 0:
            first = self._packer.fresh_plan(fleet.true_rates())
            ahead = fleet.rate_table()[: self.lead_epochs(fleet, first)]
            self._needs = [ahead.max(axis=0)]
            return plan_of(self.pack(fleet, self._needs[0], self.headroom))
        current = fleet.plan
        rates = self.needed_rates(fleet, current)
        short = self._packer.starved(current, rates, self.keep_headroom)
        settled = not any(r.state == "starting" for r in fleet.results[-1].replicas)
        pending, self._pending = self._pending, None
        if not short and (not settled or rising(fleet.observed_rates())):
            self._pending = pending  # finished later: nothing moves onto a starting replica, nor while load rises
            return current  # the last change is still under way, or the load rises (never shrink into it)
        if settled and pending is not None and not self._packer.starved(pending, rates, self.keep_headroom):
            return pending  # its new replicas are up: finish the change they were started for
        target = self.pack(fleet, rates, self.headroom)
        if not short:
            if len(target) >= len(current):
                return current
            target = self.pack(fleet, rates, self.headroom + self.shrink_band)
            if len(target) >= len(current):
                return current
        fitted = self._packer.fit(target, current)
        if not short and set(fitted) - set(current):
            return current  # a shrink only moves adapters onto running replicas (class doc)
        step = make_before_break(fitted, current, settled)
        if step == fitted:
            return step
        self._pending = fitted
        serving = {r.id for r in fleet.results[-1].replicas if r.state == "serving"}
        return self._packer.spill(step, rates, serving, self.keep_headroom) if self.spill else step

    def pack(self, fleet: DynamicFleet, rates: np.ndarray, headroom: float) -> list[Group]:
        """The greedy packing of ``rates`` with ``headroom``, or, while the surrogate judges it short with
        ``keep_headroom``, with ``shrink_band`` more room at a time, up to :data:`REPACK_STEPS` times."""
        for step in range(REPACK_STEPS + 1):
            room = round(headroom + step * self.shrink_band, 6)
            if room not in self._packers:
                self._packers[room] = Packer(fleet, room, self.slot_each)
            groups = self._packers[room].pack(rates)
            if not self._packer.starved(plan_of(groups), rates, self.keep_headroom):
                break
        return groups


def rising(observed: np.ndarray) -> bool:
    """Whether more arrived in the last epoch of ``observed`` (req/s, one row per epoch) than in the one before."""
    return len(observed) >= 2 and float(observed[-1].sum()) > float(observed[-2].sum())


def make_before_break(plan: FleetPlan, current: FleetPlan, settled: bool = True) -> FleetPlan:
    """The first step towards ``plan`` from ``current``: if ``plan`` has new replicas, or some of ``current`` are
    still starting (not ``settled``), ``current`` plus the new replicas alone (what runs keeps serving as it does,
    and nothing moves onto a replica before it is up); otherwise ``plan`` itself."""
    new = {rid: spec for rid, spec in plan.items() if rid not in current}
    return {**current, **new} if new or not settled else plan


@dataclass
class PeriodicPolicy(Replanner):
    """:class:`Replanner` on a forecast of the coming epochs' rates from the arrivals seen so far (floored, for
    the adapters that starved in the last epoch, at what arrived in it).

    Args:
        forecaster: a name of :func:`adaptergym.forecast.forecaster_names` (``holt-winters`` needs the fleet's
            ``season_s``).
    """

    forecaster: str = "ewma"
    name: str = "periodic"
    _forecast: Forecaster | None = field(default=None, init=False, repr=False)
    _seen: int = field(default=0, init=False, repr=False)

    def reset(self, fleet: DynamicFleet) -> None:
        super().reset(fleet)
        self._forecast = make_forecaster(self.forecaster, fleet.epoch_s, fleet.season_s)
        self._seen = 0

    def rates(self, fleet: DynamicFleet, epochs: int) -> np.ndarray:
        """The forecast, but never below the last epoch's rate for an adapter that starved in it (a forecaster
        that smooths would otherwise keep under-planning a surge it has already seen)."""
        for counts in fleet.observed_counts()[self._seen:]:
            self._forecast.observe(counts)
            self._seen += 1
        last = fleet.results[-1]
        return np.maximum(self._forecast.predict(epochs), np.where(last.starved, last.offered_rates, 0.0))


@dataclass
class OraclePolicy(Replanner):
    """:class:`Replanner` on the true rates of the coming epochs: what a perfect forecast would give."""

    name: str = "oracle"

    def rates(self, fleet: DynamicFleet, epochs: int) -> np.ndarray:
        return fleet.rate_table()[fleet.epoch: fleet.epoch + epochs]


@dataclass
class ReactivePolicy:
    """React to what the last epoch measured, without forecasting (module doc).

    While any replica is starting it changes nothing. Otherwise: a serving replica that starved gets a new
    replica for the half of its adapters carrying the less traffic (alternating by load); they stay on the old
    one too until the new one serves (make before break), and leave it at the next decision. With no starvation,
    when the fleet's offered load is below ``low`` of its replicas' capacity (the twin's saturated throughput of
    each, :mod:`baselines.capacity`), the replica offered the least is removed and its adapters go, one by one,
    to the replica with the most spare capacity that has a free GPU slot at their rank (none: it stays). A new
    replica's ``max_loras`` is the surrogate's best for what it takes.
    """

    headroom: float = HEADROOM
    low: float = 0.5
    name: str = "reactive"
    _packer: Packer | None = field(default=None, init=False, repr=False)
    _splits: dict[int, int] = field(default_factory=dict, init=False, repr=False)  # new replica -> the one it relieves

    def reset(self, fleet: DynamicFleet) -> None:
        self._packer = Packer(fleet, self.headroom)
        self._splits = {}

    def plan(self, fleet: DynamicFleet) -> FleetPlan:
        if fleet.epoch == 0:
            return self._packer.fresh_plan(fleet.true_rates())
        last = fleet.results[-1]
        plan = dict(fleet.plan)
        if any(r.state == "starting" for r in last.replicas):
            return plan
        for child, parent in self._splits.items():  # the new replicas serve now: their adapters leave the old ones
            if child in plan and parent in plan:
                moved = set(plan[child].adapters)
                old = plan[parent]
                plan[parent] = ReplicaSpec(tuple(a for a in old.adapters if a not in moved), old.max_loras,
                                           old.max_lora_rank)
        self._splits = {}
        rates = dict(zip(fleet.adapter_ids, last.offered_rates, strict=True))
        next_id = max(plan, default=-1) + 1
        for replica in last.replicas:
            if replica.starved and replica.id in plan and len(plan[replica.id].adapters) > 1:
                moved = tuple(sorted(plan[replica.id].adapters, key=lambda a: -rates[a])[1::2])
                plan[next_id] = self._packer.spec_for(moved, np.array([rates[a] for a in moved]))
                self._splits[next_id] = replica.id
                next_id += 1
        if self._splits or len(plan) < 2:
            return plan
        return self._shrink(fleet, plan, rates)

    def _shrink(self, fleet: DynamicFleet, plan: dict[int, ReplicaSpec], rates: dict[str, float]) -> FleetPlan:
        """Remove the least loaded replica when the fleet's load is below ``low`` of its capacity (class doc)."""
        last = fleet.results[-1]
        model = capacity_model(fleet.profile, fleet.lengths)
        capacity = {rid: model.peak_tok_s(spec.max_lora_rank or rank_cover(8), len(spec.adapters))
                    for rid, spec in plan.items()}
        offered = {r.id: r.offered_tok_s for r in last.replicas if r.id in plan}
        if sum(offered.values()) >= self.low * sum(capacity.values()):
            return plan
        victim = min(plan, key=lambda rid: offered.get(rid, 0.0))
        spare = {rid: capacity[rid] - offered.get(rid, 0.0) for rid in plan if rid != victim}
        moved: dict[int, list[str]] = {rid: list(plan[rid].adapters) for rid in spare}
        for a in sorted(plan[victim].adapters, key=lambda a: -rates[a]):
            room = [rid for rid in spare if (plan[rid].max_lora_rank or 0) >= self._packer.ranks[a]
                    and len(moved[rid]) < plan[rid].max_loras]
            target = max(room, key=lambda rid: spare[rid], default=None)
            if target is None:  # no other replica has a slot for it at its rank: keep the victim
                return plan
            moved[target].append(a)
            spare[target] -= rates[a] * self._packer.tokens_per_request
        del plan[victim]
        for rid, adapters in moved.items():
            plan[rid] = ReplicaSpec(tuple(adapters), plan[rid].max_loras, plan[rid].max_lora_rank)
        return plan
