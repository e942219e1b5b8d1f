"""Time-varying rates: the ``schedule`` of a workload JSON, as validated, frozen components.

Contract (kept stable; other modules and branches build on it):

- A workload's ``schedule`` is a list of components. Each component names the adapters it applies to
  (``"adapters": [ids]``; omitted in a file means every adapter of the workload) and gives each of them a
  **multiplier** m(t) >= 0 on its base ``rate``. The rate of adapter i at time t is
  ``rate_i * prod_c m_c,i(t)`` (components compose by product; an adapter no component names keeps ``rate_i``).
  Multipliers, not absolute rates, so that ``rate`` stays a meaningful base for every consumer that knows
  nothing of schedules (a static placement on ``rate`` is a placement on the mean load for a daily cycle or a
  drift, and on the calm-time load for a flash crowd or an MMPP whose base state has multiplier 1).
- The schedule is a deterministic function of the spec: every random part (a drift's reshuffles, an MMPP's
  state path) is drawn from the component's own ``seed``, so the true rate at any time is known to an oracle
  and to forecast-error reports (:mod:`adaptergym.workload.rates`). The request generator only draws the
  Poisson/Gamma arrivals given those rates, and the lengths.
- A component's multipliers for one adapter do not depend on which other adapters the workload has, so
  ``WorkloadSpec.with_adapters`` keeps every kept adapter's rate function (a drift, whose ranks are shared by
  its set, turns into a per-adapter ``piecewise`` component when its set is cut), and ``with_duration``
  keeps the rates on the shorter window (components clipped to it).

Kinds (times in seconds from the workload's start):

=============  ==============================================================================================
``piecewise``  ``times_s`` [0, t1, ...] (increasing, first 0) and ``multipliers``: one list (shared by the
               adapters) or one list per adapter; segment j holds from ``times_s[j]`` to the next time.
``daily``      ``1 + amplitude * cos(2 pi (t - phase_s) / period_s)``: peak at ``phase_s``; ``amplitude`` in
               [0, 1] and ``phase_s`` a number or one per adapter; ``period_s`` default 86,400 (set it
               smaller to compress a day). At most one daily component per adapter.
``flash``      ``factor`` (>= 0) from ``start_s`` for ``duration_s`` seconds, 1 elsewhere.
``drift``      popularity drift: the set's adapters hold Zipf ranks (weight ``r**-alpha``, normalised to mean
               1 over the set) re-shuffled every ``period_s``; each reshuffle permutes a random ``fraction`` of
               the ranks (1: all of them). Give the set equal base rates for a Zipf popularity at every moment
               whose ``rate`` is each adapter's long-run mean.
``mmpp``       Markov-modulated Poisson: states with ``multipliers`` and ``switch_rates`` (matrix of
               per-second rates from state j to state k, zero diagonal); the chain starts in its stationary
               distribution. ``shared`` true: one chain for the whole set (a load regime); false (default): an
               independent chain per adapter.
=============  ==============================================================================================
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from adaptergym.errors import WorkloadError

#: Seconds in a real day: the default period of a daily cycle.
DAY_S = 86_400.0


def _finite(value: Any, where: str, minimum: float = 0.0, strict: bool = False) -> float:
    """``value`` as a float >= ``minimum`` (> when ``strict``), else a one-line WorkloadError naming ``where``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise WorkloadError(f"{where}: {value!r} is not a number") from None
    if not math.isfinite(number) or number < minimum or (strict and number == minimum):
        raise WorkloadError(f"{where}: {number:g} must be a finite number {'>' if strict else '>='} {minimum:g}")
    return number


def _per_adapter(count: int, n: int, where: str) -> None:
    if count not in (1, n):
        raise WorkloadError(f"{where}: give one value or one per adapter ({n}), got {count}")


@dataclass(frozen=True, slots=True)
class Component:
    """One factor of the schedule; subclasses give ``kind`` and the multipliers."""

    kind: ClassVar[str] = ""
    adapters: tuple[str, ...] = field(default=(), metadata={"help": "ids the component applies to"})

    def validate(self, where: str, duration_s: float) -> None:
        """Raise a WorkloadError naming ``where.<field>`` if the component is unusable for ``duration_s``."""

    def breakpoints(self, duration_s: float) -> np.ndarray:
        """Times in (0, duration_s) where a piecewise-constant multiplier may change."""
        return np.empty(0)

    def step_values(self, starts: np.ndarray, duration_s: float) -> np.ndarray:
        """Multipliers (len(starts), len(adapters)) on cells starting at ``starts`` (which include every
        breakpoint, so each cell is constant)."""
        return np.ones((starts.size, len(self.adapters)))

    def restricted(self, keep: set[str], duration_s: float) -> Component | None:
        """This component for the adapters in ``keep`` only (None if none is left); rates unchanged."""
        idx = [j for j, a in enumerate(self.adapters) if a in keep]
        return None if not idx else self._subset(idx)

    def _subset(self, idx: list[int]) -> Component:
        return replace(self, adapters=tuple(self.adapters[j] for j in idx))

    def clipped(self, duration_s: float) -> Component | None:
        """This component on [0, duration_s) (None if it no longer changes anything there)."""
        return self

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            out[name] = _plain(value)
        return out


