"""Distances per method geometry, reduced to one inner-product search.

Every geometry is mapped to a pair (Q, R) of float32 matrices such that, for a fixed query i,
"reference j is nearer than j'" exactly when <Q_i, R_j> > <Q_i, R_j'>. One kernel (a chunked
matmul + top-k, see `knn.py`) then serves all of them, and never forms an N x N distance matrix:

- cosine / vmf: Q = R = x / |x|                    (vmf: the mean direction mu; kappa is the norm)
- euclidean:    Q = [x, 1], R = [y, -|y|^2 / 2]     -> <Q, R> = (|x|^2 - |x - y|^2) / 2
- hyperbolic:   x, y = proj(expmap0(f)) in the Poincare ball of curvature -c, a_y = 1 / (1 - c|y|^2),
                Q = [x, |x|^2, 1], R = [a_y y, -a_y / 2, -a_y |y|^2 / 2]
                -> <Q, R> = -a_y |x - y|^2 / 2, and cosh(sqrt(c) d(x, y)) = 1 + 2c |x-y|^2 a_x a_y,
                so the ranking is the Poincare ranking without any Mobius algebra (reference note §4.1).

Why the euclidean map instead of faiss IndexFlatL2: one inner-product code path, and faiss' inner
product search measured faster than its L2 search at SOP size (23 s vs 35 s on 2 cores). The ranking
is the same in exact arithmetic; float rounding can only reorder items whose distances agree to ~1e-7
relative, exactly as two BLAS builds do.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

GEOMETRIES = ("euclidean", "cosine", "vmf", "hyperbolic")


def check_geometry(geometry: str, curvature: Optional[float] = None) -> str:
    """Validate a geometry name (and the curvature hyperbolic needs); returns the name."""
    if geometry not in GEOMETRIES:
        raise ValueError(f"unknown geometry {geometry!r}: expected one of {GEOMETRIES}")
    if geometry == "hyperbolic" and (curvature is None or not curvature > 0):
        raise ValueError(f"geometry 'hyperbolic' needs a curvature c > 0, got {curvature!r}")
    return geometry


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit norm; an all-zero row stays zero instead of becoming NaN.

    Plain float32 arithmetic on purpose: it is what a user hands PML (`x / np.linalg.norm(x, ...)`),
    so the normalised inputs, and hence the neighbours, are bit-identical to that oracle's.
    """
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, np.float32(eps))).astype(np.float32, copy=False)


def to_ball(tangent: np.ndarray, c: float) -> np.ndarray:
    """Exported hyperbolic embeddings are tangent vectors f(x); map them with proj(expmap0(f)) exactly as
    training does (`vmf_embeddings.methods.poincare`, same clamps), in float64."""
    import torch

    from vmf_embeddings.methods.poincare import to_poincare

    tangent = torch.from_numpy(np.asarray(tangent, dtype=np.float64))
    return to_poincare(tangent, float(c), riemannian=False).numpy()


def poincare_distance(x: np.ndarray, y: np.ndarray, c: float) -> np.ndarray:
    """Full float64 Poincare distance matrix (tests and small inputs only: it is N x M).

    Uses the Mobius form d = (2/sqrt(c)) artanh(sqrt(c) |(-x) (+)_c y|), independent of the
    arccosh form the search relies on, so tests can check one against the other.
    """
    x = np.asarray(x, np.float64)[:, None, :]
    y = np.asarray(y, np.float64)[None, :, :]
    mx = -x
    xy = np.sum(mx * y, -1, keepdims=True)
    x2 = np.sum(mx * mx, -1, keepdims=True)
    y2 = np.sum(y * y, -1, keepdims=True)
    num = (1 + 2 * c * xy + c * y2) * mx + (1 - c * x2) * y
    den = 1 + 2 * c * xy + c * c * x2 * y2
    n = np.linalg.norm(num / den, axis=-1)
    sc = np.sqrt(c)
    return 2.0 / sc * np.arctanh(np.clip(sc * n, 0.0, 1.0 - 1e-15))


def search_space(
    embeddings: np.ndarray, geometry: str, curvature: Optional[float] = None
) -> Tuple[np.ndarray, np.ndarray]:
    """(Q, R) float32, C-contiguous: larger <Q_i, R_j> means j is nearer to i (module docstring)."""
    check_geometry(geometry, curvature)
    x = np.asarray(embeddings)
    if geometry in ("cosine", "vmf"):
        q = l2_normalize(x)
        return q, q
    if geometry == "euclidean":
        x64 = x.astype(np.float64)
        ones = np.ones((len(x), 1))
        q = np.hstack([x64, ones])
        r = np.hstack([x64, -0.5 * np.sum(x64 * x64, 1, keepdims=True)])
        return np.ascontiguousarray(q, np.float32), np.ascontiguousarray(r, np.float32)
    b = to_ball(x, float(curvature))
    b2 = np.sum(b * b, 1, keepdims=True)
    a = 1.0 / (1.0 - float(curvature) * b2)
    q = np.hstack([b, b2, np.ones_like(b2)])
    r = np.hstack([a * b, -0.5 * a, -0.5 * a * b2])
    return np.ascontiguousarray(q, np.float32), np.ascontiguousarray(r, np.float32)


def clustering_space(embeddings: np.ndarray, geometry: str, curvature: Optional[float] = None) -> np.ndarray:
    """The vectors k-means (NMI/AMI) runs on: what PML would be given for that geometry.

    Raw embeddings for euclidean, unit directions for cosine/vmf, ball coordinates for hyperbolic
    (Euclidean k-means there is an approximation; hyperbolic NMI is not defined by any seed).
    """
    check_geometry(geometry, curvature)
    if geometry in ("cosine", "vmf"):
        return l2_normalize(embeddings)
    if geometry == "hyperbolic":
        return np.ascontiguousarray(to_ball(embeddings, float(curvature)), np.float32)
    return np.ascontiguousarray(embeddings, np.float32)


def scores_to_distances(
    scores: np.ndarray, query_space: np.ndarray, geometry: str, curvature: Optional[float] = None
) -> np.ndarray:
    """Turn search scores <Q_i, R_j> (rows = queries) back into the geometry's distance (float64).

    cosine/vmf: 1 - cos; euclidean: |x - y| ; hyperbolic: Poincare distance.
    """
    s = np.asarray(scores, np.float64)
    q = np.asarray(query_space, np.float64)
    if geometry in ("cosine", "vmf"):
        return 1.0 - s
    if geometry == "euclidean":
        x2 = np.sum(q[:, :-1] ** 2, 1, keepdims=True)
        return np.sqrt(np.maximum(x2 - 2.0 * s, 0.0))
    c = float(curvature)
    ax = 1.0 / (1.0 - c * q[:, -2:-1])  # q[:, -2] holds |x|^2
    delta = np.maximum(-2.0 * s * ax, 0.0)
    return np.arccosh(1.0 + 2.0 * c * delta) / np.sqrt(c)
