"""Confidence intervals over seeds (Student's t, from scipy.stats), for summaries and learning curves."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

LEVEL = 0.95


def mean_ci(values: Sequence[float] | np.ndarray, level: float = LEVEL) -> tuple[float, float, float]:
    """Mean and its ``level`` t-interval ``(mean, low, high)``; the interval is the mean itself when all values
    are equal or there is only one."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if x.size < 2 or np.ptp(x) == 0:
        return mean, mean, mean
    low, high = stats.t.interval(level, x.size - 1, loc=mean, scale=stats.sem(x))
    return mean, float(low), float(high)
