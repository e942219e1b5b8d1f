"""The forecaster interface: per-adapter arrival counts of past epochs in, rates of the coming epochs out.

Contract (kept stable; online policies and ``adaptergym replay`` build on it)::

    f = make_forecaster("holt-winters", epoch_s=300, season_s=7200, prior=base_rates)
    for counts in requests.epoch_counts(300):   # one row per epoch, one column per adapter
        rates = f.predict()[0]                  # req/s of every adapter in the epoch about to start
        ...                                     # (decide on ``rates``)
        f.observe(counts)                       # then the epoch's arrivals become history

- ``observe(counts)``: arrivals of every adapter in the epoch that just ended (shape ``(n,)``, >= 0).
- ``predict(horizon=1)``: forecast rates, req/s, shape ``(horizon, n)``, never negative. Before any epoch is
  observed it returns ``prior`` (e.g. the workload's base rates), or raises if none was given.
- ``history``: the observed counts so far, shape ``(epochs, n)``.

A forecaster sees only arrivals, never the schedule. Every forecaster is deterministic: the same counts give the
same forecasts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from adaptergym.errors import ConfigError


class Forecaster(ABC):
    """Base class: keeps the history and turns predicted counts into rates; subclasses predict counts.

    Args:
        epoch_s: length of one epoch, s.
        season_s: length of the daily cycle, s, for seasonal forecasters (None: no season known).
        prior: rates (req/s per adapter) to forecast before the first epoch is observed.
    """

    name: ClassVar[str] = ""

    def __init__(self, epoch_s: float, season_s: float | None = None, prior: np.ndarray | None = None) -> None:
        if not np.isfinite(epoch_s) or epoch_s <= 0:
            raise ConfigError(f"epoch_s: {epoch_s!r} must be a finite number of seconds > 0")
        if season_s is not None and (not np.isfinite(season_s) or season_s < 2 * epoch_s):
            raise ConfigError(f"season_s: {season_s!r} must span at least two epochs of {epoch_s:g} s")
        self.epoch_s = float(epoch_s)
        self.season_s = season_s
        self.prior = None if prior is None else np.asarray(prior, float)
        self._counts = np.empty((0, 0))  # rows [: self._epochs] are observed; grown by doubling
        self._epochs = 0

    @property
    def season(self) -> int | None:
        """Epochs per season (None without a season)."""
        return None if self.season_s is None else round(self.season_s / self.epoch_s)

    @property
    def history(self) -> np.ndarray:
        """Observed counts, shape (epochs, adapters) (a read-only view: no copy per forecast)."""
        view = self._counts[: self._epochs]
        view.flags.writeable = False
        return view

    def observe(self, counts: np.ndarray) -> None:
        """Add the arrivals of the epoch that just ended, one count per adapter."""
        row = np.asarray(counts, float)
        if row.ndim != 1 or (self._epochs and row.shape != self._counts.shape[1:]):
            raise ConfigError(f"counts: expected one count per adapter (shape {self._width()}), got {row.shape}")
        if not np.all(np.isfinite(row)) or np.any(row < 0):
            raise ConfigError("counts: arrival counts must be finite and >= 0")
        if self._epochs == self._counts.shape[0]:
            grown = np.empty((max(8, 2 * self._epochs), row.size))
            grown[: self._epochs] = self._counts.reshape(self._epochs, row.size)
            self._counts = grown
        self._counts[self._epochs] = row
        self._epochs += 1

    def predict(self, horizon: int = 1) -> np.ndarray:
        """Forecast rates of the next ``horizon`` epochs, req/s, shape (horizon, adapters)."""
        if horizon < 1:
            raise ConfigError(f"horizon: {horizon!r} must be >= 1 epoch")
        if not self._epochs:
            if self.prior is None:
                raise ConfigError(f"forecaster {self.name}: no epoch observed yet and no prior rates given")
            return np.tile(self.prior, (horizon, 1))
        return np.clip(self._predict(self.history, horizon), 0.0, None) / self.epoch_s

    def _width(self) -> str:
        return f"({self._counts.shape[1]},)" if self._epochs else "(adapters,)"

    @abstractmethod
    def _predict(self, counts: np.ndarray, horizon: int) -> np.ndarray:
        """Counts expected in each of the next ``horizon`` epochs, shape (horizon, adapters)."""
