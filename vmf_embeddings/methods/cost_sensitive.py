"""Linear heads trained with a loss that knows what a mistake costs (the class cost matrix D of the `cost` group):

- `SoftLabels` (Bertinetto et al., "Making Better Mistakes", CVPR 2020): cross-entropy against the soft target
  softmax_k(-beta D[y, k] / max D);
- `EMDRegularized`: cross-entropy + l * mean_n sum_k p_k(x_n)^2 (D[y_n, k] - mu), the "squared Earth Mover"
  regulariser of the metric-guided prototypes code (Garnot & Landrieu, BMVC 2021,
  github.com/VSainteuf/metric-guided-prototypes-pytorch, `metrics/cost.py`).

`CostMatrixMixin` is how any head receives D: a registered buffer (so checkpoints carry it) filled once from the
training context at the start of a fresh run.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from vmf_embeddings.errors import ConfigError
from vmf_embeddings.methods.softmax import UnnormalizedSoftmax


class CostMatrixMixin:
    """A `cost` buffer (C x C) set from `context.cost_matrix` when a fresh run starts; refused when absent."""

    #: the config name used in the error message when no cost matrix is configured
    method_name = "this method"

    def _init_cost(self, n_classes: int) -> None:
        self.register_buffer("cost", torch.zeros(int(n_classes), int(n_classes)))

    def set_cost(self, cost: Optional[Any]) -> None:
        if cost is None:
            raise ConfigError(f"method={self.method_name} needs a class cost matrix: add cost=tree (or lca, ordinal, "
                              f"csv cost.path=...)")
        self.cost.copy_(torch.as_tensor(np.asarray(cost), dtype=self.cost.dtype))

    def on_train_start(self, context, resumed: bool) -> None:
        if not resumed:
            self.set_cost(getattr(context, "cost_matrix", None))


def soft_targets(cost: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """Soft labels: softmax_i(-beta D[y, i] / max D) for each label y."""
    scale = cost.max().clamp_min(1e-12)
    return torch.softmax(-float(beta) * cost[labels] / scale, dim=-1)


class SoftLabels(CostMatrixMixin, UnnormalizedSoftmax):
    """A linear classifier trained with cross-entropy against soft labels from the class cost matrix."""

    method_name = "soft_labels"

    def __init__(self, embedding_dim: int, n_classes: int, beta: float = 10.0) -> None:
        super().__init__(int(embedding_dim), int(n_classes))
        self.beta = float(beta)
        self._init_cost(n_classes)

    def loss(self, embeddings, labels, targets=None):
        target = soft_targets(self.cost.to(embeddings.dtype), labels, self.beta)
        return -(target * F.log_softmax(self.logits(embeddings), dim=-1)).sum(-1).mean()


def emd_regularizer(logits: torch.Tensor, labels: torch.Tensor, cost: torch.Tensor, offset: float) -> torch.Tensor:
    """mean_n sum_k p_k(x_n)^2 (D[y_n, k] - offset), p = softmax(logits)."""
    p = torch.softmax(logits, dim=-1)
    return (p.pow(2) * (cost[labels].to(p.dtype) - float(offset))).sum(-1).mean()


class EMDRegularized(CostMatrixMixin, UnnormalizedSoftmax):
    """Cross-entropy + weight x the squared-EMD regulariser: probability mass on costly classes is penalised."""

    method_name = "emd"

    def __init__(self, embedding_dim: int, n_classes: int, weight: float = 1.0, offset: float = 0.0) -> None:
        super().__init__(int(embedding_dim), int(n_classes))
        self.weight, self.offset = float(weight), float(offset)
        self._init_cost(n_classes)

    def loss(self, embeddings, labels, targets=None):
        logits = self.logits(embeddings)
        return F.cross_entropy(logits, labels) + self.weight * emd_regularizer(logits, labels, self.cost, self.offset)
