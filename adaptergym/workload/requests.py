"""Turn a workload spec into concrete requests: arrays sorted by arrival time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adaptergym.errors import WorkloadError
from adaptergym.workload.arrivals import arrival_times, scheduled_arrivals
from adaptergym.workload.lengths import sample_lengths
from adaptergym.workload.rates import epoch_edges, rate_table
from adaptergym.workload.spec import AdapterSpec, WorkloadSpec

TRACE_COLUMNS = ("arrival_s", "adapter_id", "input_tokens", "output_tokens")


@dataclass(frozen=True, slots=True)
class RequestBatch:
    """All requests of one run as parallel arrays, sorted by ``arrival_s``.

    ``adapter`` indexes ``adapter_ids``/``adapter_ranks``; ``duration_s`` is how long requests arrive.
    ``sent_s``, when given, is when clients sent them, ``arrival_s`` then being when they reached the engine (see
    ``adaptergym.twin.frontend``): latencies count from ``sent_s``.
    """

    arrival_s: np.ndarray
    adapter: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    adapter_ids: tuple[str, ...]
    adapter_ranks: np.ndarray
    duration_s: float
    drain: bool = False
    sent_s: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.arrival_s.size)

    @property
    def offered_tokens(self) -> int:
        return int(self.input_tokens.sum() + self.output_tokens.sum())

    def epoch_counts(self, epoch_s: float) -> np.ndarray:
        """Arrivals of every adapter in each epoch of ``epoch_s`` seconds (the last may be shorter), shape
        (epochs, adapters), int64: what a forecaster observes."""
        edges = epoch_edges(self.duration_s, epoch_s)
        epoch = np.clip(np.searchsorted(edges, self.arrival_s, side="right") - 1, 0, edges.size - 2)
        n = len(self.adapter_ids)
        flat = np.bincount(epoch * n + self.adapter, minlength=(edges.size - 1) * n)
        return flat.reshape(edges.size - 1, n)

    def subset(self, mask: np.ndarray) -> RequestBatch:
        """The requests selected by a boolean mask (used by the fleet router)."""
        return RequestBatch(
            self.arrival_s[mask], self.adapter[mask], self.input_tokens[mask], self.output_tokens[mask],
            self.adapter_ids, self.adapter_ranks, self.duration_s, self.drain,
            None if self.sent_s is None else self.sent_s[mask],
        )


def sample_requests(spec: WorkloadSpec, rng: np.random.Generator) -> RequestBatch:
    """Draw the requests of ``spec`` with ``rng`` (same generator state -> same requests)."""
    if spec.lengths.kind == "trace":
        return load_trace(spec.lengths.path, spec)
    if spec.schedule:
        times, adapter = scheduled_arrivals(spec.arrival, rate_table(spec), rng)
        return _sorted_batch(spec, times, adapter, rng)
    per_adapter = [
        arrival_times(spec.arrival, a.rate, spec.duration_s, rng, spec.num_requests) for a in spec.adapters
    ]
    if spec.arrival.kind == "burst":
        # A burst gives each of ``num_requests`` an adapter drawn at random (in proportion to the rates), as
        # vLLM's benchmark_serving picks a LoRA module per request: a batch then holds fewer distinct adapters
        # than round-robin would give it.
        n = spec.num_requests or 0
        weights = np.array([a.rate for a in spec.adapters], float)
        adapter = rng.choice(len(spec.adapters), size=n, p=weights / weights.sum())
        return _batch(spec, np.zeros(n), adapter, rng)
    times = np.concatenate(per_adapter) if per_adapter else np.empty(0)
    adapter = np.repeat(np.arange(len(per_adapter), dtype=np.int64), [t.size for t in per_adapter])
    return _sorted_batch(spec, times, adapter, rng)


def _sorted_batch(spec: WorkloadSpec, times: np.ndarray, adapter: np.ndarray, rng: np.random.Generator
                  ) -> RequestBatch:
    """Arrivals sorted by time (ties in adapter order), cut to ``num_requests``, with lengths drawn."""
    order = _arrival_order(times)
    times, adapter = times[order], adapter[order]
    if spec.num_requests is not None:
        times, adapter = times[: spec.num_requests], adapter[: spec.num_requests]
    return _batch(spec, times, adapter, rng)


def _batch(spec: WorkloadSpec, times: np.ndarray, adapter: np.ndarray, rng: np.random.Generator) -> RequestBatch:
    inp, out = sample_lengths(spec.lengths, times.size, rng)
    return RequestBatch(
        times, adapter.astype(np.int64), inp, out, tuple(a.id for a in spec.adapters),
        np.array([a.rank for a in spec.adapters], np.int64), spec.duration_s, spec.arrival.kind == "burst",
    )


def _arrival_order(times: np.ndarray) -> np.ndarray:
    """The stable sort order of ``times`` (ties keep adapter order). Without ties every sort gives it, and numpy's
    default sort is about 3x faster on a million times than its stable one, so that one runs only on ties."""
    order = np.argsort(times)
    ordered = times[order]
    if np.any(ordered[1:] == ordered[:-1]):
        return np.argsort(times, kind="stable")
    return order


def load_trace(path: str, spec: WorkloadSpec | None = None) -> RequestBatch:
    """Replay a CSV trace (``arrival_s, adapter_id, input_tokens, output_tokens``).

    Adapter ranks come from ``spec.adapters`` when given, else default to 16.
    """
    import pandas as pd  # only traces need it: keeps `adaptergym simulate` of a spec from importing pandas

    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise WorkloadError(f"trace {path!r}: cannot read CSV ({exc})") from None
    missing = [c for c in TRACE_COLUMNS if c not in frame.columns]
    if missing:
        raise WorkloadError(f"trace {path!r}: missing column(s) {missing}; need {', '.join(TRACE_COLUMNS)}")
    for col in ("arrival_s", "input_tokens", "output_tokens"):
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() | (values < (0 if col == "arrival_s" else 1))
        if bad.any():
            line = int(np.flatnonzero(bad.to_numpy())[0]) + 2
            raise WorkloadError(f"trace {path!r} line {line}: column {col} must be a number >= "
                                f"{0 if col == 'arrival_s' else 1}, got {frame[col].iloc[line - 2]!r}")
        frame[col] = values
    frame = frame.sort_values("arrival_s", kind="stable")
    known = {a.id: a for a in (spec.adapters if spec else ())}
    ids = list(dict.fromkeys(frame["adapter_id"].astype(str)))
    adapters = tuple(known.get(i, AdapterSpec(i, 16, 0.0)) for i in ids)
    index = {a.id: k for k, a in enumerate(adapters)}
    last = float(frame["arrival_s"].max()) if len(frame) else 0.0
    duration = spec.duration_s if spec and spec.duration_s > last else last + 1e-9
    return RequestBatch(
        frame["arrival_s"].to_numpy(float), frame["adapter_id"].astype(str).map(index).to_numpy(np.int64),
        frame["input_tokens"].to_numpy(np.int64), frame["output_tokens"].to_numpy(np.int64),
        tuple(a.id for a in adapters), np.array([a.rank for a in adapters], np.int64), duration,
    )
