"""Separation statistics of a prototype matrix P (K x D, unit rows) and the known optima they are
judged against: unit norm, no collapse, the simplex bound -1/(K-1) and the closed-form optima.

Everything here is float64 NumPy: placement happens once, before training, and the closed forms are
checked at 1e-12 (tests/prototypes), which float32 cannot resolve.
"""

from __future__ import annotations

import functools
import math
from contextlib import nullcontext
from typing import Callable, Dict, Optional, TypeVar

import numpy as np

from vmf_embeddings.errors import UserError

try:  # ships with scikit-learn
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

F = TypeVar("F", bound=Callable)


def single_threaded(function: F) -> F:
    """Run with one BLAS thread: placement multiplies K x K matrices thousands of times, far too small for
    threads, and on a busy machine threaded BLAS made it 10x slower (measured 19 s vs 1.6 s, K=200, D=25)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with threadpool_limits(limits=1, user_api="blas") if threadpool_limits is not None else nullcontext():
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


#: a placement whose largest pairwise cosine exceeds this is refused as collapsed (the paper's rule collapses at D = 2)
COLLAPSE_LIMIT = 0.99


class CollapsedPrototypesError(UserError, RuntimeError):
    """Placement produced (near-)coincident prototypes, which no classifier can tell apart."""


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """Project every row onto the unit sphere (the placement's retraction)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-300)


def cosine_matrix(prototypes: np.ndarray) -> np.ndarray:
    """K x K pairwise cosines with the diagonal set to -inf, so row maxima pick another prototype."""
    p = normalize_rows(prototypes)
    cos = p @ p.T
    np.fill_diagonal(cos, -np.inf)
    return cos


def max_cosine(prototypes: np.ndarray) -> float:
    """The Tammes objective max_{i != j} cos(p_i, p_j); -1 for a single prototype (no pair exists)."""
    if len(prototypes) < 2:
        return -1.0
    return float(cosine_matrix(prototypes).max())


def mean_nn_cosine(prototypes: np.ndarray) -> float:
    """L_HP, the paper's surrogate: mean over prototypes of the cosine to their nearest neighbour.

    The official code (psmmettes/hpn) reports this plus 1 (it adds 1 to the product matrix).
    """
    if len(prototypes) < 2:
        return -1.0
    return float(cosine_matrix(prototypes).max(axis=1).mean())


def simplex_bound(n_classes: int) -> float:
    """-1/(K-1): no K unit vectors do better, in max or in mean nearest-neighbour cosine (|sum p_i|^2 >= 0)."""
    return -1.0 if n_classes < 2 else -1.0 / (n_classes - 1)


def known_optimum(n_classes: int, dim: int) -> Optional[float]:
    """The optimal max cosine where it is known in closed form, else None (Tammes regime, D >= 3).

    K <= D+1: regular simplex, -1/(K-1); D+1 < K <= 2D: 0 (Rankin); D = 2: cos(2 pi / K);
    D = 1: K <= 2 only (antipodes), any more coincide.
    """
    if n_classes <= dim + 1:
        return simplex_bound(n_classes)
    if n_classes <= 2 * dim:
        return 0.0
    if dim == 2:
        return math.cos(2.0 * math.pi / n_classes)
    if dim == 1:
        return 1.0
    return None


def placement_stats(prototypes: np.ndarray) -> Dict[str, float]:
    """What every placement logs: max cosine, mean nearest-neighbour cosine, their gaps to the simplex
    bound and (where known) to the optimum, and the worst deviation from unit norm."""
    p = np.asarray(prototypes, dtype=np.float64)
    n_classes, dim = p.shape
    bound = simplex_bound(n_classes)
    worst = max_cosine(p)
    mean_nn = mean_nn_cosine(p)
    optimum = known_optimum(n_classes, dim)
    return {
        "n_classes": int(n_classes),
        "dim": int(dim),
        "max_cosine": worst,
        "mean_nn_cosine": mean_nn,
        "simplex_bound": bound,
        "gap_to_simplex": worst - bound,
        "mean_nn_gap_to_simplex": mean_nn - bound,
        "known_optimum": float("nan") if optimum is None else float(optimum),
        "gap_to_optimum": float("nan") if optimum is None else worst - float(optimum),
        "norm_error": float(np.abs(np.linalg.norm(p, axis=1) - 1.0).max()) if n_classes else 0.0,
    }


def check_prototypes(prototypes: np.ndarray, n_classes: int, dim: int, tolerance: float = 1e-6,
                     collapse_limit: float = COLLAPSE_LIMIT) -> None:
    """Refuse a wrong shape, non-finite or non-unit rows, or collapsed prototypes (max cosine > collapse_limit)."""
    p = np.asarray(prototypes)
    if p.shape != (n_classes, dim):
        raise ValueError(f"prototypes have shape {p.shape}, expected ({n_classes}, {dim})")
    if not np.all(np.isfinite(p)):
        raise ValueError("prototypes contain NaN or inf")
    norm_error = float(np.abs(np.linalg.norm(p.astype(np.float64), axis=1) - 1.0).max())
    if norm_error > tolerance:
        raise ValueError(f"prototype rows are not unit norm (max |norm - 1| = {norm_error:.3g} > {tolerance:g})")
    worst = max_cosine(p)
    if worst > collapse_limit:
        raise CollapsedPrototypesError(
            f"prototype placement collapsed: max cosine {worst:.4f} > {collapse_limit} for K={n_classes}, D={dim}; "
            f"use method.params.placement=converged or a larger embedding_dim"
        )
