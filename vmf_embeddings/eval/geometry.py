"""The geometry registry: one record per embedding geometry, which methods name and evaluation reads.

A method head declares `geometry = "<name>"` and, where the geometry has parameters, returns them from
`geometry_params()` (hyperbolic: `{"curvature": c}`); extraction writes both into the embeddings file.
Evaluation looks the name up here and never compares geometry names itself. Each record says:

- `search(x, params)`: a pair (Q, R) of float32 matrices such that, for a fixed query i, "reference j is
  nearer than j'" exactly when <Q_i, R_j> > <Q_i, R_j'>. One kernel (a chunked matmul + top-k, see
  `knn.py`) then serves every geometry, and never forms an N x N distance matrix:

  - cosine / vmf: Q = R = x / |x|                    (vmf: the mean direction mu; kappa is the norm)
  - euclidean:    Q = [x, 1], R = [y, -|y|^2 / 2]     -> <Q, R> = (|x|^2 - |x - y|^2) / 2
  - hyperbolic:   x, y = proj(expmap0(f)) in the Poincare ball of curvature -c, a_y = 1 / (1 - c|y|^2),
                  Q = [x, |x|^2, 1], R = [a_y y, -a_y / 2, -a_y |y|^2 / 2]
                  -> <Q, R> = -a_y |x - y|^2 / 2, and cosh(sqrt(c) d(x, y)) = 1 + 2c |x-y|^2 a_x a_y,
                  so the ranking is the Poincare ranking without any Mobius algebra.
- `clustering(x, params)`: the vectors k-means (NMI / AMI) runs on.
- `distances(scores, Q, params)`: search scores back to the geometry's distance.
- `class_means(support)`: few-shot prototypes (n_way x k_shot x D -> n_way x D) in the space `search` expects.
- `sampled`: the embeddings parameterise distributions (vMF), so evaluation adds the sampled retrieval
  metrics (`vmf_classification.vmf_sampled_retrieval`).
- `angular`: distances are between directions, so prototype distortion uses the cosine distance.

Why the euclidean map instead of faiss IndexFlatL2: one inner-product code path, and faiss' inner
product search measured faster than its L2 search at SOP size (23 s vs 35 s on 2 cores). The ranking
is the same in exact arithmetic; float rounding can only reorder items whose distances agree to ~1e-7
relative, exactly as two BLAS builds do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Tuple

import numpy as np

Params = Mapping[str, float]


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit norm; an all-zero row stays zero instead of becoming NaN.

    Plain float32 arithmetic on purpose: it is what a user hands PML (`x / np.linalg.norm(x, ...)`),
    so the normalised inputs, and hence the neighbours, are bit-identical to PML's.
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


# -- the per-geometry maps -----------------------------------------------------------------------------

def _unit_search(x: np.ndarray, params: Params) -> Tuple[np.ndarray, np.ndarray]:
    q = l2_normalize(x)
    return q, q


def _unit_clustering(x: np.ndarray, params: Params) -> np.ndarray:
    return l2_normalize(x)


def _unit_distances(scores: np.ndarray, q: np.ndarray, params: Params) -> np.ndarray:
    return 1.0 - scores


def _unit_means(support: np.ndarray) -> np.ndarray:
    n_way, k_shot, d = support.shape
    return l2_normalize(l2_normalize(support.reshape(-1, d)).reshape(n_way, k_shot, d).mean(1))


def _euclidean_search(x: np.ndarray, params: Params) -> Tuple[np.ndarray, np.ndarray]:
    x64 = np.asarray(x).astype(np.float64)
    q = np.hstack([x64, np.ones((len(x64), 1))])
    r = np.hstack([x64, -0.5 * np.sum(x64 * x64, 1, keepdims=True)])
    return np.ascontiguousarray(q, np.float32), np.ascontiguousarray(r, np.float32)


def _euclidean_distances(scores: np.ndarray, q: np.ndarray, params: Params) -> np.ndarray:
    x2 = np.sum(q[:, :-1] ** 2, 1, keepdims=True)
    return np.sqrt(np.maximum(x2 - 2.0 * scores, 0.0))


def _plain_clustering(x: np.ndarray, params: Params) -> np.ndarray:
    return np.ascontiguousarray(x, np.float32)


def _plain_means(support: np.ndarray) -> np.ndarray:
    return support.astype(np.float64).mean(1)


def _hyperbolic_search(x: np.ndarray, params: Params) -> Tuple[np.ndarray, np.ndarray]:
    c = float(params["curvature"])
    b = to_ball(x, c)
    b2 = np.sum(b * b, 1, keepdims=True)
    a = 1.0 / (1.0 - c * b2)
    q = np.hstack([b, b2, np.ones_like(b2)])
    r = np.hstack([a * b, -0.5 * a, -0.5 * a * b2])
    return np.ascontiguousarray(q, np.float32), np.ascontiguousarray(r, np.float32)


def _hyperbolic_clustering(x: np.ndarray, params: Params) -> np.ndarray:
    # Euclidean k-means on ball coordinates is an approximation; no paper defines hyperbolic NMI.
    return np.ascontiguousarray(to_ball(x, float(params["curvature"])), np.float32)


def _hyperbolic_distances(scores: np.ndarray, q: np.ndarray, params: Params) -> np.ndarray:
    c = float(params["curvature"])
    ax = 1.0 / (1.0 - c * q[:, -2:-1])  # q[:, -2] holds |x|^2
    delta = np.maximum(-2.0 * scores * ax, 0.0)
    return np.arccosh(1.0 + 2.0 * c * delta) / np.sqrt(c)


def _positive_curvature(params: Params) -> Optional[str]:
    c = params.get("curvature")
    return None if c is not None and float(c) > 0 else f"needs a curvature c > 0, got {c!r}"


@dataclass(frozen=True)
class Geometry:
    """How one geometry searches, clusters, measures and averages (module docstring)."""

    name: str
    search: Callable[[np.ndarray, Params], Tuple[np.ndarray, np.ndarray]]
    clustering: Callable[[np.ndarray, Params], np.ndarray]
    distances: Callable[[np.ndarray, np.ndarray, Params], np.ndarray]
    class_means: Callable[[np.ndarray], np.ndarray]
    params: Tuple[str, ...] = ()
    sampled: bool = False
    angular: bool = False  # distances are between directions (cosine distance), not points
    check_params: Callable[[Params], Optional[str]] = lambda params: None


GEOMETRY_REGISTRY: Dict[str, Geometry] = {}


def register_geometry(geometry: Geometry) -> Geometry:
    """Add a geometry (a method in another package can register its own before training)."""
    GEOMETRY_REGISTRY[geometry.name] = geometry
    return geometry


register_geometry(Geometry("euclidean", _euclidean_search, _plain_clustering, _euclidean_distances, _plain_means))
register_geometry(Geometry("cosine", _unit_search, _unit_clustering, _unit_distances, _unit_means, angular=True))
register_geometry(Geometry("vmf", _unit_search, _unit_clustering, _unit_distances, _unit_means, sampled=True,
                           angular=True))
register_geometry(Geometry("hyperbolic", _hyperbolic_search, _hyperbolic_clustering, _hyperbolic_distances,
                           _plain_means, params=("curvature",), check_params=_positive_curvature))

#: the registered names (kept for callers that list them)
GEOMETRIES = tuple(GEOMETRY_REGISTRY)


def get_geometry(name: str) -> Geometry:
    try:
        return GEOMETRY_REGISTRY[str(name)]
    except KeyError:
        raise ValueError(f"unknown geometry {name!r}: expected one of {tuple(GEOMETRY_REGISTRY)}") from None


def geometry_params(geometry: str, curvature: Optional[float] = None, params: Optional[Params] = None) -> Dict:
    """The parameter dict of a geometry from the legacy `curvature` argument and/or a params mapping."""
    merged = dict(params or {})
    if curvature is not None:
        merged.setdefault("curvature", curvature)
    return merged


def check_geometry(geometry: str, curvature: Optional[float] = None, params: Optional[Params] = None) -> str:
    """Validate a geometry name and its parameters (e.g. the curvature hyperbolic needs); returns the name."""
    record = get_geometry(geometry)
    problem = record.check_params(geometry_params(geometry, curvature, params))
    if problem:
        raise ValueError(f"geometry {geometry!r} {problem}")
    return geometry


def search_space(
    embeddings: np.ndarray, geometry: str, curvature: Optional[float] = None, params: Optional[Params] = None
) -> Tuple[np.ndarray, np.ndarray]:
    """(Q, R) float32, C-contiguous: larger <Q_i, R_j> means j is nearer to i (module docstring)."""
    check_geometry(geometry, curvature, params)
    return get_geometry(geometry).search(np.asarray(embeddings), geometry_params(geometry, curvature, params))


def clustering_space(
    embeddings: np.ndarray, geometry: str, curvature: Optional[float] = None, params: Optional[Params] = None
) -> np.ndarray:
    """The vectors k-means (NMI/AMI) runs on: what PML would be given for that geometry."""
    check_geometry(geometry, curvature, params)
    return get_geometry(geometry).clustering(np.asarray(embeddings), geometry_params(geometry, curvature, params))


def scores_to_distances(
    scores: np.ndarray, query_space: np.ndarray, geometry: str, curvature: Optional[float] = None,
    params: Optional[Params] = None,
) -> np.ndarray:
    """Turn search scores <Q_i, R_j> (rows = queries) back into the geometry's distance (float64)."""
    check_geometry(geometry, curvature, params)
    return get_geometry(geometry).distances(
        np.asarray(scores, np.float64), np.asarray(query_space, np.float64), geometry_params(geometry, curvature, params)
    )
