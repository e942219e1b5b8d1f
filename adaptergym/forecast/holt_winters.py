"""Seasonal Holt-Winters (additive season, no trend) per adapter: statsmodels fits, a vectorised update runs.

statsmodels' ``ExponentialSmoothing`` fits each adapter's smoothing weights and states (every ``refit_every``
epochs, default one season); between fits the same recursions advance every adapter at once with the fitted
weights (statsmodels has no cheap one-step update, and a fit per adapter per epoch would cost seconds):

    level_t    = a (y_t - s_{t-m}) + (1 - a) level_{t-1}
    s_t        = g (y_t - level_{t-1}) + (1 - g) s_{t-m}
    forecast   = level_T + s_{T+h-m}

(the form statsmodels uses; a test checks the two agree). No trend term: over a few compressed days a trend
would extrapolate the ramp of each day. Until two whole seasons are seen (statsmodels' minimum, and at least
10 + 2 * (season // 2) epochs) it forecasts as EWMA; a series that never changes (all zeros, say) is not fitted
but smoothed with default weights, so an adapter that wakes up later is still followed.
"""

from __future__ import annotations

import warnings

import numpy as np

from adaptergym.errors import ConfigError
from adaptergym.forecast.base import Forecaster
from adaptergym.forecast.naive import ewma
from adaptergym.forecast.registry import FORECASTERS

#: Smoothing weights (level, season) of adapters whose history is constant, so not fitted.
DEFAULT_WEIGHTS = (0.5, 0.1)


@FORECASTERS.register("holt-winters")
class HoltWinters(Forecaster):
    """Additive seasonal exponential smoothing per adapter (needs ``season_s``).

    Args:
        refit_every: epochs between fits of the weights (default: one season).
        fallback_alpha: EWMA weight used before two seasons are seen.
    """

    name = "holt-winters"

    def __init__(self, epoch_s: float, season_s: float | None = None, prior: np.ndarray | None = None,
                 refit_every: int | None = None, fallback_alpha: float = 0.3) -> None:
        super().__init__(epoch_s, season_s, prior)
        if self.season is None:
            raise ConfigError("season_s: holt-winters needs the length of the season (e.g. --season 86400)")
        self.refit_every = refit_every or self.season
        self.fallback_alpha = fallback_alpha
        self._fitted_at = -1  # epochs seen at the last fit
        self._seen = 0  # epochs folded into the states
        self._alpha = self._gamma = self._level = self._seasons = np.empty(0)

    def _predict(self, counts: np.ndarray, horizon: int) -> np.ndarray:
        m, t = self.season, counts.shape[0]
        assert m is not None
        if t < self.min_epochs:
            return np.tile(ewma(counts, self.fallback_alpha), (horizon, 1))
        if self._fitted_at < 0 or t - self._fitted_at >= self.refit_every:
            self._fit(counts)
        for row in counts[self._seen:]:
            self._step(row)
        steps = (self._seen + np.arange(horizon)) % m
        return self._level + self._seasons[steps]

    @property
    def min_epochs(self) -> int:
        """Epochs statsmodels' heuristic start needs: two seasons, and at least 10 + 2 * (season // 2)."""
        m = self.season or 0
        return max(2 * m, 10 + 2 * (m // 2))

    def _step(self, y: np.ndarray) -> None:
        j = self._seen % self.season
        previous = self._level
        self._level = self._alpha * (y - self._seasons[j]) + (1 - self._alpha) * previous
        self._seasons[j] = self._gamma * (y - previous) + (1 - self._gamma) * self._seasons[j]
        self._seen += 1

    def _fit(self, counts: np.ndarray) -> None:
        t, n = counts.shape
        m = self.season
        self._alpha, self._gamma, self._level = np.empty(n), np.empty(n), np.empty(n)
        self._seasons = np.zeros((m, n))
        slots = np.arange(t - m, t) % m
        for i in range(n):
            weights, level, seasons = _fit_one(counts[:, i], m)
            self._alpha[i], self._gamma[i] = weights
            self._level[i] = level
            self._seasons[slots, i] = seasons
        self._fitted_at = self._seen = t


def _fit_one(y: np.ndarray, m: int) -> tuple[tuple[float, float], float, np.ndarray]:
    """(alpha, gamma), the last level and the last ``m`` seasonal terms of one series."""
    if np.ptp(y) == 0:
        return DEFAULT_WEIGHTS, float(y[-1]), np.zeros(m)
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            fit = ExponentialSmoothing(y, trend=None, seasonal="add", seasonal_periods=m,
                                       initialization_method="heuristic").fit()
        except (ValueError, np.linalg.LinAlgError):
            return DEFAULT_WEIGHTS, float(y[-1]), np.zeros(m)
    weights = (float(fit.params["smoothing_level"]), float(fit.params["smoothing_seasonal"]))
    return weights, float(fit.level[-1]), np.asarray(fit.season[-m:], float)
