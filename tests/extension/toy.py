"""A method, a dataset and a backbone written outside the package, as a user would add their own.

Nothing under vmf_embeddings/ knows about them: the YAMLs in tests/extension/conf name these classes by
`_target_`, and `hydra.searchpath=[file://tests/extension/conf]` puts them beside the built-in options.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vmf_embeddings.datasets.base import DataSplits, TensorSplit
from vmf_embeddings.methods.base import Method


class NearestClassMean(Method):
    """Trains a linear softmax to shape the embedding; predicts by the nearest class mean of the
    training embeddings, which it fits from data (`fit_class_state`), not from gradients. Counts its
    optimiser steps in a buffer (`after_step`), so the count is checkpointed."""

    geometry = "euclidean"
    fits_class_state = True

    def __init__(self, embedding_dim: int, n_classes: int, scale: float = 1.0) -> None:
        super().__init__()
        self.classifier = nn.Linear(embedding_dim, n_classes)
        self.scale = float(scale)
        self.register_buffer("means", torch.zeros(n_classes, embedding_dim))
        self.register_buffer("fitted", torch.tensor(False))
        self.register_buffer("steps", torch.tensor(0, dtype=torch.long))

    def loss(self, embeddings, labels, targets=None):
        return F.cross_entropy(self.classifier(embeddings), labels)

    def after_step(self, step: int) -> None:
        self.steps += 1

    @torch.no_grad()
    def fit_class_state(self, train) -> None:
        n_classes = self.means.shape[0]
        sums = torch.zeros_like(self.means).index_add_(0, train.labels, train.features)
        counts = torch.bincount(train.labels, minlength=n_classes).clamp_min(1).to(sums.dtype)
        self.means.copy_(sums / counts[:, None])
        self.fitted.fill_(True)

    def logits(self, embeddings, n_samples=None, generator=None):
        if not bool(self.fitted):
            raise RuntimeError("NearestClassMean predicts only after fit_class_state")
        return -self.scale * torch.cdist(embeddings, self.means).pow(2)


class TinyMLP(nn.Module):
    """flatten -> Linear -> ReLU -> Linear(embedding_dim): a backbone needs `embedding_dim` and forward."""

    def __init__(self, embedding_dim: int, in_channels: int, image_size: int, hidden: int = 32) -> None:
        super().__init__()
        self.embedding_dim = int(embedding_dim)
        in_features = int(in_channels) * int(image_size) ** 2
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, embedding_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def load_blobs(dataset_path: str, n_classes: int = 4, per_class: int = 60, image_size: int = 6,
               seed: int = 0) -> DataSplits:
    """Gaussian blobs drawn as 1 x S x S float images: one fixed random pattern per class plus noise."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, 1, image_size, image_size, generator=g)

    def split(count: int) -> TensorSplit:
        labels = torch.arange(n_classes).repeat_interleave(count)
        images = centres[labels] + 0.7 * torch.randn(len(labels), 1, image_size, image_size, generator=g)
        return TensorSplit(images.float(), labels)

    return DataSplits(name="toy_blobs", train=split(per_class), val=split(per_class // 3),
                      test=split(per_class // 3), n_train_classes=n_classes, channels=1, image_size=image_size)
