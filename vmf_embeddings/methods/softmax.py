"""Euclidean and cosine softmax cross-entropy heads (the paper's baselines)."""

from __future__ import annotations

from typing import Dict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vmf_embeddings.methods.base import Method
from vmf_embeddings.methods.temperature import TemperatureMixin


class UnnormalizedSoftmax(Method):
    """logits = f(x) W^T, cross-entropy; retrieval in Euclidean distance on raw embeddings."""

    geometry = "euclidean"

    def __init__(self, embedding_dim: int, n_classes: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(embedding_dim, n_classes, bias=False)

    def logits(self, embeddings, n_samples=None, generator=None):
        return self.classifier(embeddings)

    def loss(self, embeddings, labels, targets=None):
        return F.cross_entropy(self.logits(embeddings), labels)

    def export(self) -> Dict[str, np.ndarray]:
        return {"weights": self.classifier.weight.detach().float().cpu().numpy(), "temperature": np.float32(1.0)}


class NormalizedSoftmax(TemperatureMixin, Method):
    """Cosine softmax: logits = beta * cos(f(x), w_c); retrieval by cosine similarity."""

    geometry = "cosine"

    def __init__(self, embedding_dim: int, n_classes: int, init_temp: float = 0.0, learn_temp: bool = True) -> None:
        super().__init__()
        self.classifier = nn.Linear(embedding_dim, n_classes, bias=False)
        self._init_temperature(init_temp, learn_temp)

    def cosines(self, embeddings: torch.Tensor) -> torch.Tensor:
        return F.normalize(embeddings, dim=-1) @ F.normalize(self.classifier.weight, dim=-1).t()

    def logits(self, embeddings, n_samples=None, generator=None):
        return self.beta * self.cosines(embeddings)

    def loss(self, embeddings, labels, targets=None):
        return F.cross_entropy(self.logits(embeddings), labels)

    def export(self) -> Dict[str, np.ndarray]:
        return {
            "weights": self.classifier.weight.detach().float().cpu().numpy(),
            "temperature": np.float32(torch.exp(self.temp.detach()).item()),
        }
