"""Forecast error on workloads: walk forward epoch by epoch, compare each forecast with the epoch's true rate.

The truth of an epoch is the mean rate the schedule gives it (``rate_table(w).epoch_rates``), not its sampled
count: no forecaster can predict Poisson noise, and an oracle policy plans on the true rate. For a trace (no
schedule) the truth is the observed count over the epoch's length. Only whole epochs are scored, from
``from_epoch`` on (epoch 0 has no history). Errors pool every (workload, epoch, adapter) pair: MAPE and the
standard SMAPE ``100*mean(2|y-ŷ|/(|y|+|ŷ|))`` (zeros as in :mod:`adaptergym.accuracy`: MAPE skips true zeros,
SMAPE skips pairs that are both zero), and WAPE ``100*sum|y-ŷ|/sum y``, which weighs adapters by their load.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from adaptergym.accuracy import mape, smape, wape
from adaptergym.forecast.base import Forecaster
from adaptergym.forecast.registry import make_forecaster
from adaptergym.workload import RequestBatch, WorkloadSpec, epoch_edges, rate_table, sample_requests


def walk_forward(forecaster: Forecaster, counts: np.ndarray) -> np.ndarray:
    """Forecast rates, shape of ``counts``: row k is the forecast for epoch k made after epochs 0..k-1 (row 0 is
    the prior, NaN without one)."""
    out = np.full(counts.shape, np.nan)
    for k, row in enumerate(counts):
        if k or forecaster.prior is not None:
            out[k] = forecaster.predict()[0]
        forecaster.observe(row)
    return out


def true_epoch_rates(workload: WorkloadSpec, requests: RequestBatch, epoch_s: float) -> np.ndarray:
    """Each epoch's true mean rate per adapter, req/s, shape (epochs, adapters) (a trace: its observed rate)."""
    if workload.lengths.kind == "trace":
        return requests.epoch_counts(epoch_s) / np.diff(epoch_edges(requests.duration_s, epoch_s))[:, None]
    return rate_table(workload).epoch_rates(epoch_s)


@dataclass
class Score:
    """Pooled truth and forecasts of one forecaster over workloads, and the time its forecasts took."""

    truth: list[np.ndarray] = field(default_factory=list)
    predicted: list[np.ndarray] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, truth: np.ndarray, predicted: np.ndarray, seconds: float) -> None:
        self.truth.append(truth.ravel())
        self.predicted.append(predicted.ravel())
        self.seconds += seconds

    def summary(self) -> dict[str, float]:
        """MAPE, SMAPE and WAPE (%) over every pooled pair, their count and the seconds spent forecasting."""
        y, p = np.concatenate(self.truth), np.concatenate(self.predicted)
        return {"mape": mape(y, p), "smape": smape(y, p), "wape": wape(y, p), "points": int(y.size),
                "seconds": self.seconds}


def backtest(workloads: Sequence[WorkloadSpec], forecasters: Sequence[str], epoch_s: float,
             season_s: float | None = None, from_epoch: int = 1, request_seed: int = 0,
             progress: Callable[[str, int, int], None] | None = None) -> dict[str, dict[str, float]]:
    """Forecast error of each named forecaster over ``workloads`` (requests drawn with ``request_seed``).

    Returns:
        ``{forecaster: {"mape", "smape", "wape", "points", "seconds"}}`` (errors in %).
    """
    scores = {name: Score() for name in forecasters}
    total = len(workloads) * len(forecasters)
    for w_index, workload in enumerate(workloads):
        requests = sample_requests(workload, np.random.default_rng(request_seed))
        edges = epoch_edges(requests.duration_s, epoch_s)
        whole = int(np.sum(np.diff(edges) >= epoch_s * (1 - 1e-9)))
        counts = requests.epoch_counts(epoch_s)
        truth = true_epoch_rates(workload, requests, epoch_s)[from_epoch:whole]
        for f_index, name in enumerate(forecasters):
            start = time.perf_counter()
            predicted = walk_forward(make_forecaster(name, epoch_s, season_s), counts)[from_epoch:whole]
            scores[name].add(truth, predicted, time.perf_counter() - start)
            if progress:
                progress("forecasting", w_index * len(forecasters) + f_index + 1, total)
    return {name: score.summary() for name, score in scores.items()}
