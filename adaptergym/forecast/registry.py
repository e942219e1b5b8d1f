"""Forecasters by name: ``make_forecaster("ewma", epoch_s=300)``; an unknown name lists the known ones."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import numpy as np

from adaptergym.errors import ConfigError
from adaptergym.registry import Registry

if TYPE_CHECKING:
    from adaptergym.forecast.base import Forecaster

FORECASTERS: Registry[Forecaster] = Registry("forecaster")


def forecaster_names() -> list[str]:
    """Every registered forecaster name."""
    return FORECASTERS.names()


def make_forecaster(name: str, epoch_s: float, season_s: float | None = None, prior: np.ndarray | None = None,
                    **params: Any) -> Forecaster:
    """A fresh forecaster ``name`` for epochs of ``epoch_s`` seconds (``params`` go to its constructor).

    Raises:
        UnknownName: ``name`` is not registered (the message lists the known names).
        ConfigError: ``params`` names a parameter the forecaster does not take.
    """
    factory = FORECASTERS.get(name)
    accepted = set(inspect.signature(factory).parameters) - {"epoch_s", "season_s", "prior"}
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise ConfigError(f"forecaster {name!r}: unknown parameter(s) {unknown}; it takes {sorted(accepted) or 'none'}")
    return factory(epoch_s, season_s, prior, **params)
