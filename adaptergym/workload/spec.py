"""The workload JSON format (see DESIGN.md) as validated, frozen dataclasses."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from adaptergym.errors import WorkloadError
from adaptergym.workload.schedule import (
    Schedule,
    clip_schedule,
    parse_schedule,
    restrict_schedule,
    schedule_to_list,
    validate_schedule,
)

LENGTH_KINDS = ("sharegpt", "fixed", "lognormal", "trace")
ARRIVAL_KINDS = ("poisson", "gamma", "burst")


@dataclass(frozen=True, slots=True)
class AdapterSpec:
    """One LoRA adapter and the request stream it receives."""

    id: str = field(metadata={"help": "adapter name; the `model` field of its requests"})
    rank: int = field(default=16, metadata={"help": "LoRA rank"})
    rate: float = field(default=0.1, metadata={"help": "arrival rate, requests per second: the mean at constant "
                                               "rates, the base that a schedule's multipliers scale"})

    def __post_init__(self) -> None:
        if not self.id:
            raise WorkloadError("adapters[].id: must be a non-empty string")
        if not isinstance(self.rank, int) or self.rank <= 0:
            raise WorkloadError(f"adapters[{self.id!r}].rank: {self.rank!r} must be a positive integer")
        if not math.isfinite(self.rate) or self.rate < 0:
            raise WorkloadError(f"adapters[{self.id!r}].rate: {self.rate!r} must be a finite number >= 0 req/s")


@dataclass(frozen=True, slots=True)
class LengthSpec:
    """How prompt and output lengths (tokens) are drawn."""

    kind: str = field(default="sharegpt", metadata={"help": "sharegpt | fixed | lognormal | trace"})
    input_tokens: int = field(default=250, metadata={"help": "fixed: prompt length"})
    output_tokens: int = field(default=231, metadata={"help": "fixed: output length"})
    input_median: float = field(default=120.0, metadata={"help": "lognormal: median prompt tokens"})
    input_sigma: float = field(default=1.0, metadata={"help": "lognormal: sigma of log prompt tokens"})
    output_median: float = field(default=120.0, metadata={"help": "lognormal: median output tokens"})
    output_sigma: float = field(default=1.0, metadata={"help": "lognormal: sigma of log output tokens"})
    max_input_tokens: int = field(default=1024, metadata={"help": "lognormal: prompt cap"})
    max_total_tokens: int = field(default=2048, metadata={"help": "lognormal: prompt+output cap"})
    path: str = field(default="", metadata={"help": "trace: CSV (arrival_s, adapter_id, input_tokens, output_tokens)"})

    def __post_init__(self) -> None:
        if self.kind not in LENGTH_KINDS:
            raise WorkloadError(f"lengths.kind: {self.kind!r} is not one of {', '.join(LENGTH_KINDS)}")
        for name in ("input_tokens", "output_tokens", "max_input_tokens", "max_total_tokens"):
            if getattr(self, name) < 1:
                raise WorkloadError(f"lengths.{name}: must be >= 1 token")
        for name in ("input_median", "output_median"):
            if getattr(self, name) <= 0:
                raise WorkloadError(f"lengths.{name}: must be > 0 tokens")
        if self.kind == "trace" and not self.path:
            raise WorkloadError("lengths.path: a 'trace' workload needs the path of its CSV")


@dataclass(frozen=True, slots=True)
class ArrivalSpec:
    """Per-adapter arrival process: Poisson, Gamma with a coefficient of variation, or a burst at t=0."""

    kind: str = field(default="poisson", metadata={"help": "poisson | gamma | burst"})
    cv: float = field(default=1.0, metadata={"help": "gamma: coefficient of variation of inter-arrival times"})

    def __post_init__(self) -> None:
        if self.kind not in ARRIVAL_KINDS:
            raise WorkloadError(f"arrival.kind: {self.kind!r} is not one of {', '.join(ARRIVAL_KINDS)}")
        if not math.isfinite(self.cv) or self.cv <= 0:
            raise WorkloadError(f"arrival.cv: {self.cv!r} must be a finite number > 0")


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """A workload: adapters with rates and ranks, length and arrival distributions, and a duration.

    ``num_requests`` (optional) caps the number of requests; with ``arrival.kind == "burst"`` all of them
    arrive at t=0 and the run lasts until they finish (vLLM's ``--request-rate inf`` benchmark).
    ``schedule`` (optional) makes rates vary in time: multipliers on each adapter's base ``rate``
    (:mod:`adaptergym.workload.schedule`); without one, rates are constant and requests are drawn exactly as
    before schedules existed.
    """

    adapters: tuple[AdapterSpec, ...]
    lengths: LengthSpec = field(default_factory=LengthSpec)
    arrival: ArrivalSpec = field(default_factory=ArrivalSpec)
    duration_s: float = field(default=3600.0, metadata={"help": "how long requests arrive, seconds"})
    num_requests: int | None = field(default=None, metadata={"help": "optional cap on requests"})
    name: str = field(default="", metadata={"help": "label used in reports"})
    schedule: Schedule = field(default=(), metadata={"help": "time-varying rate multipliers (see schedule.py)"})

    def __post_init__(self) -> None:
        if not self.adapters and self.lengths.kind != "trace":
            raise WorkloadError("adapters: a workload needs at least one adapter")
        ids = [a.id for a in self.adapters]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise WorkloadError(f"adapters: duplicate id(s) {dup}; every adapter id must be unique")
        if not math.isfinite(self.duration_s) or self.duration_s <= 0:
            raise WorkloadError(f"duration_s: {self.duration_s!r} must be a finite number of seconds > 0")
        if self.num_requests is not None and self.num_requests < 1:
            raise WorkloadError("num_requests: must be >= 1 when given")
        if self.arrival.kind == "burst" and self.num_requests is None:
            raise WorkloadError("num_requests: a 'burst' arrival needs the number of requests it sends")
        if self.schedule:
            if self.lengths.kind == "trace":
                raise WorkloadError("schedule: a trace replays its own arrival times; remove the schedule")
            if self.arrival.kind == "burst":
                raise WorkloadError("schedule: a 'burst' sends every request at t=0; use arrival.kind poisson or "
                                    "gamma with a schedule")
            validate_schedule(self.schedule, [a.id for a in self.adapters], self.duration_s)

    @property
    def total_rate(self) -> float:
        """Aggregate arrival rate, requests per second."""
        return float(sum(a.rate for a in self.adapters))

    @property
    def max_rank(self) -> int:
        return max((a.rank for a in self.adapters), default=0)

    def with_adapters(self, adapters: tuple[AdapterSpec, ...]) -> WorkloadSpec:
        """The same workload restricted to (or replaced by) other adapters; the schedule keeps the rates of
        every adapter id it still has."""
        schedule = restrict_schedule(self.schedule, [a.id for a in adapters], self.duration_s)
        return replace(self, adapters=adapters, schedule=schedule)

    def with_schedule(self, schedule: Schedule) -> WorkloadSpec:
        """The same workload under another rate schedule (``()``: constant rates)."""
        return replace(self, schedule=tuple(schedule))

    def with_duration(self, duration_s: float) -> WorkloadSpec:
        """The same workload over its first ``duration_s`` seconds (or extended: the last rates hold on)."""
        return replace(self, duration_s=duration_s, schedule=clip_schedule(self.schedule, duration_s))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "adapters": [{"id": a.id, "rank": a.rank, "rate": a.rate} for a in self.adapters],
            "lengths": _nondefault(self.lengths),
            "arrival": _nondefault(self.arrival),
            "duration_s": self.duration_s,
        }
        if self.num_requests is not None:
            out["num_requests"] = self.num_requests
        if self.name:
            out["name"] = self.name
        if self.schedule:
            out["schedule"] = schedule_to_list(self.schedule, [a.id for a in self.adapters])
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str = "workload") -> WorkloadSpec:
        """Build from parsed JSON, naming the offending field on any error."""
        if not isinstance(data, dict):
            raise WorkloadError(f"{source}: expected a JSON object with 'adapters', got {type(data).__name__}")
        known = {"adapters", "lengths", "arrival", "duration_s", "num_requests", "name", "schedule"}
        unknown = set(data) - known
        if unknown:
            raise WorkloadError(f"{source}: unknown field(s) {sorted(unknown)}; allowed: {sorted(known)}")
        raw_adapters = data.get("adapters", [])
        if not isinstance(raw_adapters, list):
            raise WorkloadError(f"{source}: 'adapters' must be a list of {{id, rank, rate}} objects")
        adapters = tuple(_adapter(a, i, source) for i, a in enumerate(raw_adapters))
        lengths = _sub(LengthSpec, data.get("lengths", {}), f"{source}: lengths")
        arrival = _sub(ArrivalSpec, data.get("arrival", {}), f"{source}: arrival")
        try:
            duration = float(data.get("duration_s", 3600.0))
            num = data.get("num_requests")
            num = None if num is None else int(num)
        except (TypeError, ValueError) as exc:
            raise WorkloadError(f"{source}: duration_s/num_requests must be numbers ({exc})") from None
        schedule = parse_schedule(data.get("schedule", []), [a.id for a in adapters], f"{source}")
        try:
            return cls(adapters, lengths, arrival, duration, num, str(data.get("name", "")), schedule)
        except WorkloadError as exc:
            raise WorkloadError(f"{source}: {exc}") from None

    @classmethod
    def from_json(cls, path: str | Path) -> WorkloadSpec:
        path = Path(path)
        if not path.is_file():
            raise WorkloadError(f"workload file {str(path)!r} does not exist")
        if path.suffix.lower() == ".csv":
            return cls(adapters=(), lengths=LengthSpec(kind="trace", path=str(path)), name=path.stem)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise WorkloadError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
        spec = cls.from_dict(data, source=str(path))
        if spec.lengths.kind == "trace" and not Path(spec.lengths.path).is_absolute():
            spec = replace(spec, lengths=LengthSpec(kind="trace", path=str(path.parent / spec.lengths.path)))
        return spec.with_name(spec.name or path.stem)

    def with_name(self, name: str) -> WorkloadSpec:
        return replace(self, name=name)


def _adapter(raw: Any, index: int, source: str) -> AdapterSpec:
    if not isinstance(raw, dict) or "id" not in raw:
        raise WorkloadError(f"{source}: adapters[{index}] must be an object with at least an 'id'")
    unknown = set(raw) - {"id", "rank", "rate"}
    if unknown:
        raise WorkloadError(f"{source}: adapters[{index}] has unknown field(s) {sorted(unknown)}")
    try:
        rank = raw.get("rank", 16)
        if isinstance(rank, float) and rank.is_integer():
            rank = int(rank)
        if not isinstance(rank, int) or isinstance(rank, bool):
            raise WorkloadError(f"{source}: adapters[{index}].rank: {rank!r} must be an integer")
        return AdapterSpec(str(raw["id"]), rank, float(raw.get("rate", 0.1)))
    except (TypeError, ValueError):
        raise WorkloadError(f"{source}: adapters[{index}].rate: {raw.get('rate')!r} is not a number") from None


def _sub(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise WorkloadError(f"{where}: expected an object, got {type(raw).__name__}")
    allowed = set(cls.__dataclass_fields__)
    unknown = set(raw) - allowed
    if unknown:
        raise WorkloadError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    try:
        return cls(**raw)
    except TypeError as exc:
        raise WorkloadError(f"{where}: {exc}") from None


def _nondefault(obj: Any) -> dict[str, Any]:
    """Only the fields that differ from defaults (plus kind), so written files stay short."""
    defaults = type(obj)()
    out = {"kind": obj.kind}
    for name in obj.__dataclass_fields__:
        value = getattr(obj, name)
        if value != getattr(defaults, name):
            out[name] = value
    return out
