"""RepMet (Karlinsky et al., "RepMet: Representative-based Metric Learning for Classification and Few-shot
Object Detection", CVPR 2019): the DML sub-network's classification head.

The backbone output f(x) goes through an embedding module (Linear + ReLU layers, `hidden`, then Linear to `rep_dim`)
and is L2-normalised: E. Each class i has K learnt representatives R_ij (a parameter of shape C*K x e, row
i*K + j), initialised by per-class k-means of the embedded training split when a run starts. With squared
distances d_ij = |E - R_ij|^2 (the official code's and the seed's choice):

- mode likelihood p_ij = exp(-d_ij / (2 sigma^2)); class score P(C=i) = max_j p_ij; background score
  P(B) = 1 - max_i P(C=i) (exported per sample as `background_score`);
- embedding loss L_emb = max(0, min_j d_yj - min_{i != y, j} d_ij + alpha) with bool masks (the seed's `~` on a
  uint8 mask gave 254/255 and silently broke it), plus `ce_weight` x the cross-entropy of the soft posterior
  sum_j p_ij / sum_ij p_ij (the paper's CE term; the seed trained with L_emb alone: ce_weight=0);
- prediction: the soft posterior, in log space.
"""

from __future__ import annotations

import math
from typing import Dict, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vmf_embeddings.errors import ConfigError
from vmf_embeddings.methods.base import Method
from vmf_embeddings.methods.clustering import per_class_kmeans


def to_official_layout(reps: torch.Tensor, n_classes: int, k_reps: int) -> torch.Tensor:
    """C*K x e (row i*K + j = class i, mode j: the seed's and ours) -> e x K x C (the official RepMet code's)."""
    return reps.reshape(n_classes, k_reps, -1).permute(2, 1, 0).contiguous()


def from_official_layout(reps: torch.Tensor) -> torch.Tensor:
    """e x K x C -> C*K x e."""
    e, k, c = reps.shape
    return reps.permute(2, 1, 0).reshape(c * k, e).contiguous()


class RepMet(Method):
    geometry = "cosine"

    def __init__(self, embedding_dim: int, n_classes: int, k_reps: int = 3, rep_dim: int = 0,
                 hidden: Sequence[int] = (), sigma: float = 0.5, alpha: float = 1.0, ce_weight: float = 0.0,
                 init: str = "kmeans", seed: int = 0) -> None:
        super().__init__()
        if int(k_reps) < 1 or float(sigma) <= 0:
            raise ConfigError(f"method.params.k_reps={k_reps} must be >= 1 and sigma={sigma} > 0")
        if init not in ("kmeans", "random"):
            raise ConfigError(f"method.params.init={init!r} must be kmeans or random")
        self.n_classes, self.k = int(n_classes), int(k_reps)
        self.rep_dim = int(rep_dim) or int(embedding_dim)
        layers, width = [], int(embedding_dim)
        for size in hidden or ():
            layers += [nn.Linear(width, int(size)), nn.ReLU(inplace=True)]
            width = int(size)
        if layers or self.rep_dim != int(embedding_dim):
            layers.append(nn.Linear(width, self.rep_dim))
        self.embed = nn.Sequential(*layers)
        self.sigma, self.alpha, self.ce_weight = float(sigma), float(alpha), float(ce_weight)
        self.init, self.seed = init, int(seed)
        generator = torch.Generator().manual_seed(self.seed)
        self.reps = nn.Parameter(F.normalize(torch.randn(self.n_classes * self.k, self.rep_dim, generator=generator),
                                             dim=-1))
        self.register_buffer("rep_class", torch.arange(self.n_classes).repeat_interleave(self.k))

    def embedding(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.embed(features), dim=-1)

    def retrieval_embeddings(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.embedding(embeddings)

    def distances(self, features: torch.Tensor) -> torch.Tensor:
        """N x C x K squared distances |E - R_ij|^2."""
        e = self.embedding(features)
        d = (e[:, None, :] - self.reps[None].to(e.dtype)).pow(2).sum(-1)
        return d.reshape(e.shape[0], self.n_classes, self.k)

    def on_train_start(self, context, resumed: bool) -> None:
        """Representatives := per-class k-means centres of the embedded training split (fresh runs)."""
        if resumed or self.init != "kmeans":
            return
        train = context.embed_train()
        with torch.no_grad():
            e = self.embedding(train.features)
            centres, _ = per_class_kmeans(e.float(), train.labels, self.n_classes, self.k, seed=self.seed)
            self.reps.copy_(centres.to(self.reps.dtype))

    def loss(self, embeddings, labels, targets=None):
        d = self.distances(embeddings)  # N x C x K
        closest = d.min(dim=2).values  # N x C
        own = F.one_hot(labels, self.n_classes).bool()
        correct = closest.masked_fill(~own, math.inf).min(dim=1).values
        wrong = closest.masked_fill(own, math.inf).min(dim=1).values
        loss = torch.relu(correct - wrong + self.alpha).mean()
        if self.ce_weight > 0:
            loss = loss + self.ce_weight * F.nll_loss(self._soft_log_posterior(d), labels)
        return loss

    def _soft_log_posterior(self, d: torch.Tensor) -> torch.Tensor:
        log_p = -d / (2 * self.sigma ** 2)  # log p_ij
        per_class = torch.logsumexp(log_p, dim=2)
        return per_class - torch.logsumexp(per_class, dim=1, keepdim=True)

    def logits(self, embeddings, n_samples=None, generator=None):
        return self._soft_log_posterior(self.distances(embeddings))

    def class_scores(self, embeddings: torch.Tensor) -> torch.Tensor:
        """N x C unnormalised P(C=i) = max_j p_ij (each in (0, 1]; they may sum above 1)."""
        return torch.exp(-self.distances(embeddings) / (2 * self.sigma ** 2)).max(dim=2).values

    def export_batch(self, embeddings: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"background_score": 1 - self.class_scores(embeddings).max(dim=1).values}

    def export(self) -> Dict[str, np.ndarray]:
        return {"representatives": self.reps.detach().float().cpu().numpy(),
                "representative_class": self.rep_class.cpu().numpy(), "sigma": np.float64(self.sigma)}
