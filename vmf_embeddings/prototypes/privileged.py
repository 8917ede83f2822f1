"""Privileged information: class-name word vectors order the prototypes' similarities (Mettes et al. 2019).

The paper adds a ranking term L_PI to the separation loss: for triplets (i, j, k) in which class j is
closer to class i than class k in word space, it asks cos(p_i, p_j) to exceed cos(p_i, p_k) through
-log(e^{c_ij} / (e^{c_ij} + e^{c_ik})) = softplus(c_ik - c_ij), averaged over triplets.

Deliberate departures from the official code (psmmettes/hpn, reported in its GitHub issue #5): its
branch stores loop counters instead of class ids, lists each class as its own nearest neighbour, drops
the farthest class by an off-by-one slice, uses the linear surrogate mean(-c_pos) + mean(c_neg)
instead of L_PI, and raises before running. Here positives are the `n_positives` nearest *other*
classes in word space (the code's `-n`, default 2), negatives all remaining classes, and the loss is
the paper's log-ratio.
`n_positives=None` uses every ordered pair (the full ranking; O(K^3) memory and time per step).
The paper's weighting of L_PI could not be confirmed from its text; the official code adds it with weight 1.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from vmf_embeddings.prototypes.geometry import normalize_rows


def load_word_vectors(path: str, n_classes: Optional[int] = None,
                      class_names: Optional[Sequence[str]] = None) -> np.ndarray:
    """Read K x d class-name vectors, one row per class in class-id order.

    `.npy`: a K x d array (the official "wtv" files). Text (`.txt`, `.vec`, ...): one class per line,
    either numbers only (class-id order) or `name v1 v2 ...`; with `class_names`, named rows are
    reordered to match them.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"word-vector file {str(file)!r} not found (method.params.word_vectors)")
    if file.suffix == ".npy":
        vectors = np.load(file).astype(np.float64)
    else:
        names, rows = [], []
        for line in file.read_text().splitlines():
            parts = line.replace(",", " ").split()
            if not parts:
                continue
            try:
                rows.append([float(v) for v in parts])
                names.append(None)
            except ValueError:
                names.append(parts[0])
                rows.append([float(v) for v in parts[1:]])
        vectors = np.asarray(rows, dtype=np.float64)
        if class_names is not None and all(n is not None for n in names):
            index = {n: i for i, n in enumerate(names)}
            missing = [c for c in class_names if c not in index]
            if missing:
                raise ValueError(f"word-vector file {file} lacks classes {missing[:5]}")
            vectors = vectors[[index[c] for c in class_names]]
    if vectors.ndim != 2:
        raise ValueError(f"word-vector file {file} must hold a K x d matrix, got shape {vectors.shape}")
    if n_classes is not None and vectors.shape[0] != n_classes:
        raise ValueError(f"word-vector file {file} has {vectors.shape[0]} rows, expected one per class ({n_classes})")
    return vectors


def file_digest(path: str) -> str:
    """Content hash that keys the placement cache, so editing the word vectors invalidates it."""
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()[:12]


class RankingPrior:
    """L_PI and its gradient with respect to the prototypes, weighted by `weight`."""

    def __init__(self, word_vectors: np.ndarray, n_positives: Optional[int] = 2, weight: float = 1.0) -> None:
        w = normalize_rows(word_vectors)
        self.n_classes = w.shape[0]
        self.weight = float(weight)
        similarity = w @ w.T
        np.fill_diagonal(similarity, -np.inf)  # a class is never its own neighbour (the official code ranked it first)
        if n_positives is None:
            self.positives = self.negatives = None
            upper = similarity[:, :, None] > similarity[:, None, :]  # [i, j, k]: j closer to i than k
            idx = np.arange(self.n_classes)
            upper[idx, idx, :] = False
            upper[idx, :, idx] = False
            self.mask = upper
            self.n_triplets = int(upper.sum())
        else:
            n = int(n_positives)
            if not 1 <= n <= self.n_classes - 2:
                raise ValueError(f"n_positives={n} must be in 1..K-2 for K={self.n_classes}")
            order = np.argsort(-similarity, axis=1, kind="stable")[:, : self.n_classes - 1]  # self sorts last
            self.positives, self.negatives = order[:, :n], order[:, n:]
            self.mask = None
            self.n_triplets = self.n_classes * n * (self.n_classes - 1 - n)

    def loss_and_grad(self, prototypes: np.ndarray) -> Tuple[float, np.ndarray]:
        """weight * L_PI(P) and d/dP of it, with P's rows taken as unit vectors (c_ij = <p_i, p_j>)."""
        p = prototypes
        cos = p @ p.T
        rows = np.arange(self.n_classes)[:, None]
        grad_cos = np.zeros_like(cos)
        if self.mask is None:
            c_pos = cos[rows, self.positives]  # K x n
            c_neg = cos[rows, self.negatives]  # K x m
            delta = c_neg[:, None, :] - c_pos[:, :, None]  # K x n x m
            loss = float(np.logaddexp(0.0, delta).sum()) / self.n_triplets
            sig = 0.5 * (1.0 + np.tanh(0.5 * delta)) / self.n_triplets  # stable sigmoid
            grad_cos[rows, self.positives] -= sig.sum(axis=2)
            grad_cos[rows, self.negatives] += sig.sum(axis=1)
        else:
            delta = cos[:, None, :] - cos[:, :, None]  # [i, j, k] = c_ik - c_ij
            loss = float(np.logaddexp(0.0, delta)[self.mask].sum()) / self.n_triplets
            sig = np.where(self.mask, 0.5 * (1.0 + np.tanh(0.5 * delta)), 0.0) / self.n_triplets
            grad_cos -= sig.sum(axis=2)
            grad_cos += sig.sum(axis=1)
        grad = (grad_cos + grad_cos.T) @ p
        return self.weight * loss, self.weight * grad


def build_prior(word_vectors: Optional[str], n_classes: int, n_positives: Optional[int] = 2,
                weight: float = 1.0) -> Optional[RankingPrior]:
    """A RankingPrior from a file path, or None when no word vectors are configured."""
    if not word_vectors:
        return None
    return RankingPrior(load_word_vectors(word_vectors, n_classes), n_positives, weight)
