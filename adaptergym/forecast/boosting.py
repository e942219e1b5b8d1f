"""Gradient boosting on lag features, one model pooled across adapters (scikit-learn's
HistGradientBoostingRegressor with a Poisson loss).

Each (adapter, epoch) is a row: log(1 + count) of the adapter's last ``lags`` epochs, of its EWMA and of its
mean so far, of its counts one and two seasons before the target epoch, and the target's phase in the season
(the last three when a season is known). The target is the next epoch's count, fitted with a Poisson loss (a
log link), so a tail adapter with two requests an epoch and a hot one with two thousand share one model without
the hot ones drowning the rest, and a flash crowd's spike does not dominate a squared error. A lag before the
first epoch is -1 (not NaN: a column with no value at all breaks the binning). The model is refitted every
``refit_every`` epochs; before ``min_epochs`` are seen it forecasts as EWMA. Fits run on one OpenMP thread
(:mod:`adaptergym.threads`).
"""

from __future__ import annotations

import numpy as np

from adaptergym.forecast.base import Forecaster
from adaptergym.forecast.naive import ewma, ewma_path
from adaptergym.forecast.registry import FORECASTERS
from adaptergym.threads import one_openmp_thread

#: Feature value of a lag before the first epoch (log counts are never negative, so it cannot be confused).
MISSING = -1.0


@FORECASTERS.register("gbr")
class GradientBoosting(Forecaster):
    """Pooled gradient-boosted regression of next-epoch counts on lag features.

    Args:
        lags: how many recent epochs are features (default 6).
        refit_every: epochs between refits (default 6).
        min_epochs: epochs seen before the first fit (default 8); EWMA before that.
        alpha: weight of the EWMA feature and of the fallback (default 0.3).
    """

    name = "gbr"

    def __init__(self, epoch_s: float, season_s: float | None = None, prior: np.ndarray | None = None,
                 lags: int = 6, refit_every: int = 6, min_epochs: int = 8, alpha: float = 0.3) -> None:
        super().__init__(epoch_s, season_s, prior)
        self.lags, self.refit_every, self.min_epochs, self.alpha = lags, refit_every, max(min_epochs, 2), alpha
        self._model = None
        self._fitted_at = -1

    def _predict(self, counts: np.ndarray, horizon: int) -> np.ndarray:
        if counts.shape[0] < self.min_epochs:
            return np.tile(ewma(counts, self.alpha), (horizon, 1))
        if self._model is None or counts.shape[0] - self._fitted_at >= self.refit_every:
            self._fit(counts)
        extended = counts
        with one_openmp_thread():
            for _ in range(horizon):  # further epochs: feed each forecast back as if observed
                step = self._model.predict(self._features(extended)[-1])
                extended = np.vstack([extended, step])
        return extended[counts.shape[0]:]

    def _fit(self, counts: np.ndarray) -> None:
        from sklearn.ensemble import HistGradientBoostingRegressor

        x = self._features(counts)
        self._model = HistGradientBoostingRegressor(loss="poisson", max_iter=150, learning_rate=0.08,
                                                    max_leaf_nodes=15, early_stopping=False, random_state=0)
        with one_openmp_thread():  # row t of the features predicts epoch t + 1
            self._model.fit(x[:-1].reshape(-1, x.shape[-1]), counts[1:].reshape(-1))
        self._fitted_at = counts.shape[0]

    def _features(self, counts: np.ndarray) -> np.ndarray:
        """Features (epochs, adapters, features) for predicting the epoch after each row."""
        t, n = counts.shape
        columns = [_shifted(counts, lag) for lag in range(self.lags)]
        columns += [ewma_path(counts, self.alpha), np.cumsum(counts, axis=0) / np.arange(1, t + 1)[:, None]]
        m = self.season
        if m is not None:
            columns += [_shifted(counts, m - 1), _shifted(counts, 2 * m - 1)]
        logs = [np.log1p(c) for c in columns]
        if m is not None:
            phase = 2 * np.pi * ((np.arange(t) + 1) % m) / m
            logs += [np.repeat(np.sin(phase)[:, None], n, axis=1), np.repeat(np.cos(phase)[:, None], n, axis=1)]
        return np.nan_to_num(np.stack(logs, axis=-1), nan=MISSING)


def _shifted(counts: np.ndarray, lag: int) -> np.ndarray:
    """``counts`` delayed by ``lag`` epochs (row t holds epoch t - lag), NaN where that is before the start."""
    out = np.full_like(counts, np.nan)
    if lag < counts.shape[0]:
        out[lag:] = counts[: counts.shape[0] - lag]
    return out
