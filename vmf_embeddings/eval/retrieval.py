"""Retrieval metrics, defined exactly as pytorch-metric-learning 2.x `AccuracyCalculator` defines them.

Query = reference = every item; the query is never its own neighbour (excluded by index); neighbours
are ordered by (distance, index) ascending (faiss IndexFlatL2's tie order). With R_i = (size of i's
class) - 1 and rel_i(j) = [j-th neighbour has i's label]:

- precision@1 = mean_i rel_i(1)
- recall@K    = mean_i [some rel_i(j) = 1, j <= K] (the papers' Recall@K hit rate; recall@1 = precision@1)
- r_precision = mean_i (1/R_i) sum_{j<=R_i} rel_i(j)
- map@r       = mean_i (1/R_i) sum_{j<=R_i} rel_i(j) * P_i(j),  P_i(j) = (1/j) sum_{l<=j} rel_i(l)
- nmi / ami   = sklearn scores of faiss k-means (niter=20, seed=1234, k = #labels) vs the labels

Lone queries (a label with one item, so R_i = 0) are DROPPED from every kNN metric, as PML drops them
-- including recall@K, where paper code would count them as misses (the standard test sets have
none). They are still clustered for NMI/AMI. `n_queries` and `n_lone` are reported. Metrics computed
only from k = max R_i neighbours; recall@K for K > k comes from the rank of the nearest positive.
"""

from __future__ import annotations

import logging
from typing import Dict, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from .arrays import Array, to_numpy
from .geometry import check_geometry, clustering_space, search_space
from .knn import knn_self

log = logging.getLogger(__name__)

#: Recall@K list when the dataset config names none (`dataset.recall_ks`, e.g. SOP's 1, 10, 100, 1000)
DEFAULT_KS = (1, 2, 4, 8)


