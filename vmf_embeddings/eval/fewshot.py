"""Few-shot episodes (ProtoNet protocol): N-way, K-shot, Q-query, E seeded episodes.

Per episode: N distinct classes among those with >= K + Q items, K + Q distinct items per class
(without replacement), prototypes = mean of the K support embeddings, each of the N * Q queries goes
to the nearest prototype; acc_e = correct / (N Q). Reported: mean_e acc_e and the 95% half-width
1.96 * s / sqrt(E) with the SAMPLE std (ddof=1), as the ProtoNet authors' script (torchnet) does.

Nearest prototype per geometry (the registry's `class_means` and `search`, vmf_embeddings.eval.geometry):
euclidean = squared L2 to the support mean (ProtoNet); cosine/vmf = cosine to the mean of the unit
support vectors; hyperbolic = Poincare distance to the tangent-space mean mapped into the ball (a design
choice: none of the original implementations defines hyperbolic few-shot).
"""

from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Sequence

import numpy as np
import torch

from .arrays import Array
from .geometry import check_geometry, geometry_params, get_geometry



def confidence_interval95(values: Sequence[float]) -> float:
    """1.96 * sample std (ddof=1) / sqrt(n); NaN for n < 2."""
    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return float("nan")
    return float(1.96 * v.std(ddof=1) / math.sqrt(len(v)))


def _nearest_prototype(support: np.ndarray, query: np.ndarray, n_way: int, k_shot: int,
                       geometry: str, params: Mapping[str, float]) -> np.ndarray:
    record = get_geometry(geometry)
    prototypes = record.class_means(support.reshape(n_way, k_shot, support.shape[1]))
    q, _ = record.search(query, params)
    _, r = record.search(np.asarray(prototypes), params)
    return np.argmax(q.astype(np.float64) @ r.astype(np.float64).T, axis=1)


def few_shot_accuracy(
    embeddings: Array,
    labels: Array,
    n_way: int = 5,
    k_shot: int = 1,
    n_query: int = 15,
    n_episodes: int = 600,
    seed: int = 1234,
    geometry: str = "euclidean",
    curvature: Optional[float] = None,
    params: Optional[Mapping[str, float]] = None,
) -> Dict[str, object]:
    """Mean episode accuracy with its 95% CI: {"accuracy", "ci95", "std", "episodes", "per_episode"}."""
    check_geometry(geometry, curvature, params)
    params = geometry_params(geometry, curvature, params)
    x = embeddings.detach().cpu().numpy() if isinstance(embeddings, torch.Tensor) else np.asarray(embeddings)
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if len(x) != len(y):
        raise ValueError(f"embeddings ({len(x)}) and labels ({len(y)}) differ in length")
    classes, inv, counts = np.unique(y, return_inverse=True, return_counts=True)
    eligible = np.flatnonzero(counts >= k_shot + n_query)
    if len(eligible) < n_way:
        raise ValueError(
            f"{n_way}-way {k_shot}-shot {n_query}-query episodes need {n_way} classes with >= "
            f"{k_shot + n_query} items; only {len(eligible)} have that many"
        )
    members = [np.flatnonzero(inv == c) for c in range(len(classes))]
    rng = np.random.default_rng(seed)
    accs = np.empty(n_episodes)
    truth = np.repeat(np.arange(n_way), n_query)
    for e in range(n_episodes):
        picked = rng.choice(eligible, size=n_way, replace=False)
        idx = np.stack([rng.choice(members[c], size=k_shot + n_query, replace=False) for c in picked])
        support = x[idx[:, :k_shot].reshape(-1)]
        query = x[idx[:, k_shot:].reshape(-1)]
        pred = _nearest_prototype(support, query, n_way, k_shot, geometry, params)
        accs[e] = np.mean(pred == truth)
    return {
        "accuracy": float(accs.mean()),
        "ci95": confidence_interval95(accs),
        "std": float(accs.std(ddof=1)) if n_episodes > 1 else float("nan"),
        "episodes": int(n_episodes),
        "per_episode": accs,
    }


def spec_tag(spec: Dict[str, object]) -> str:
    """`5way1shot`: the metric name of an episode spec (defaults: 5-way 1-shot)."""
    return f"{spec.get('n_way', 5)}way{spec.get('k_shot', 1)}shot"
