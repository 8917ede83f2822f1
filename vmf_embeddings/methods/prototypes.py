"""Learnt, metric-guided and running-mean prototypes (Garnot & Landrieu, "Leveraging Class Hierarchies with
Metric-Guided Prototype Learning", BMVC 2021, code github.com/VSainteuf/metric-guided-prototypes-pytorch;
DeepNCM: Guerriero et al., ICLR workshops 2018).

- `LearntPrototypes`: one learnt prototype per class (uniform [0, 1) init, as the original); logits = -d(f(x), pi_k)
  with d the plain Euclidean distance (default), its square, cosine distance, or pseudo-Huber.
- `GuidedPrototypes`: adds lambda x a regulariser tying the prototypes' pairwise distances to the class cost
  matrix D (the `cost` group): the scale-free squared distortion min_s mean(((s d_kl - D_kl) / D_kl)^2) with
  s* = sum a / sum a^2, a = d / D (default), the fixed-scale one (s = 1, the original before its July 2021
  change), or the rank loss over sampled class triplets (softplus form: the original's log(1 + exp) overflowed).
  Vectorised over the C x C matrix.
- `DeepNCM`: running class means updated in training mode before the logits -|f(x) - mu_c|^2, with the
  per-class counters in registered buffers (the original kept them outside the state dict, so a resumed run
  restarted its means' weights).

Departures: no CUDA hard-coding (the original defaulted to device="cuda"); a zero distance has a finite gradient
(docs/departures.md).
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vmf_embeddings.errors import ConfigError
from vmf_embeddings.methods.base import Method
from vmf_embeddings.methods.clustering import class_means

DISTANCES = ("euclidean", "squared_euclidean", "cosine", "pseudo_huber")
#: distance options measured between unit vectors (searched in the cosine geometry)
ANGULAR = {"cosine"}
REGULARIZERS = ("distortion", "distortion_fixed_scale", "rank")
SCALE_FREE = {"distortion"}


def safe_euclidean(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """N x M |x - y| with a zero (not NaN) gradient where the distance is 0."""
    sq = (x[:, None, :] - y[None, :, :]).pow(2).sum(-1)
    positive = sq > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, sq, torch.ones_like(sq))), torch.zeros_like(sq))


def pseudo_huber(d: torch.Tensor, delta: float) -> torch.Tensor:
    """delta (sqrt(1 + (d / delta)^2) - 1): ~ d^2 / (2 delta) near 0, ~ d - delta far away."""
    return delta * (torch.sqrt(1 + (d / delta) ** 2) - 1)


def pairwise_distances(points: torch.Tensor, distance: str = "euclidean") -> torch.Tensor:
    if distance in ANGULAR:
        unit = F.normalize(points, dim=-1)
        return 1 - unit @ unit.t()
    return safe_euclidean(points, points)


def distortion_loss(prototypes: torch.Tensor, cost: torch.Tensor, scale_free: bool = True,
                    distance: str = "euclidean") -> torch.Tensor:
    """min_s mean_{k != l} ((s d_kl - D_kl) / D_kl)^2 (s = 1 when not scale_free); s* = sum a / sum a^2."""
    off = ~torch.eye(cost.shape[0], dtype=torch.bool, device=cost.device)
    a = pairwise_distances(prototypes, distance)[off] / cost[off]
    scale = a.sum() / a.pow(2).sum().clamp_min(1e-12) if scale_free else torch.ones((), device=a.device)
    return (scale * a - 1).pow(2).mean()


def scale_free_distortion(prototypes: torch.Tensor, cost: torch.Tensor, distance: str = "euclidean") -> torch.Tensor:
    """The reported metric min_s mean |s d_kl - D_kl| / D_kl: s* = 1 / (a-weighted median of a = d / D)."""
    off = ~torch.eye(cost.shape[0], dtype=torch.bool, device=cost.device)
    a = (pairwise_distances(prototypes, distance)[off] / cost[off]).detach()
    positive = a[a > 0]
    if positive.numel() == 0:
        return torch.ones((), dtype=a.dtype)
    ordered = torch.sort(positive).values
    cumulative = torch.cumsum(ordered, 0)
    median = ordered[int(torch.nonzero(cumulative >= cumulative[-1] - cumulative)[0])]
    return (a / median - 1).abs().mean()


def rank_loss(prototypes: torch.Tensor, cost: torch.Tensor, n_triplets: int, generator: torch.Generator,
              distance: str = "euclidean") -> torch.Tensor:
    """Mean BCE of sigmoid(d_ij - d_ik) against [D_ij > D_ik] over sampled triplets of distinct classes."""
    c = cost.shape[0]
    if c < 3:
        raise ConfigError(f"method.params.regularizer=rank needs >= 3 classes for triplets, the dataset has {c}")
    i = torch.randint(0, c, (n_triplets,), generator=generator)
    off_j = torch.randint(1, c, (n_triplets,), generator=generator)
    off_k = torch.randint(1, c - 1, (n_triplets,), generator=generator)
    off_k = off_k + (off_k >= off_j).long()  # skip j: three distinct classes
    i, j, k = (t.to(cost.device) for t in (i, (i + off_j) % c, (i + off_k) % c))
    d = pairwise_distances(prototypes, distance)
    target = (cost[i, j] > cost[i, k]).to(d.dtype)
    return F.binary_cross_entropy_with_logits(d[i, j] - d[i, k], target)


class LearntPrototypes(Method):
    """One learnt prototype per class; logits = -distance."""

    geometry = "euclidean"

    def __init__(self, embedding_dim: int, n_classes: int, distance: str = "euclidean", huber_delta: float = 1.0,
                 seed: int = 0) -> None:
        super().__init__()
        if distance not in DISTANCES:
            raise ConfigError(f"method.params.distance={distance!r} must be one of {DISTANCES}")
        self.distance, self.huber_delta = distance, float(huber_delta)
        self.geometry = "cosine" if distance in ANGULAR else "euclidean"
        generator = torch.Generator().manual_seed(int(seed))
        self.prototypes = nn.Parameter(torch.rand(int(n_classes), int(embedding_dim), generator=generator))

    def distances(self, embeddings: torch.Tensor) -> torch.Tensor:
        p = self.prototypes.to(embeddings.dtype)
        if self.distance in ANGULAR:
            return 1 - F.normalize(embeddings, dim=-1) @ F.normalize(p, dim=-1).t()
        d = safe_euclidean(embeddings, p)
        transform = {"squared_euclidean": lambda v: v.pow(2), "pseudo_huber": lambda v: pseudo_huber(v, self.huber_delta)}
        return transform.get(self.distance, lambda v: v)(d)

    def logits(self, embeddings, n_samples=None, generator=None):
        return -self.distances(embeddings)

    def loss(self, embeddings, labels, targets=None):
        return F.cross_entropy(self.logits(embeddings), labels)

    def export(self) -> Dict[str, np.ndarray]:
        return {"prototypes": self.prototypes.detach().float().cpu().numpy()}


class GuidedPrototypes(LearntPrototypes):
    """Learnt prototypes + lambda x (distortion | rank) against the run's class cost matrix."""

    def __init__(self, embedding_dim: int, n_classes: int, distance: str = "euclidean", huber_delta: float = 1.0,
                 regularizer: str = "distortion", weight: float = 1.0, n_triplets: int = 10, seed: int = 0) -> None:
        super().__init__(embedding_dim, n_classes, distance, huber_delta, seed)
        if regularizer not in REGULARIZERS:
            raise ConfigError(f"method.params.regularizer={regularizer!r} must be one of {REGULARIZERS}")
        self.regularizer, self.weight, self.n_triplets = regularizer, float(weight), int(n_triplets)
        self.register_buffer("cost", torch.zeros(int(n_classes), int(n_classes)))
        self.register_buffer("has_cost", torch.tensor(False))
        self._generator = torch.Generator().manual_seed(int(seed) + 1)

    def set_cost(self, cost: Optional[np.ndarray]) -> None:
        if cost is None:
            raise ConfigError("method=guided_prototypes needs a class cost matrix: add cost=tree (or lca, ordinal, "
                              "csv cost.path=...)")
        self.cost.copy_(torch.as_tensor(cost, dtype=self.cost.dtype))
        self.has_cost.fill_(True)

    def on_train_start(self, context, resumed: bool) -> None:
        if not resumed:
            self.set_cost(getattr(context, "cost_matrix", None))

    @property
    def metric(self) -> str:
        """The distance between prototypes the regulariser compares with the cost matrix."""
        return self.geometry

    def regularization(self) -> torch.Tensor:
        metric = self.metric
        if self.regularizer == "rank":
            return rank_loss(self.prototypes, self.cost, self.n_triplets, self._generator, metric)
        return distortion_loss(self.prototypes, self.cost, self.regularizer in SCALE_FREE, metric)

    def loss(self, embeddings, labels, targets=None):
        return F.cross_entropy(self.logits(embeddings), labels) + self.weight * self.regularization()

    def tracked_scalars(self) -> Dict[str, float]:
        return {"prototype_distortion": float(scale_free_distortion(self.prototypes, self.cost, self.metric))}


