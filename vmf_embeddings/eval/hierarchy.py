"""Hierarchical mistake costs from a class cost matrix D (C x C, D[y, y] = 0).

- error_rate       = fraction of wrong top-1 predictions
- avg_cost          = AC = (1/N) sum_n D[y_n, y_hat_n]  (all items; correct ones cost 0)
- mean_mistake_cost = mean D over the mistakes only = AC / error_rate (NaN without mistakes)

Units follow D. The metric-guided prototypes code (VSainteuf/metric-guided-prototypes-pytorch) ships tree
PATH LENGTHS; Bertinetto et al.'s LCA-height convention is exactly half of that for equal-depth leaves --
convert D before comparing (`path_to_lca_height`).
"""

from __future__ import annotations

from typing import Dict

import numpy as np

from .arrays import Array, to_numpy



def check_cost_matrix(cost: Array) -> np.ndarray:
    """Square, finite, non-negative, zero diagonal (float64)."""
    d = to_numpy(cost).astype(np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"cost matrix must be C x C, got shape {d.shape}")
    if not np.all(np.isfinite(d)) or (d < 0).any() or np.any(np.diag(d) != 0):
        raise ValueError("cost matrix must be finite, non-negative, with a zero diagonal")
    return d


def path_to_lca_height(cost: Array) -> np.ndarray:
    """Tree path length -> LCA height (equal-depth leaves): D / 2."""
    return check_cost_matrix(cost) / 2.0


def hierarchical_metrics(predictions: Array, labels: Array, cost: Array) -> Dict[str, float]:
    """error_rate, avg_cost, mean_mistake_cost. `predictions` are class ids, or N x C scores (argmax)."""
    d = check_cost_matrix(cost)
    p = to_numpy(predictions)
    if p.ndim == 2:
        p = p.argmax(1)
    p = p.astype(np.int64).reshape(-1)
    y = to_numpy(labels).astype(np.int64).reshape(-1)
    if len(p) != len(y):
        raise ValueError(f"predictions ({len(p)}) and labels ({len(y)}) differ in length")
    if len(y) and (max(p.max(), y.max()) >= len(d) or min(p.min(), y.min()) < 0):
        raise ValueError(f"class ids must lie in 0..{len(d) - 1} (the cost matrix's size)")
    costs = d[y, p]
    wrong = p != y
    er = float(wrong.mean())
    return {
        "error_rate": er,
        "avg_cost": float(costs.mean()),
        "mean_mistake_cost": float(costs[wrong].mean()) if wrong.any() else float("nan"),
    }
