"""Prototypical Networks (Snell, Swersky & Zemel, NIPS 2017).

Training batches are episodes from `sampler=fewshot`: N classes x K supports, then N x Q queries, both
class-major. The prototype of a class is the mean of its support embeddings, c_k = (1/K) sum f(x_s), and a
query is classified by a softmax over negative distances: p(y = k | x) = softmax_k(-d(f(x), c_k)) with
d the squared Euclidean distance (the paper's choice) or, as an option, a scaled cosine distance. The loss
is the mean cross-entropy over the N x Q queries.

Departures from the PyTorch implementations it follows (orobix/Prototypical-Networks-for-Few-shot-Learning-
PyTorch and the ProtoNet/Magnet/RepMet code derived from it; docs/departures.md): accuracy never compares an
(N, 1) tensor with an (N,) one (their 1-query broadcast bug made accuracy about 1/N); closed-set prediction uses class means fitted on the whole
training split (`fit_class_state`), so a ProtoNet run is evaluated like every other method; few-shot
evaluation (eval.few_shot) uses the same nearest-prototype rule on the test classes.
"""

from __future__ import annotations

from typing import Dict

import numpy as np
import torch
import torch.nn.functional as F

from vmf_embeddings.errors import ConfigError
from vmf_embeddings.methods.base import Method
from vmf_embeddings.methods.clustering import class_means

#: distance option -> the geometry its embeddings are searched in
DISTANCES = {"squared_euclidean": "euclidean", "cosine": "cosine"}


COSINE = {"cosine"}


def squared_distances(queries: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """M x N matrix of |q - c|^2, formed directly (not via the expanded inner product, which cancels)."""
    return (queries[:, None, :] - prototypes[None, :, :]).pow(2).sum(-1)


class PrototypicalNetwork(Method):
    """Episode loss over support means; nearest-prototype prediction."""

    fits_class_state = True
    episodic = True

    def __init__(self, embedding_dim: int, n_classes: int, n_way: int, k_shot: int, n_query: int,
                 distance: str = "squared_euclidean", cosine_scale: float = 10.0, temperature: float = 1.0) -> None:
        super().__init__()
        if distance not in DISTANCES:
            raise ConfigError(f"method.params.distance={distance!r} must be one of {tuple(DISTANCES)}")
        self.distance = distance
        self.geometry = DISTANCES[distance]
        self.n_way, self.k_shot, self.n_query = int(n_way), int(k_shot), int(n_query)
        self.cosine_scale = float(cosine_scale)
        if not float(temperature) > 0:
            raise ConfigError(f"method.params.temperature={temperature!r} must be > 0")
        self.temperature = float(temperature)  # -d^2 / T (SSL-FEW-SHOT's T = 128 in the spherization paper)
        self.register_buffer("class_means", torch.zeros(int(n_classes), int(embedding_dim)))
        self.register_buffer("fitted", torch.tensor(False))

    def scores(self, queries: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """M x N logits -d(q, c_k): negative squared distances (over the temperature), or scaled cosines."""
        if self.distance in COSINE:
            return self.cosine_scale * F.normalize(queries, dim=-1) @ F.normalize(prototypes, dim=-1).t()
        return -squared_distances(queries, prototypes) / self.temperature

    def episode_logits(self, embeddings: torch.Tensor):
        """(query logits N*Q x N, query targets) of an episode batch laid out as `sampler=fewshot` makes it."""
        n, k, q = self.n_way, self.k_shot, self.n_query
        if embeddings.shape[0] != n * (k + q):
            raise ConfigError(
                f"method=protonet expects episodes of {n} x ({k} + {q}) = {n * (k + q)} images from sampler=fewshot, "
                f"got a batch of {embeddings.shape[0]}; use sampler=fewshot (its n_way, k_shot, n_query)"
            )
        prototypes = embeddings[: n * k].reshape(n, k, -1).mean(1)
        queries = embeddings[n * k:]
        targets = torch.arange(n, device=embeddings.device).repeat_interleave(q)
        return self.scores(queries, prototypes), targets

    def loss(self, embeddings, labels, targets=None):
        logits, query_targets = self.episode_logits(embeddings)
        return F.cross_entropy(logits, query_targets)

    @torch.no_grad()
    def fit_class_state(self, train) -> None:
        """Prototypes of every training class from the whole training split (closed-set prediction)."""
        means, _ = class_means(train.features.to(self.class_means.dtype), train.labels, self.class_means.shape[0])
        self.class_means.copy_(means)
        self.fitted.fill_(True)

    def logits(self, embeddings, n_samples=None, generator=None):
        if not bool(self.fitted):
            raise RuntimeError("PrototypicalNetwork predicts classes after fit_class_state (the runner calls it)")
        return self.scores(embeddings.to(self.class_means.dtype), self.class_means)

    def export(self) -> Dict[str, np.ndarray]:
        return {"prototypes": self.class_means.detach().float().cpu().numpy()}
