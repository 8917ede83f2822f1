"""Split helpers shared by every loader, so each protocol rule is written once.

Closed-set datasets hold out a seeded, class-stratified fraction of their training images
(`stratified_split`); open-set retrieval datasets hold out whole classes with the frozen
legacy NumPy draw of the original preparation scripts (`validation_classes`).
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
from sklearn.model_selection import train_test_split

# The original prep scripts ran `np.random.seed(1234)` right before drawing validation classes;
# legacy RandomState streams are frozen, so this reproduces their lists on any NumPy version.
VALIDATION_CLASS_SEED = 1234


def stratified_split(labels: np.ndarray, holdout_fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Indices (keep, holdout) of a class-stratified split, as sklearn's `train_test_split` gives them.

    Splitting `np.arange(N)` with the same `stratify`/`random_state` yields exactly the partition the
    original code got by splitting the arrays themselves (51,000/9,000 for MNIST at 0.15, seed 1234),
    and in the same order. Classes with a single image cannot be stratified; unlike sklearn (which
    raises) they are kept whole in `keep`, so long-tailed label sets such as OmniArt styles still split.
    """
    labels = np.asarray(labels)
    index = np.arange(labels.shape[0])
    if holdout_fraction <= 0:
        return index, index[:0]
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    splittable = counts[inverse] >= 2
    keep, holdout = train_test_split(
        index[splittable], test_size=holdout_fraction, stratify=labels[splittable], random_state=seed
    )
    if not splittable.all():
        keep = np.concatenate([keep, index[~splittable]])
    return keep, holdout


def validation_classes(n_pool_classes: int, n_val_classes: int, seed: int = VALIDATION_CLASS_SEED) -> np.ndarray:
    """Sorted pool positions of the class-disjoint validation classes (Cars196, CUB200, SOP protocol).

    Equal to the original `np.random.seed(1234); np.random.choice(np.arange(N), k, replace=False)`
    but through a private RandomState, so no global NumPy state is read or changed.
    """
    chosen = np.random.RandomState(seed).choice(n_pool_classes, size=n_val_classes, replace=False)
    return np.sort(chosen)


def reindex(labels: np.ndarray) -> Tuple[torch.Tensor, np.ndarray]:
    """Map a split's labels onto 0..K-1 (sorted original ids) and return (new labels, original ids)."""
    classes, inverse = np.unique(np.asarray(labels), return_inverse=True)
    return torch.from_numpy(inverse.astype(np.int64).reshape(-1)), classes


def reindex_to(labels: np.ndarray, classes: np.ndarray) -> torch.Tensor:
    """Map labels onto positions in the sorted `classes` (closed-set val/test share train's space)."""
    labels = np.asarray(labels)
    pos = np.searchsorted(classes, labels)
    pos_clipped = np.minimum(pos, len(classes) - 1)
    unknown = classes[pos_clipped] != labels
    if unknown.any():
        raise ValueError(f"labels {np.unique(labels[unknown])[:5].tolist()} do not occur in the training split")
    return torch.from_numpy(pos.astype(np.int64))


def subsample_per_class(labels: np.ndarray, samples_per_class: int, seed: int) -> np.ndarray:
    """Sorted indices keeping at most `samples_per_class` random images of every class (seeded).

    Vectorised: one random key per image, rank keys within each class, keep ranks < k.
    """
    labels = np.asarray(labels)
    keys = np.random.RandomState(seed).random_sample(labels.shape[0])
    order = np.lexsort((keys, labels))  # by class, then by random key
    sorted_labels = labels[order]
    starts = np.searchsorted(sorted_labels, sorted_labels, side="left")
    rank = np.arange(labels.shape[0]) - starts
    return np.sort(order[rank < samples_per_class])
