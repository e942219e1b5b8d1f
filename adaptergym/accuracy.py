"""Prediction error in percent: MAPE, the standard SMAPE and WAPE, shared by twin validation and load forecasting.

Zeros: MAPE leaves out pairs whose true value is 0 (the ratio is undefined there); SMAPE
``100*mean(2|y-ŷ|/(|y|+|ŷ|))`` leaves out pairs where both are 0 (a perfect forecast of nothing) and scores a
zero against a non-zero as 200%. Non-finite pairs are left out of both. No pair left: NaN.
"""

from __future__ import annotations

import math

import numpy as np


def mape(y: np.ndarray, yhat: np.ndarray) -> float:
    """Mean absolute percentage error over the pairs with a non-zero true value, %."""
    y, yhat = np.asarray(y, float), np.asarray(yhat, float)
    ok = np.isfinite(y) & np.isfinite(yhat) & (y != 0)
    return float(100 * np.mean(np.abs(yhat[ok] - y[ok]) / np.abs(y[ok]))) if ok.any() else math.nan


def smape(y: np.ndarray, yhat: np.ndarray) -> float:
    """Symmetric MAPE, standard definition (0-200%), over the pairs not both zero, %."""
    y, yhat = np.asarray(y, float), np.asarray(yhat, float)
    ok = np.isfinite(y) & np.isfinite(yhat) & ((np.abs(y) + np.abs(yhat)) > 0)
    return float(100 * np.mean(2 * np.abs(yhat[ok] - y[ok]) / (np.abs(y[ok]) + np.abs(yhat[ok])))) \
        if ok.any() else math.nan


def wape(y: np.ndarray, yhat: np.ndarray) -> float:
    """Weighted absolute percentage error ``100*sum|y-ŷ|/sum|y|``: errors weighted by size, so a busy adapter
    counts for more than a tail one (what a capacity decision feels), %."""
    y, yhat = np.asarray(y, float), np.asarray(yhat, float)
    ok = np.isfinite(y) & np.isfinite(yhat)
    total = np.abs(y[ok]).sum()
    return float(100 * np.abs(yhat[ok] - y[ok]).sum() / total) if total > 0 else math.nan
