"""Layouts whose max cosine is provably optimal: regular simplex, cross-polytope (Rankin), circle.

The converged placement uses them wherever they apply, because no gradient method reaches them
exactly: at K = 2D gradient descent on the paper's surrogate stalls near max cos 0.03-0.06 (measured
in float64, whatever the step schedule), while the cross-polytope gives 0.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np


def regular_simplex(n_classes: int, dim: int) -> np.ndarray:
    """K unit vectors with every pairwise cosine exactly -1/(K-1); needs K <= D+1.

    Built as the centred standard basis of R^K, expressed in an orthonormal basis of its (K-1)-dim
    span and padded with zeros to D columns.
    """
    if n_classes > dim + 1:
        raise ValueError(f"a regular simplex of K={n_classes} points needs D >= K-1, got D={dim}")
    if n_classes == 1:
        out = np.zeros((1, dim))
        out[0, 0] = 1.0
        return out
    centred = np.eye(n_classes) - 1.0 / n_classes
    # Rows of `centred` span a (K-1)-dim subspace; coordinates in its orthonormal basis are u * s.
    u, s, _ = np.linalg.svd(centred)
    coords = u[:, : n_classes - 1] * s[: n_classes - 1]
    coords /= np.linalg.norm(coords, axis=1, keepdims=True)
    out = np.zeros((n_classes, dim))
    out[:, : n_classes - 1] = coords
    return out


def cross_polytope(n_classes: int, dim: int) -> np.ndarray:
    """K of the 2D points {+-e_i}: max cosine 0, optimal for D+1 < K <= 2D (Rankin).

    All +e_i come first, then -e_i, so every axis is used before any antipodal pair appears.
    """
    if n_classes > 2 * dim:
        raise ValueError(f"the cross-polytope has only 2D={2 * dim} points, K={n_classes} requested")
    out = np.zeros((n_classes, dim))
    for k in range(n_classes):
        out[k, k % dim] = 1.0 if k < dim else -1.0
    return out


def circle(n_classes: int, dim: int = 2) -> np.ndarray:
    """Evenly spaced angles in the first two coordinates: max cosine cos(2 pi / K), optimal for D = 2
    (as the code of the authors' follow-up, Hyperbolic Busemann Learning, does; gradient placement
    collapses there because the projected repulsion vanishes as two prototypes meet)."""
    if dim < 2:
        raise ValueError("the circle layout needs D >= 2")
    angles = 2.0 * math.pi * np.arange(n_classes) / n_classes
    out = np.zeros((n_classes, dim))
    out[:, 0], out[:, 1] = np.cos(angles), np.sin(angles)
    return out


def best_closed_form(n_classes: int, dim: int) -> Optional[np.ndarray]:
    """The provably optimal layout for (K, D) if one exists, else None (Tammes regime K > 2D, D >= 3)."""
    if n_classes <= dim + 1:
        return regular_simplex(n_classes, dim)
    if n_classes <= 2 * dim:
        return cross_polytope(n_classes, dim)
    if dim == 2:
        return circle(n_classes, dim)
    return None