class DeepNCM(Method):
    """Running class means as prototypes: mu_c <- (n_c mu_c + m_c) / (n_c + 1) per training batch containing c."""

    geometry = "euclidean"

    def __init__(self, embedding_dim: int, n_classes: int) -> None:
        super().__init__()
        self.register_buffer("means", torch.zeros(int(n_classes), int(embedding_dim)))
        self.register_buffer("counts", torch.zeros(int(n_classes)))

    @torch.no_grad()
    def update(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        batch_means, present = class_means(embeddings.detach().to(self.means.dtype), labels, self.means.shape[0])
        mask = (present > 0)[:, None]
        self.means.copy_(torch.where(mask, (self.counts[:, None] * self.means + batch_means) / (self.counts[:, None] + 1),
                                     self.means))
        self.counts += (present > 0).to(self.counts.dtype)

    def logits(self, embeddings, n_samples=None, generator=None):
        return -(embeddings[:, None, :] - self.means[None].to(embeddings.dtype)).pow(2).sum(-1)

    def loss(self, embeddings, labels, targets=None):
        if self.training:
            self.update(embeddings, labels)
        return F.cross_entropy(self.logits(embeddings), labels)

    def export(self) -> Dict[str, np.ndarray]:
        return {"prototypes": self.means.detach().float().cpu().numpy()}


def soft_targets(cost: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """Soft labels (Bertinetto et al., CVPR 2020): softmax_i(-beta D[y, i] / max D) for each label y."""
    scale = cost.max().clamp_min(1e-12)
    return torch.softmax(-float(beta) * cost[labels] / scale, dim=-1)


class SoftLabels(Method):
    """A linear classifier trained with cross-entropy against soft labels from the class cost matrix."""

    geometry = "euclidean"

    def __init__(self, embedding_dim: int, n_classes: int, beta: float = 10.0) -> None:
        super().__init__()
        self.classifier = nn.Linear(int(embedding_dim), int(n_classes), bias=False)
        self.beta = float(beta)
        self.register_buffer("cost", torch.zeros(int(n_classes), int(n_classes)))

    def on_train_start(self, context, resumed: bool) -> None:
        cost = getattr(context, "cost_matrix", None)
        if cost is None:
            raise ConfigError("method=soft_labels needs a class cost matrix: add cost=tree (or lca, ordinal, csv "
                              "cost.path=...)")
        if not resumed:
            self.cost.copy_(torch.as_tensor(cost, dtype=self.cost.dtype))

    def logits(self, embeddings, n_samples=None, generator=None):
        return self.classifier(embeddings)

    def loss(self, embeddings, labels, targets=None):
        target = soft_targets(self.cost.to(embeddings.dtype), labels, self.beta)
        return -(target * F.log_softmax(self.logits(embeddings), dim=-1)).sum(-1).mean()

    def export(self) -> Dict[str, np.ndarray]:
        return {"weights": self.classifier.weight.detach().float().cpu().numpy()}
