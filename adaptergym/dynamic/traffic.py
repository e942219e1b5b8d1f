"""What arrives in an episode, cut into decision epochs: the request stream, and per-epoch rates.

``observed`` rates are what a policy can know after an epoch (arrivals / epoch length, per adapter); ``true``
rates are the workload's own mean rate over an epoch (its schedule, or its constant rates; for a trace, what
arrived), which only the oracle and the static baselines read.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from adaptergym.errors import ConfigError
from adaptergym.simulation import as_workload, draw_requests
from adaptergym.workload import LengthSpec, RequestBatch, WorkloadSpec


class Traffic:
    """The requests of one seeded episode and its epochs.

    Args:
        workload: a workload spec, a path to a workload JSON or trace CSV, or drawn requests.
        seed: seeds the request draw (same seed, same requests).
        epoch_s: length of a decision epoch, s (the last epoch is shorter when it does not divide the duration).

    Raises:
        ConfigError: ``epoch_s`` not positive, or longer than the workload.
    """

    def __init__(self, workload: WorkloadSpec | RequestBatch | str | Path, seed: int, epoch_s: float) -> None:
        self.workload = as_workload(workload)
        self.requests = draw_requests(self.workload, seed)
        self.duration_s = float(self.requests.duration_s)
        if not (math.isfinite(epoch_s) and epoch_s > 0):
            raise ConfigError(f"epoch_s: {epoch_s!r} must be a number of seconds > 0")
        if self.requests.drain or epoch_s > self.duration_s + 1e-9:
            raise ConfigError(f"epoch_s: {epoch_s:g} s is longer than the workload ({self.duration_s:g} s); use "
                              f"an epoch of at most {self.duration_s:g} s")
        starts = np.arange(0.0, self.duration_s - 1e-9, epoch_s)
        self.edges = np.append(starts, self.duration_s)
        n = len(self.requests.adapter_ids)
        epoch_of = np.searchsorted(self.edges, self.requests.arrival_s, side="right") - 1
        self.arrivals = np.zeros((self.epochs, n), np.int64)  # (epochs, adapters) requests that arrived
        np.add.at(self.arrivals, (epoch_of, self.requests.adapter), 1)
        self.observed = self.arrivals / np.diff(self.edges)[:, None]  # (epochs, adapters) req/s
        self.lengths = planning_lengths(self.workload, self.requests)

    @property
    def epochs(self) -> int:
        return self.edges.size - 1

    def bounds(self, epoch: int) -> tuple[float, float]:
        """[start, end) of ``epoch``, s."""
        return float(self.edges[epoch]), float(self.edges[epoch + 1])

    def true_rates(self, epoch: int) -> np.ndarray:
        """Mean arrival rate of each adapter over ``epoch``, req/s: the spec's rates, or what arrived (trace)."""
        if isinstance(self.workload, WorkloadSpec) and self.workload.lengths.kind != "trace":
            return np.array([a.rate for a in self.workload.adapters])
        return self.observed[epoch].copy()


def planning_lengths(workload: WorkloadSpec | RequestBatch, requests: RequestBatch) -> LengthSpec:
    """The length distribution planners assume: the workload's, or for drawn requests and traces, fixed lengths
    at their means."""
    if isinstance(workload, WorkloadSpec) and workload.lengths.kind != "trace":
        return workload.lengths
    if not len(requests):
        return LengthSpec()
    return LengthSpec(kind="fixed", input_tokens=max(1, round(float(requests.input_tokens.mean()))),
                      output_tokens=max(1, round(float(requests.output_tokens.mean()))))