def _emb(x: Array) -> np.ndarray:
    """Embeddings as finite N x D NumPy (half / bfloat16 tensors from AMP upcast to float32 first)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to(torch.float32).cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be N x D, got shape {x.shape}")
    bad = ~np.isfinite(x).all(1)
    if bad.any():
        raise ValueError(
            f"embeddings have {int(bad.sum())} row(s) with NaN/inf (first: row {int(np.flatnonzero(bad)[0])}); "
            "the model diverged: lower the learning rate or restore an earlier checkpoint"
        )
    return x


def reindex_labels(labels: Array) -> np.ndarray:
    """Labels as 0..C-1 int64 (PML casts labels to float32 and merges ids >= 2^24; we re-index)."""
    lab = to_numpy(labels)
    if lab.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {lab.shape}")
    return np.unique(lab, return_inverse=True)[1].astype(np.int64).reshape(-1)


def metrics_from_neighbours(
    neighbour_labels: np.ndarray,
    labels: np.ndarray,
    ks: Sequence[int] = (),
    first_positive_rank: Optional[np.ndarray] = None,
) -> Dict[str, float]:
    """P@1, R-precision, MAP@R and Recall@K from the N x k neighbour labels (self excluded).

    Needs k >= max R_i for R-precision / MAP@R to be exact; Recall@K with K > k needs ranks.
    """
    y = np.asarray(labels, np.int64)
    L = np.asarray(neighbour_labels)
    n, k = L.shape
    R = np.bincount(y)[y] - 1
    keep = R > 0
    out: Dict[str, float] = {"n_queries": int(keep.sum()), "n_lone": int((~keep).sum())}
    names = ["precision@1", "r_precision", "map@r"] + [f"recall@{K}" for K in ks]
    if not keep.any():
        log.warning("every query label is a singleton: retrieval metrics are NaN")
        out.update({m: float("nan") for m in names})
        return out
    if R.max() > k:
        log.warning("k=%d < max R=%d: r_precision and map@r are truncated (PML warns the same)", k, R.max())
    same = L[keep] == y[keep, None]
    Rk = R[keep]
    ar = np.arange(1, k + 1)
    rel = same & (ar[None, :] <= Rk[:, None])
    out["precision@1"] = float(same[:, 0].mean())
    out["r_precision"] = float((rel.sum(1) / Rk).mean())
    prec = np.cumsum(rel, 1) / ar[None, :]
    out["map@r"] = float(((prec * rel).sum(1) / Rk).mean())
    for K in ks:
        if K <= k:
            out[f"recall@{K}"] = float(same[:, :K].any(1).mean())
        elif first_positive_rank is not None:
            out[f"recall@{K}"] = float((first_positive_rank[keep] < K).mean())
        else:
            raise ValueError(f"recall@{K} needs first-positive ranks (K > k = {k})")
    return out


def clustering_scores(x: np.ndarray, labels: np.ndarray, seed: int = 1234, niter: int = 20) -> Dict[str, float]:
    """NMI and AMI of k-means (k = #labels) against the labels, as PML computes them.

    faiss.Kmeans(d, k, niter=20) with faiss' default seed 1234 is PML's clustering; NMI is only
    comparable across runs at a fixed k-means implementation and seed.
    Falls back to sklearn KMeans when faiss is missing (then values differ from PML's).
    """
    from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

    x = np.ascontiguousarray(x, np.float32)
    n_clusters = int(len(np.unique(labels)))
    try:
        import faiss  # type: ignore

        # min_points_per_centroid only gates faiss' "please provide at least ..." warning on small sets;
        # the clustering (and so NMI / AMI) is PML's either way.
        km = faiss.Kmeans(x.shape[1], n_clusters, niter=niter, seed=seed, min_points_per_centroid=1)
        km.train(x)
        assign = km.index.search(x, 1)[1][:, 0]
    except ImportError:  # pragma: no cover
        from sklearn.cluster import KMeans

        assign = KMeans(n_clusters, n_init=1, max_iter=niter, random_state=seed).fit_predict(x)
    return {
        "nmi": float(normalized_mutual_info_score(labels, assign)),
        "ami": float(adjusted_mutual_info_score(labels, assign)),
    }


def retrieval_metrics(
    embeddings: Array,
    labels: Array,
    geometry: str,
    curvature: Optional[float] = None,
    ks: Sequence[int] = DEFAULT_KS,
    clustering: bool = True,
    backend: str = "auto",
    device: Optional[Union[str, torch.device]] = None,
    block_bytes: Optional[int] = None,
    params: Optional[Mapping[str, float]] = None,
    symmetric: Optional[bool] = None,
) -> Dict[str, float]:
    """All retrieval metrics of one embedding set, in one exact chunked kNN pass (plus k-means).

    geometry: euclidean | cosine | vmf (cosine on the mean direction) | hyperbolic (Poincare;
    embeddings are tangent vectors, mapped with proj(expmap0(.)) at `curvature`), or any registered
    geometry with its `params`. symmetric: the kNN scan variant (`knn.knn_self`); same metrics either way.
    """
    check_geometry(geometry, curvature, params)
    x = _emb(embeddings)
    y = reindex_labels(labels)
    if len(x) != len(y):
        raise ValueError(f"embeddings ({len(x)}) and labels ({len(y)}) differ in length")
    counts = np.bincount(y)
    k = int(max(1, counts.max() - 1))
    k = min(k, len(y) - 1)
    ks = tuple(int(K) for K in ks)
    need_ranks = bool(ks) and max(ks) > k and counts.max() > 1
    q, r = search_space(x, geometry, curvature, params)
    res = knn_self(q, r, k, labels=y, with_ranks=need_ranks, max_rank=max(ks) if ks else None,
                   backend=backend, device=device, block_bytes=block_bytes, symmetric=symmetric)
    out = metrics_from_neighbours(y[res.indices], y, ks, res.first_positive_rank)
    if clustering:
        out.update(clustering_scores(clustering_space(x, geometry, curvature, params), y))
    return out


def recall_at_1(
    embeddings: torch.Tensor, labels: torch.Tensor, geometry: str, curvature: Optional[float] = None,
    params: Optional[Mapping[str, float]] = None,
) -> float:
    """Exact Recall@1 (= precision@1, lone queries dropped) for validation during training.

    Runs on the embeddings' device (CUDA -> torch block scan). vmf uses the mean direction (cosine):
    deterministic and cheaper than the original's 10-draw majority vote, which only adds noise to
    early stopping; the sampled variant is in `vmf_classification.vmf_sampled_retrieval`.
    """
    check_geometry(geometry, curvature, params)
    y = reindex_labels(labels)
    counts = np.bincount(y)
    if counts.max() < 2:
        return float("nan")
    dev = embeddings.device if isinstance(embeddings, torch.Tensor) else None
    if dev is not None and dev.type == "cpu":
        dev = None
    x = _emb(embeddings)
    if len(x) != len(y):
        raise ValueError(f"embeddings ({len(x)}) and labels ({len(y)}) differ in length")
    q, r = search_space(x, geometry, curvature, params)
    if dev is not None:
        res = knn_self(torch.from_numpy(q).to(dev), torch.from_numpy(r).to(dev), 1, backend="torch", device=dev)
    else:
        res = knn_self(q, r, 1, device="cpu")
    return metrics_from_neighbours(y[res.indices], y)["precision@1"]
