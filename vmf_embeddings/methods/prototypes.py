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
- `FixedPrototypes`: prototypes embedded from D alone before training (`embed_nomenclature`: SGD on the
  fixed-scale distortion or the rank loss from a uniform start, as the original), cached on disk, then frozen.
- `DeepNCM`: running class means updated in training mode before the logits -|f(x) - mu_c|^2, with the
  per-class counters in registered buffers (the original kept them outside the state dict, so a resumed run
  restarted its means' weights).

Departures: no CUDA hard-coding (the original defaulted to device="cuda"); a zero distance has a finite gradient
(docs/departures.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vmf_embeddings import distributed
from vmf_embeddings.errors import ConfigError
from vmf_embeddings.methods.base import Method
from vmf_embeddings.methods.clustering import class_means
from vmf_embeddings.methods.cost_sensitive import CostMatrixMixin

log = logging.getLogger(__name__)

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


def rank_loss(prototypes: torch.Tensor, cost: torch.Tensor, n_triplets: int,
              generator: Optional[torch.Generator] = None, distance: str = "euclidean") -> torch.Tensor:
    """Mean BCE of sigmoid(d_ij - d_ik) against [D_ij > D_ik] over sampled triplets of distinct classes.

    Without a `generator` the triplets come from the global RNG on the cost's device (checkpointed with the run,
    and no host-to-device copy per step)."""
    c = cost.shape[0]
    if c < 3:
        raise ConfigError(f"method.params.regularizer=rank needs >= 3 classes for triplets, the dataset has {c}")
    device = cost.device if generator is None else generator.device
    i = torch.randint(0, c, (n_triplets,), generator=generator, device=device)
    off_j = torch.randint(1, c, (n_triplets,), generator=generator, device=device)
    off_k = torch.randint(1, c - 1, (n_triplets,), generator=generator, device=device)
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


class CostPrototypes(CostMatrixMixin, LearntPrototypes):
    """Prototypes that live beside the run's class cost matrix; they report their distortion against it."""

    @property
    def metric(self) -> str:
        """The distance between prototypes that is compared with the cost matrix."""
        return self.geometry

    def tracked_scalars(self) -> Dict[str, float]:
        return {"prototype_distortion": float(scale_free_distortion(self.prototypes, self.cost, self.metric))}


class GuidedPrototypes(CostPrototypes):
    """Learnt prototypes + lambda x (distortion | rank) against the run's class cost matrix."""

    method_name = "guided_prototypes"

    def __init__(self, embedding_dim: int, n_classes: int, distance: str = "euclidean", huber_delta: float = 1.0,
                 regularizer: str = "distortion", weight: float = 1.0, n_triplets: int = 10, seed: int = 0) -> None:
        super().__init__(embedding_dim, n_classes, distance, huber_delta, seed)
        if regularizer not in REGULARIZERS:
            raise ConfigError(f"method.params.regularizer={regularizer!r} must be one of {REGULARIZERS}")
        self.regularizer, self.weight, self.n_triplets = regularizer, float(weight), int(n_triplets)
        self._init_cost(n_classes)

    def regularization(self) -> torch.Tensor:
        metric = self.metric
        if self.regularizer == "rank":
            return rank_loss(self.prototypes, self.cost, self.n_triplets, None, metric)
        return distortion_loss(self.prototypes, self.cost, self.regularizer in SCALE_FREE, metric)

    def loss(self, embeddings, labels, targets=None):
        return F.cross_entropy(self.logits(embeddings), labels) + self.weight * self.regularization()


EMBED_LOSSES = ("distortion", "rank")


def embed_nomenclature(cost: np.ndarray, dim: int, loss: str = "distortion", steps: int = 1000, lr: float = 1.0,
                       momentum: float = 0.9, weight_decay: float = 1e-4, n_triplets: int = 1000, seed: int = 0,
                       distance: str = "euclidean") -> np.ndarray:
    """C x dim prototypes whose distances follow the cost matrix, before any data is seen (the original's
    `embed_nomenclature`): uniform [0, 1) start, SGD with momentum on the fixed-scale squared distortion (a
    relative-stress metric MDS) or on the rank loss. The rank loss only orders distances, and it drives the
    closest classes (e.g. siblings) together without bound, so rank-placed prototypes of siblings nearly merge."""
    if loss not in EMBED_LOSSES:
        raise ConfigError(f"method.params.embed_loss={loss!r} must be one of {EMBED_LOSSES}")
    generator = torch.Generator().manual_seed(int(seed))
    d = torch.as_tensor(np.asarray(cost), dtype=torch.float64)
    points = torch.rand(d.shape[0], int(dim), generator=generator, dtype=torch.float64).requires_grad_(True)
    optimizer = torch.optim.SGD([points], lr=float(lr), momentum=float(momentum), weight_decay=float(weight_decay))
    for _ in range(int(steps)):
        optimizer.zero_grad()
        value = (rank_loss(points, d, int(n_triplets), generator, distance) if loss == "rank"
                 else distortion_loss(points, d, scale_free=False, distance=distance))
        value.backward()
        optimizer.step()
    out = points.detach().numpy()
    if not np.isfinite(out).all():
        raise ConfigError(f"embedding the cost matrix diverged (lr={lr}); lower method.params.embed_lr")
    return out


def cached_nomenclature(cost: np.ndarray, dim: int, cache_dir: Optional[str], **options) -> np.ndarray:
    """`embed_nomenclature`, computed once per (cost matrix, dim, options) and kept under `cache_dir`."""
    if not cache_dir:
        return embed_nomenclature(cost, dim, **options)
    from vmf_embeddings.checkpoint import atomic_write

    key = hashlib.sha1(np.ascontiguousarray(cost, dtype=np.float64).tobytes()
                       + json.dumps(options, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"nomenclature-{cost.shape[0]}c-{int(dim)}d-{key}.npy"
    if path.is_file():
        try:
            cached = np.load(path, allow_pickle=False)
            if cached.shape == (cost.shape[0], int(dim)) and np.isfinite(cached).all():
                return cached
        except (ValueError, OSError):
            pass
        log.warning("ignoring the unusable cached prototypes %s; embedding the cost matrix again", path)
    out = embed_nomenclature(cost, dim, **options)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda handle: np.save(handle, out))
    return out


class FixedPrototypes(CostPrototypes):
    """Prototypes embedded from the cost matrix alone when training starts, then frozen; cross-entropy only."""

    method_name = "fixed_prototypes"

    def __init__(self, embedding_dim: int, n_classes: int, distance: str = "euclidean", huber_delta: float = 1.0,
                 embed_loss: str = "distortion", embed_steps: int = 1000, embed_lr: float = 1.0,
                 embed_momentum: float = 0.9, embed_weight_decay: float = 1e-4, n_triplets: int = 1000,
                 seed: int = 0, cache_dir: Optional[str] = None) -> None:
        super().__init__(embedding_dim, n_classes, distance, huber_delta, seed)
        if embed_loss not in EMBED_LOSSES:
            raise ConfigError(f"method.params.embed_loss={embed_loss!r} must be one of {EMBED_LOSSES}")
        initial = self.prototypes.detach().clone()
        del self.prototypes  # a buffer, not a parameter: frozen, yet saved in every checkpoint
        self.register_buffer("prototypes", initial)
        self._init_cost(n_classes)
        self.cache_dir = cache_dir
        self.options = dict(loss=embed_loss, steps=int(embed_steps), lr=float(embed_lr),
                            momentum=float(embed_momentum), weight_decay=float(embed_weight_decay),
                            n_triplets=int(n_triplets), seed=int(seed), distance=self.geometry)

    def on_train_start(self, context, resumed: bool) -> None:
        super().on_train_start(context, resumed)
        if not resumed:
            cost = self.cost.double().cpu().numpy()
            placed = cached_nomenclature(cost, self.prototypes.shape[1], self.cache_dir, **self.options)
            self.prototypes.copy_(torch.as_tensor(placed, dtype=self.prototypes.dtype))


class DeepNCM(Method):
    """Running class means as prototypes: mu_c <- (n_c mu_c + m_c) / (n_c + 1) per training batch containing c."""

    geometry = "euclidean"

    def __init__(self, embedding_dim: int, n_classes: int) -> None:
        super().__init__()
        self.register_buffer("means", torch.zeros(int(n_classes), int(embedding_dim)))
        self.register_buffer("counts", torch.zeros(int(n_classes)))

    @torch.no_grad()
    def update(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        """One running-mean step with this batch's class means; under torchrun the batch is the global one (every
        rank's share summed), so all ranks hold the means a one-process run at the same global batch would."""
        batch_means, present = class_means(embeddings.detach().to(self.means.dtype), labels, self.means.shape[0])
        if distributed.world().enabled:  # one collective of C x (D + 1) numbers per step
            total = distributed.all_reduce_sum(torch.cat([batch_means * present[:, None], present[:, None]], 1))
            present = total[:, -1]
            batch_means = total[:, :-1] / present.clamp_min(1)[:, None]
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
