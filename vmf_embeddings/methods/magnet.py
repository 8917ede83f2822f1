"""Magnet loss (Rippel, Paluri, Dollar & Bourdev, "Metric Learning with Adaptive Density Discrimination",
ICLR 2016).

Each class is K k-means clusters of its training embeddings (the cluster index, refreshed from the whole
embedded training split). A batch from `sampler=magnet` holds M clusters x D examples: a seed cluster drawn in
proportion to its members' recorded losses, and its M-1 nearest clusters of other classes. With the batch's
own cluster means mu_m and the shared variance sigma^2 = sum |r - mu_own|^2 / (MD - 1),

    l_n = max(0, |r_n - mu_own|^2 / (2 sigma^2) + alpha + log sum_{m: class(m) != class(n)} exp(-|r_n - mu_m|^2 / (2 sigma^2)))

computed in log space (logsumexp: the reference code's exp() underflowed to NaN). `normalizer=sigma4` divides
by 2 sigma^4 instead, as the TensorFlow reference (pumpikano/tf-magnet-loss) and the PyTorch seed
(HaydenFaulkner/pytorch.repmet) do; the paper's form is scale-invariant, that one is not (docs/departures.md).

Prediction (the paper's evaluation): p(c | r) from the L nearest centroids, sum_{l: class(mu_l) = c}
exp(-|r - mu_l|^2 / (2 sigma_bar^2)), normalised, with sigma_bar^2 the running mean of the training batches'
variances (a true mean: the seed's started with a spurious 0). A class with no centroid among the L nearest
gets probability 1e-12 of the mass, so log-probabilities stay finite.
"""

from __future__ import annotations

import math
from typing import Dict, Optional

import numpy as np
import torch

from vmf_embeddings.errors import ConfigError
from vmf_embeddings.methods.base import Method
from vmf_embeddings.methods.clustering import per_class_kmeans

NORMALIZERS = ("paper", "sigma4")
FLOOR = 1e-12


def magnet_losses(embeddings: torch.Tensor, labels: torch.Tensor, n_clusters: int, per_cluster: int,
                  alpha: float = 1.0, normalizer: str = "paper"):
    """(per-example losses MD, batch variance) of a batch laid out as M blocks of D (the class of a block is the
    label of its first element)."""
    m, d = int(n_clusters), int(per_cluster)
    r = embeddings.reshape(m, d, -1)
    means = r.mean(1)  # M x dim
    own = (r - means[:, None]).pow(2).sum(-1)  # M x D
    variance = own.sum() / (m * d - 1)
    scale = 2 * variance if normalizer == "paper" else 2 * variance.pow(2)
    flat = embeddings.reshape(m * d, -1)
    distances = (flat[:, None, :] - means[None]).pow(2).sum(-1)  # MD x M
    block_class = labels.reshape(m, d)[:, 0]
    example_class = block_class.repeat_interleave(d)
    impostor = block_class[None, :] != example_class[:, None]  # bool mask
    log_impostors = torch.logsumexp((-distances / scale).masked_fill(~impostor, -math.inf), dim=1)
    losses = torch.relu(own.reshape(-1) / scale + alpha + log_impostors)
    return losses, variance


