"""Forecasts that need no model: the last epoch again, the mean so far, an exponentially weighted mean."""

from __future__ import annotations

import numpy as np

from adaptergym.errors import ConfigError
from adaptergym.forecast.base import Forecaster
from adaptergym.forecast.registry import FORECASTERS


@FORECASTERS.register("last")
class LastValue(Forecaster):
    """Every coming epoch gets the last epoch's counts (what a purely reactive policy assumes)."""

    name = "last"

    def _predict(self, counts: np.ndarray, horizon: int) -> np.ndarray:
        return np.tile(counts[-1], (horizon, 1))


@FORECASTERS.register("mean")
class RunningMean(Forecaster):
    """The mean of every epoch so far (what a placement on the mean load assumes, learnt online)."""

    name = "mean"

    def _predict(self, counts: np.ndarray, horizon: int) -> np.ndarray:
        return np.tile(counts.mean(axis=0), (horizon, 1))


def ewma_path(counts: np.ndarray, alpha: float) -> np.ndarray:
    """Exponentially weighted mean of each column after every row, started at the first row:
    s_t = a x_t + (1 - a) s_{t-1}; shape of ``counts``."""
    out = np.empty_like(counts, dtype=float)
    level = counts[0].astype(float)
    for k, row in enumerate(counts):
        if k:
            level = level + alpha * (row - level)
        out[k] = level
    return out


def ewma(counts: np.ndarray, alpha: float) -> np.ndarray:
    """The exponentially weighted mean of each column after the last row."""
    return ewma_path(counts, alpha)[-1]


@FORECASTERS.register("ewma")
class EWMA(Forecaster):
    """Exponentially weighted moving average with weight ``alpha`` on the newest epoch (default 0.3), updated as
    each epoch is observed (what :func:`ewma` of the whole history gives, bit for bit, at a cost that does not
    grow with it)."""

    name = "ewma"

    def __init__(self, epoch_s: float, season_s: float | None = None, prior: np.ndarray | None = None,
                 alpha: float = 0.3) -> None:
        super().__init__(epoch_s, season_s, prior)
        if not 0 < alpha <= 1:
            raise ConfigError(f"alpha: {alpha!r} must be in (0, 1]")
        self.alpha = alpha
        self._level = np.empty(0)

    def observe(self, counts: np.ndarray) -> None:
        super().observe(counts)
        row = self.history[-1]
        self._level = row.copy() if self.history.shape[0] == 1 else self._level + self.alpha * (row - self._level)

    def _predict(self, counts: np.ndarray, horizon: int) -> np.ndarray:
        return np.tile(self._level, (horizon, 1))
