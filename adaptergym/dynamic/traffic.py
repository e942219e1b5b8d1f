"""What arrives in an episode, cut into decision epochs: the request stream, and per-epoch rates.

``observed`` rates are what a policy can know after an epoch (arrivals / epoch length, per adapter); ``true``
rates are the workload's own mean rate over an epoch (its schedule, or its constant rates; for a trace, what
arrived), which only the oracle and the static baselines read.

Fast scorers need only the per-epoch counts: with ``counts_only`` a workload of Poisson arrivals skips drawing
its requests and draws each epoch's count of each adapter from the Poisson law of its exact expected arrivals
(the rate table's integral over the epoch), which is the law of the drawn requests' counts (counts of a Poisson
process in disjoint intervals are independent Poisson); milliseconds instead of a second for an hours-long
episode. Other workloads (gamma arrivals, traces, drawn requests) still draw their requests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from adaptergym.errors import WorkloadError
from adaptergym.simulation import as_workload, draw_requests
from adaptergym.workload import LengthSpec, RequestBatch, WorkloadSpec, epoch_edges, rate_table


class Traffic:
    """The requests of one seeded episode and its epochs.

    Args:
        workload: a workload spec (with or without a rate schedule), a path to a workload JSON or trace CSV, or
            drawn requests.
        seed: seeds the request draw (same seed, same requests).
        epoch_s: length of a decision epoch, s (the last epoch is shorter when it does not divide the duration).
        counts_only: draw only the per-epoch counts where they have a closed form (module doc); ``requests`` is
            then None.

    Raises:
        WorkloadError: ``epoch_s`` not positive, or longer than the workload.
    """

    def __init__(self, workload: WorkloadSpec | RequestBatch | str | Path, seed: int, epoch_s: float,
                 counts_only: bool = False) -> None:
        self.workload = spec = as_workload(workload)
        scheduled = isinstance(spec, WorkloadSpec) and spec.lengths.kind != "trace"
        self.requests: RequestBatch | None = None
        if counts_only and scheduled and spec.arrival.kind == "poisson":
            self.duration_s = float(spec.duration_s)
            self.adapter_ids = tuple(a.id for a in spec.adapters)
            self.adapter_ranks = np.array([a.rank for a in spec.adapters], np.int64)
            self.edges = epoch_edges(self.duration_s, epoch_s)
            self._true = rate_table(spec).epoch_rates(epoch_s)
            expected = self._true * np.diff(self.edges)[:, None]
            self.arrivals = np.random.default_rng(seed).poisson(expected)
        else:
            self.requests = draw_requests(spec, seed)
            self.duration_s = float(self.requests.duration_s)
            if self.requests.drain:
                raise WorkloadError("arrival.kind: a 'burst' sends every request at t=0, which leaves no epochs to "
                                    "decide in; use poisson or gamma arrivals")
            self.adapter_ids, self.adapter_ranks = self.requests.adapter_ids, self.requests.adapter_ranks
            self.edges = epoch_edges(self.duration_s, epoch_s)
            self.arrivals = self.requests.epoch_counts(epoch_s)  # (epochs, adapters) requests that arrived
            self._true = rate_table(spec).epoch_rates(epoch_s) if scheduled else None
        self.observed = self.arrivals / np.diff(self.edges)[:, None]  # (epochs, adapters) req/s
        if self._true is None:
            self._true = self.observed
        self.lengths = planning_lengths(self.workload, self.requests)

    @property
    def epochs(self) -> int:
        return self.edges.size - 1

    def bounds(self, epoch: int) -> tuple[float, float]:
        """[start, end) of ``epoch``, s."""
        return float(self.edges[epoch]), float(self.edges[epoch + 1])

    def true_rates(self, epoch: int) -> np.ndarray:
        """Mean arrival rate of each adapter over ``epoch``, req/s: the schedule's integral (or the spec's
        constant rates); for a trace or drawn requests, what arrived."""
        return self._true[epoch].copy()


def planning_lengths(workload: WorkloadSpec | RequestBatch, requests: RequestBatch | None) -> LengthSpec:
    """The length distribution planners assume: the workload's, or for drawn requests and traces, fixed lengths
    at their means."""
    if isinstance(workload, WorkloadSpec) and workload.lengths.kind != "trace":
        return workload.lengths
    if requests is None or not len(requests):
        return LengthSpec()
    return LengthSpec(kind="fixed", input_tokens=max(1, round(float(requests.input_tokens.mean()))),
                      output_tokens=max(1, round(float(requests.output_tokens.mean()))))