def _plain(value: Any) -> Any:
    """Tuples back to JSON lists, recursively."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Piecewise(Component):
    """Piecewise-constant multipliers: one row shared by the adapters, or one row per adapter."""

    kind: ClassVar[str] = "piecewise"
    times_s: tuple[float, ...] = (0.0,)
    multipliers: tuple[tuple[float, ...], ...] = ((1.0,),)

    def validate(self, where: str, duration_s: float) -> None:
        times = self.times_s
        if not times or times[0] != 0:
            raise WorkloadError(f"{where}.times_s: must start at 0")
        if any(b <= a for a, b in itertools.pairwise(times)):
            raise WorkloadError(f"{where}.times_s: must be strictly increasing")
        if times[-1] >= duration_s:
            raise WorkloadError(f"{where}.times_s: {times[-1]:g} s is not before the workload's end "
                                f"(duration_s {duration_s:g})")
        _per_adapter(len(self.multipliers), len(self.adapters), f"{where}.multipliers")
        for row in self.multipliers:
            if not isinstance(row, tuple) or len(row) != len(times):
                raise WorkloadError(f"{where}.multipliers: each list needs one value per time in times_s "
                                    f"({len(times)}), got {len(row)}")
            for m in row:
                _finite(m, f"{where}.multipliers")

    def breakpoints(self, duration_s: float) -> np.ndarray:
        return np.asarray(self.times_s[1:], float)

    def step_values(self, starts: np.ndarray, duration_s: float) -> np.ndarray:
        seg = np.searchsorted(np.asarray(self.times_s), starts, side="right") - 1
        table = np.asarray(self.multipliers, float)  # (rows, segments)
        values = table[:, seg].T
        return np.broadcast_to(values, (starts.size, len(self.adapters))).copy()

    def _subset(self, idx: list[int]) -> Component:
        rows = self.multipliers if len(self.multipliers) == 1 else tuple(self.multipliers[j] for j in idx)
        return replace(self, adapters=tuple(self.adapters[j] for j in idx), multipliers=rows)

    def clipped(self, duration_s: float) -> Component | None:
        keep = sum(t < duration_s for t in self.times_s)
        return replace(self, times_s=self.times_s[:keep], multipliers=tuple(r[:keep] for r in self.multipliers))

    def to_dict(self) -> dict[str, Any]:
        out = Component.to_dict(self)
        if len(self.multipliers) == 1:
            out["multipliers"] = list(self.multipliers[0])
        return out


@dataclass(frozen=True, slots=True)
class Daily(Component):
    """A daily cycle ``1 + amplitude * cos(2 pi (t - phase_s) / period_s)`` (peak at ``phase_s``)."""

    kind: ClassVar[str] = "daily"
    amplitude: tuple[float, ...] = (0.5,)
    phase_s: tuple[float, ...] = (0.0,)
    period_s: float = DAY_S

    def validate(self, where: str, duration_s: float) -> None:
        _finite(self.period_s, f"{where}.period_s", strict=True)
        _per_adapter(len(self.amplitude), len(self.adapters), f"{where}.amplitude")
        _per_adapter(len(self.phase_s), len(self.adapters), f"{where}.phase_s")
        for a in self.amplitude:
            if not (_finite(a, f"{where}.amplitude") <= 1.0):
                raise WorkloadError(f"{where}.amplitude: {a!r} must be in [0, 1] (above 1 the rate goes negative)")
        if not all(math.isfinite(p) for p in self.phase_s):
            raise WorkloadError(f"{where}.phase_s: must be finite numbers of seconds")

    def breakpoints(self, duration_s: float) -> np.ndarray:
        # The rate does not jump here: eighths of a period are cells short enough that inverting the cumulative
        # rate by Newton's method starts next to the root.
        return np.arange(1, math.ceil(8 * duration_s / self.period_s)) * (self.period_s / 8)

    def _subset(self, idx: list[int]) -> Component:
        def pick(values: tuple[float, ...]) -> tuple[float, ...]:
            return values if len(values) == 1 else tuple(values[j] for j in idx)

        return replace(self, adapters=tuple(self.adapters[j] for j in idx), amplitude=pick(self.amplitude),
                       phase_s=pick(self.phase_s))

    def per_adapter(self) -> tuple[np.ndarray, np.ndarray]:
        """(amplitude, phase_s), one value per named adapter."""
        n = len(self.adapters)
        return (np.broadcast_to(np.asarray(self.amplitude, float), n),
                np.broadcast_to(np.asarray(self.phase_s, float), n))

    def to_dict(self) -> dict[str, Any]:
        out = Component.to_dict(self)
        for name in ("amplitude", "phase_s"):
            if len(out[name]) == 1:
                out[name] = out[name][0]
        return out


@dataclass(frozen=True, slots=True)
class Flash(Component):
    """A flash crowd: rates times ``factor`` from ``start_s`` for ``duration_s`` seconds."""

    kind: ClassVar[str] = "flash"
    start_s: float = 0.0
    duration_s: float = 60.0
    factor: float = 10.0

    def validate(self, where: str, duration_s: float) -> None:
        start = _finite(self.start_s, f"{where}.start_s")
        length = _finite(self.duration_s, f"{where}.duration_s", strict=True)
        _finite(self.factor, f"{where}.factor")
        if start >= duration_s:
            raise WorkloadError(f"{where}.start_s: {start:g} s is not before the workload's end "
                                f"(duration_s {duration_s:g})")
        if start + length > duration_s:
            raise WorkloadError(f"{where}.duration_s: {start:g} + {length:g} s ends after the workload "
                                f"(duration_s {duration_s:g})")

    def breakpoints(self, duration_s: float) -> np.ndarray:
        return np.array([self.start_s, self.start_s + self.duration_s], float)

    def step_values(self, starts: np.ndarray, duration_s: float) -> np.ndarray:
        inside = (starts >= self.start_s) & (starts < self.start_s + self.duration_s)
        return np.repeat(np.where(inside, self.factor, 1.0)[:, None], len(self.adapters), axis=1)

    def clipped(self, duration_s: float) -> Component | None:
        if self.start_s >= duration_s:
            return None
        return replace(self, duration_s=min(self.duration_s, duration_s - self.start_s))


@dataclass(frozen=True, slots=True)
class Drift(Component):
    """Popularity drift: Zipf ranks over the set, a ``fraction`` of them re-shuffled every ``period_s``."""

    kind: ClassVar[str] = "drift"
    period_s: float = 1800.0
    alpha: float = 1.0
    fraction: float = 1.0
    seed: int = 0

    def validate(self, where: str, duration_s: float) -> None:
        period = _finite(self.period_s, f"{where}.period_s", strict=True)
        if period >= duration_s:
            raise WorkloadError(f"{where}.period_s: {period:g} s is not shorter than the workload "
                                f"(duration_s {duration_s:g}), so popularity would never change")
        _finite(self.alpha, f"{where}.alpha")
        if not 0 < _finite(self.fraction, f"{where}.fraction") <= 1:
            raise WorkloadError(f"{where}.fraction: {self.fraction!r} must be in (0, 1]")
        if len(self.adapters) < 2:
            raise WorkloadError(f"{where}.adapters: a drift needs at least 2 adapters to re-shuffle")

    def breakpoints(self, duration_s: float) -> np.ndarray:
        return np.arange(1, math.ceil(duration_s / self.period_s)) * self.period_s

    def step_values(self, starts: np.ndarray, duration_s: float) -> np.ndarray:
        ranks = self.ranks(math.ceil(duration_s / self.period_s))  # (epochs, adapters), 0-based
        weights = np.arange(1, len(self.adapters) + 1, dtype=float) ** -self.alpha
        weights /= weights.mean()
        epoch = np.minimum((starts // self.period_s).astype(np.int64), ranks.shape[0] - 1)
        return weights[ranks[epoch]]

    def ranks(self, epochs: int) -> np.ndarray:
        """The Zipf rank (0 = most popular) of every adapter in each drift epoch, shape (epochs, adapters)."""
        n = len(self.adapters)
        rng = np.random.default_rng([self.seed, n])
        out = np.empty((epochs, n), np.int64)
        ranks = rng.permutation(n)
        moved = max(2, round(self.fraction * n))
        for k in range(epochs):
            if k:
                who = rng.choice(n, size=moved, replace=False)
                ranks[who] = ranks[who][rng.permutation(moved)]
            out[k] = ranks
        return out

    def restricted(self, keep: set[str], duration_s: float) -> Component | None:
        idx = [j for j, a in enumerate(self.adapters) if a in keep]
        if len(idx) == len(self.adapters):
            return self
        if not idx:
            return None
        return self.as_piecewise(duration_s)._subset(idx)

    def clipped(self, duration_s: float) -> Component | None:
        return self if self.period_s < duration_s else self.as_piecewise(duration_s)

    def as_piecewise(self, duration_s: float) -> Piecewise:
        """The same multipliers as an explicit per-adapter piecewise component."""
        times = np.concatenate([[0.0], self.breakpoints(duration_s)])
        values = self.step_values(times, duration_s)
        return Piecewise(self.adapters, tuple(float(t) for t in times),
                         tuple(tuple(float(v) for v in values[:, j]) for j in range(len(self.adapters))))


@dataclass(frozen=True, slots=True)
class MMPP(Component):
    """Markov-modulated multipliers: a continuous-time chain over states, each with a rate multiplier."""

    kind: ClassVar[str] = "mmpp"
    multipliers: tuple[float, ...] = (1.0,)
    switch_rates: tuple[tuple[float, ...], ...] = ((0.0,),)
    shared: bool = False
    seed: int = 0

    def validate(self, where: str, duration_s: float) -> None:
        k = len(self.multipliers)
        if k < 1:
            raise WorkloadError(f"{where}.multipliers: needs at least one state")
        for m in self.multipliers:
            _finite(m, f"{where}.multipliers")
        if len(self.switch_rates) != k or any(not isinstance(row, tuple) or len(row) != k for row in self.switch_rates):
            raise WorkloadError(f"{where}.switch_rates: must be a {k}x{k} matrix (one row and column per state)")
        for j, row in enumerate(self.switch_rates):
            for r in row:
                _finite(r, f"{where}.switch_rates")
            if row[j] != 0:
                raise WorkloadError(f"{where}.switch_rates: the diagonal must be 0 (row {j} has {row[j]!r})")

    def _paths(self, duration_s: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """(switch times, state per segment) of each chain: one chain if shared, else one per adapter."""
        seeds = [[self.seed]] if self.shared else [[self.seed, zlib.crc32(a.encode())] for a in self.adapters]
        return [self._path(np.random.default_rng(s), duration_s) for s in seeds]

    def _path(self, rng: np.random.Generator, duration_s: float) -> tuple[np.ndarray, np.ndarray]:
        q = np.asarray(self.switch_rates, float)
        exits = q.sum(axis=1)
        state = int(rng.choice(len(exits), p=_stationary(q)))
        times, states, t = [], [state], 0.0
        while exits[state] > 0:
            t += rng.exponential(1.0 / exits[state])
            if t >= duration_s:
                break
            state = int(rng.choice(len(exits), p=q[state] / exits[state]))
            times.append(t)
            states.append(state)
        return np.asarray(times, float), np.asarray(states, np.int64)

    def breakpoints(self, duration_s: float) -> np.ndarray:
        paths = self._paths(duration_s)
        return np.concatenate([times for times, _ in paths]) if paths else np.empty(0)

    def step_values(self, starts: np.ndarray, duration_s: float) -> np.ndarray:
        mult = np.asarray(self.multipliers, float)
        cols = [mult[states[np.searchsorted(times, starts, side="right")]] for times, states in self._paths(duration_s)]
        values = np.stack(cols, axis=1)
        return np.broadcast_to(values, (starts.size, len(self.adapters))).copy()


def _stationary(q: np.ndarray) -> np.ndarray:
    """A stationary distribution of the chain with off-diagonal rates ``q`` (least squares of pi Q = 0)."""
    k = q.shape[0]
    generator = q - np.diag(q.sum(axis=1))
    system = np.vstack([generator.T, np.ones(k)])
    pi = np.linalg.lstsq(system, np.concatenate([np.zeros(k), [1.0]]), rcond=None)[0]
    pi = np.clip(pi, 0.0, None)
    return pi / pi.sum() if pi.sum() > 0 else np.full(k, 1.0 / k)


#: Every component kind by its JSON name.
KINDS: dict[str, type[Component]] = {c.kind: c for c in (Piecewise, Daily, Flash, Drift, MMPP)}

Schedule = tuple[Component, ...]


def validate_schedule(schedule: Schedule, adapter_ids: Sequence[str], duration_s: float) -> None:
    """Check every component against the workload: known adapters, sane fields, one daily cycle per adapter."""
    known = set(adapter_ids)
    daily_of: dict[str, int] = {}
    for k, component in enumerate(schedule):
        where = f"schedule[{k}]"
        if not component.adapters:
            raise WorkloadError(f"{where}.adapters: names no adapter")
        unknown = [a for a in component.adapters if a not in known]
        if unknown:
            raise WorkloadError(f"{where}.adapters: unknown adapter id {unknown[0]!r}")
        if len(set(component.adapters)) != len(component.adapters):
            raise WorkloadError(f"{where}.adapters: an adapter is named twice")
        component.validate(where, duration_s)
        if isinstance(component, Daily):
            for a in component.adapters:
                if a in daily_of:
                    raise WorkloadError(f"{where}.adapters: {a!r} already has a daily cycle "
                                        f"(schedule[{daily_of[a]}]); one per adapter")
                daily_of[a] = k


def parse_schedule(raw: Any, adapter_ids: Sequence[str], source: str) -> Schedule:
    """Components from the JSON list ``raw`` (omitted ``adapters`` means all of ``adapter_ids``)."""
    if not isinstance(raw, list):
        raise WorkloadError(f"{source}: 'schedule' must be a list of components")
    return tuple(_component(item, k, adapter_ids, source) for k, item in enumerate(raw))


def _component(raw: Any, k: int, adapter_ids: Sequence[str], source: str) -> Component:
    where = f"{source}: schedule[{k}]"
    if not isinstance(raw, dict):
        raise WorkloadError(f"{where}: expected an object with a 'kind'")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise WorkloadError(f"{where}.kind: {kind!r} is not one of {', '.join(KINDS)}")
    cls = KINDS[kind]
    defaults = {name: f.default for name, f in cls.__dataclass_fields__.items()}
    unknown = set(raw) - set(defaults) - {"kind"}
    if unknown:
        raise WorkloadError(f"{where}: unknown field(s) {sorted(unknown)} for kind {kind!r}; "
                            f"allowed: {sorted(defaults)}")
    values = {name: _field(raw[name], defaults[name], f"{where}.{name}") for name in raw if name != "kind"}
    values["adapters"] = tuple(str(a) for a in values.get("adapters", tuple(adapter_ids)))
    if cls is Piecewise and "multipliers" in values and not isinstance(values["multipliers"][0], tuple):
        values["multipliers"] = (values["multipliers"],)
    return cls(**values)


def _field(value: Any, default: Any, where: str) -> Any:
    """``value`` in the shape of ``default``: a list as a tuple (a lone number as a 1-tuple where a per-adapter
    list is allowed), a number as float/int, a bool as bool; anything else is a WorkloadError."""
    if isinstance(default, tuple):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not _nested(default):
            return (value,)
        if not isinstance(value, list) or not value:
            raise WorkloadError(f"{where}: must be a non-empty list")
        if default == ():  # adapter ids
            return tuple(value)
        rows = [v if isinstance(v, list) else [v] for v in value]
        if any(isinstance(x, bool) or not isinstance(x, (int, float)) for row in rows for x in row):
            raise WorkloadError(f"{where}: must hold numbers only")
        return tuple(tuple(float(x) for x in v) if isinstance(v, list) else float(v) for v in value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise WorkloadError(f"{where}: must be true or false")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WorkloadError(f"{where}: {value!r} is not a number")
    if isinstance(default, int):
        if not float(value).is_integer():
            raise WorkloadError(f"{where}: {value!r} must be an integer")
        return int(value)
    return float(value)


def _nested(value: Any) -> bool:
    return isinstance(value, tuple) and bool(value) and isinstance(value[0], tuple)


def schedule_to_list(schedule: Schedule, adapter_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The JSON form of ``schedule`` (``adapters`` left out where a component names every adapter)."""
    out = []
    for component in schedule:
        item = component.to_dict()
        if tuple(component.adapters) == tuple(adapter_ids):
            del item["adapters"]
        out.append(item)
    return out


def restrict_schedule(schedule: Schedule, keep: Sequence[str], duration_s: float) -> Schedule:
    """The schedule of a workload cut to the adapters ``keep`` (every kept adapter's rates unchanged)."""
    kept = set(keep)
    return tuple(c for c in (s.restricted(kept, duration_s) for s in schedule) if c is not None)


def clip_schedule(schedule: Schedule, duration_s: float) -> Schedule:
    """The schedule on [0, duration_s) (rates there unchanged)."""
    return tuple(c for c in (s.clipped(duration_s) for s in schedule) if c is not None)
