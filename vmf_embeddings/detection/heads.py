"""Box predictors for torchvision's Faster R-CNN RoI heads: what turns each RoI's 1024-d box-head feature into
class logits (background first) and box deltas.

- `LinearBoxPredictor`: the plain detector's linear classifier with class-specific box regression (torchvision's
  `FastRCNNPredictor`).
- `RepMetPredictor`: RepMet's DML sub-network (Karlinsky et al., "RepMet: Representative-based metric learning for
  classification and few-shot object detection", CVPR 2019; github.com/jshtok/RepMet): FC -> e = 256, L2-normalised
  embedding E; K representatives R_ij per class (L2-normalised learnt vectors); mode likelihoods
  p_ij = exp(-|E - R_ij|^2 / (2 sigma^2)), class scores P(i) = max_j p_ij, background P(B) = 1 - max_i P(i);
  logits = 15 [P(B), P(1..N)] (the official detector's scale), box regression class-agnostic. Its extra loss is the
  embedding margin loss on foreground RoIs: max(0, min_j d_yj - min_{i != y, j} d_ij + alpha), squared distances as
  the official code.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn


class LinearBoxPredictor(nn.Module):
    """Linear class logits (background + C) and class-specific box deltas."""

    def __init__(self, in_channels: int, n_classes: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(int(in_channels), int(n_classes) + 1)
        self.bbox_pred = nn.Linear(int(in_channels), (int(n_classes) + 1) * 4)

    def forward(self, x: torch.Tensor):
        x = x.flatten(1)
        return self.cls_score(x), self.bbox_pred(x)

    def extra_losses(self, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {}


class RepMetPredictor(nn.Module):
    """RepMet's representatives head (module docstring). `set_representatives` swaps in an episode's classes."""

    def __init__(self, in_channels: int, n_classes: int, n_reps: int = 5, embedding_dim: int = 256,
                 sigma: float = 0.5, logit_scale: float = 15.0, margin: float = 0.5, embedding_weight: float = 1.0,
                 seed: int = 0) -> None:
        super().__init__()
        self.embed = nn.Linear(int(in_channels), int(embedding_dim))
        self.bbox_pred = nn.Linear(int(in_channels), 4)  # class-agnostic
        g = torch.Generator().manual_seed(int(seed))
        # the official initialisation: a class offset ~ N(0, 0.1) plus a mode offset ~ N(0, 0.05)
        reps = (torch.randn(int(n_classes), 1, int(embedding_dim), generator=g) * 0.1
                + torch.randn(int(n_classes), int(n_reps), int(embedding_dim), generator=g) * 0.05)
        self.reps = nn.Parameter(reps)
        self.sigma, self.logit_scale = float(sigma), float(logit_scale)
        self.margin, self.embedding_weight = float(margin), float(embedding_weight)
        self._last_distances: Optional[torch.Tensor] = None

    def embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """N x e unit embeddings of box-head features."""
        return F.normalize(self.embed(x.flatten(1)), dim=-1)

    def distances(self, e: torch.Tensor, reps: Optional[torch.Tensor] = None) -> torch.Tensor:
        """N x C x K squared distances to the unit representatives (2 - 2 cos for unit vectors)."""
        r = F.normalize(self.reps if reps is None else reps, dim=-1)
        return (2 - 2 * torch.einsum("ne,cke->nck", e, r.to(e.dtype))).clamp_min(0)

    def forward(self, x: torch.Tensor):
        x = x.flatten(1)
        d2 = self.distances(self.embeddings(x))
        self._last_distances = d2
        class_scores = torch.exp(-d2 / (2 * self.sigma ** 2)).amax(-1)  # N x C
        background = 1 - class_scores.amax(-1, keepdim=True)
        logits = self.logit_scale * torch.cat([background, class_scores], 1)
        deltas = self.bbox_pred(x)
        return logits, deltas.repeat(1, class_scores.shape[1] + 1)

    def extra_losses(self, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The embedding margin loss on foreground RoIs (labels 1..C; 0 is background)."""
        d2 = self._last_distances
        foreground = labels > 0
        if d2 is None or not bool(foreground.any()) or d2.shape[1] < 2:
            zero = self.reps.sum() * 0
            return {"loss_embedding": zero}
        nearest = d2[foreground].amin(-1)  # R x C: the closest representative of each class
        y = labels[foreground] - 1
        positive = nearest.gather(1, y[:, None]).squeeze(1)
        negative = nearest.scatter(1, y[:, None], float("inf")).amin(1)
        loss = F.relu(positive - negative + self.margin).mean()
        return {"loss_embedding": self.embedding_weight * loss}

    @torch.no_grad()
    def set_representatives(self, reps: torch.Tensor) -> None:
        """Replace the representatives (C' x K x e) with an episode's novel classes."""
        self.reps = nn.Parameter(reps.to(self.reps.device, self.reps.dtype).clone(), requires_grad=False)
