"""Per-adapter load forecasting from the arrivals seen so far (``adaptergym forecast`` reports their error).

Forecasters (``make_forecaster(name, epoch_s, season_s=None, prior=None)``; names in ``forecaster_names()``):

==================  =========================================================================================
``last``            the last epoch again
``mean``            the mean of every epoch so far
``ewma``            exponentially weighted mean (weight 0.3 on the newest epoch)
``holt-winters``    additive seasonal Holt-Winters per adapter (statsmodels); needs ``season_s``
``gbr``             gradient boosting on lag features, pooled across adapters (scikit-learn)
==================  =========================================================================================

The interface is in :mod:`adaptergym.forecast.base`; :mod:`adaptergym.forecast.backtest` scores forecasts
against a workload's true rates.
"""

from adaptergym.forecast import boosting, holt_winters, naive  # noqa: F401  (registers the forecasters)
from adaptergym.forecast.base import Forecaster
from adaptergym.forecast.registry import FORECASTERS, forecaster_names, make_forecaster

__all__ = ["FORECASTERS", "Forecaster", "forecaster_names", "make_forecaster"]
