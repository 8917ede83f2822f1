"""Regression metrics in the target's own units (e.g. years for OmniArt).

The third-party HPN reimplementation (Abhishaike/HyperProtoNetReproduce) compared decoded years with
normalised targets in its train MAE; evaluation therefore only accepts decoded predictions and raw targets,
both in target units.
"""

from __future__ import annotations

from typing import Dict

import numpy as np

from .arrays import Array, to_numpy



def _np64(x: Array) -> np.ndarray:
    return to_numpy(x, np.float64).reshape(-1)


def mae(predictions: Array, targets: Array) -> float:
    """Mean absolute error (1/N) sum |y_hat - y| in float64."""
    p, t = _np64(predictions), _np64(targets)
    if p.shape != t.shape:
        raise ValueError(f"predictions ({p.shape[0]}) and targets ({t.shape[0]}) differ in length")
    return float(np.mean(np.abs(p - t)))


def regression_metrics(predictions: Array, targets: Array) -> Dict[str, float]:
    """{"mae", "rmse"} in target units."""
    p, t = _np64(predictions), _np64(targets)
    return {"mae": mae(p, t), "rmse": float(np.sqrt(np.mean((p - t) ** 2)))}