class MagnetLoss(Method):
    """The magnet loss over a per-class k-means cluster index; L-nearest-cluster prediction."""

    geometry = "euclidean"
    fits_class_state = True
    steers_sampler = True

    def __init__(self, embedding_dim: int, n_classes: int, k_clusters: int = 1, m_clusters: int = 12,
                 d_per_cluster: int = 4, alpha: float = 1.0, normalizer: str = "paper", refresh_every: int = 0,
                 eval_neighbours: int = 128, seed: int = 0) -> None:
        super().__init__()
        if normalizer not in NORMALIZERS:
            raise ConfigError(f"method.params.normalizer={normalizer!r} must be one of {NORMALIZERS}")
        if int(d_per_cluster) < 2:
            raise ConfigError(f"method.params.d_per_cluster={d_per_cluster}: the batch variance needs D >= 2")
        if int(k_clusters) < 1 or int(m_clusters) < 2:
            raise ConfigError("method.params.k_clusters must be >= 1 and m_clusters >= 2 (a seed and an impostor)")
        self.n_classes, self.k = int(n_classes), int(k_clusters)
        self.m, self.d = int(m_clusters), int(d_per_cluster)
        self.alpha, self.normalizer = float(alpha), normalizer
        self.refresh_every, self.eval_neighbours, self.seed = int(refresh_every), int(eval_neighbours), int(seed)
        self.register_buffer("centroids", torch.zeros(self.n_classes * self.k, int(embedding_dim)))
        self.register_buffer("cluster_class", torch.arange(self.n_classes).repeat_interleave(self.k))
        self.register_buffer("assignments", torch.zeros(0, dtype=torch.long))  # one per training example
        self.register_buffer("example_losses", torch.zeros(0))  # last recorded loss per training example
        self.register_buffer("variance_sum", torch.zeros((), dtype=torch.float64))
        self.register_buffer("variance_count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("refreshes", torch.zeros((), dtype=torch.long))
        self._context = None
        self._sampler = None
        self._last_losses: Optional[torch.Tensor] = None

    # -- the cluster index --------------------------------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The per-example buffers are sized by the training split: take the saved size.
        for name in ("assignments", "example_losses"):
            key = prefix + name
            if key in state_dict:
                setattr(self, name, torch.empty_like(state_dict[key]).to(getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def refresh(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Per-class k-means of the embedded training split; each example joins its nearest own-class centre."""
        centres, assignment = per_class_kmeans(features.float(), labels, self.n_classes, self.k,
                                               seed=self.seed + int(self.refreshes))
        self.centroids.copy_(centres.to(self.centroids.dtype))
        if self.assignments.shape != assignment.shape:
            self.assignments = assignment.clone()
            self.example_losses = torch.zeros(assignment.shape[0], device=assignment.device)
        else:
            self.assignments.copy_(assignment)
        self.refreshes += 1

    def _refresh_from_context(self) -> None:
        model = self._context.model
        was_training = model.training
        train = self._context.embed_train()
        self.refresh(train.features, train.labels)
        model.train(was_training)

    def on_train_start(self, context, resumed: bool) -> None:
        self._context = context
        sampler = getattr(context, "sampler", None)
        if sampler is None or not hasattr(sampler, "attach"):
            raise ConfigError("method=magnet draws its batches from its cluster index: use sampler=magnet")
        sampler.attach(self)
        self._sampler = sampler
        if not resumed or self.assignments.numel() == 0:
            self._refresh_from_context()

    def after_step(self, step: int) -> None:
        if self._last_losses is not None and self._sampler is not None and self._sampler.last_batch is not None:
            index = self._sampler.last_batch.to(self.example_losses.device)
            self.example_losses[index] = self._last_losses.to(self.example_losses.dtype)
        if self.refresh_every > 0 and (step + 1) % self.refresh_every == 0 and self._context is not None:
            self._refresh_from_context()

    def fit_class_state(self, train) -> None:
        """Before every validation and extraction: the index from the current embedding."""
        self.refresh(train.features, train.labels)

    # -- training -----------------------------------------------------------------------------------
    def loss(self, embeddings, labels, targets=None):
        if embeddings.shape[0] != self.m * self.d:
            raise ConfigError(
                f"method=magnet expects batches of {self.m} clusters x {self.d} examples from sampler=magnet, got "
                f"{embeddings.shape[0]} examples; use sampler=magnet"
            )
        losses, variance = magnet_losses(embeddings, labels, self.m, self.d, self.alpha, self.normalizer)
        with torch.no_grad():
            self._last_losses = losses.detach()
            self.variance_sum += variance.detach().double()
            self.variance_count += 1
        return losses.mean()

    # -- prediction ---------------------------------------------------------------------------------
    def mean_variance(self) -> torch.Tensor:
        return (self.variance_sum / self.variance_count.clamp_min(1)).clamp_min(1e-12)

    def logits(self, embeddings, n_samples=None, generator=None):
        variance = self.mean_variance().to(embeddings.dtype)
        scale = 2 * variance if self.normalizer == "paper" else 2 * variance.pow(2)
        distances = torch.cdist(embeddings.float(), self.centroids.float()).pow(2)  # N x C*K
        nearest = min(self.eval_neighbours, distances.shape[1])
        d, index = distances.topk(nearest, dim=1, largest=False)
        weights = torch.softmax(-d / scale, dim=1)
        probs = torch.zeros(embeddings.shape[0], self.n_classes, dtype=weights.dtype, device=weights.device)
        probs.scatter_add_(1, self.cluster_class[index], weights)
        return torch.log((1 - FLOOR) * probs + FLOOR / self.n_classes)

    def log_probs(self, embeddings, n_samples=None, generator=None):
        return self.logits(embeddings)

    def tracked_scalars(self) -> Dict[str, float]:
        return {"magnet_variance": float(self.mean_variance())}

    def export(self) -> Dict[str, np.ndarray]:
        return {"centroids": self.centroids.detach().float().cpu().numpy(),
                "centroid_class": self.cluster_class.detach().cpu().numpy(),
                "magnet_variance": np.float64(self.mean_variance())}
