"""vMF softmax (Scott, Gallagher & Mozer, ICCV 2021).

Instance embeddings z = s f(x) and class weights w_c are von Mises-Fisher distributions whose mean
direction is the vector's direction and whose concentration kappa is its norm. The loss is a Jensen
upper bound of the expected cross-entropy E[-log softmax_y(beta z~^T w~)]: z~ is Monte-Carlo sampled
(reparameterised), the class draws w~ are integrated analytically with the vMF moment-generating
function E[exp(t^T w~)] = C_d(kappa) / C_d(|kappa mu + t|).
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, Optional

import numpy as np
import torch
from torch import nn

from vmf_embeddings.errors import ConfigError
from vmf_embeddings.methods import bessel
from vmf_embeddings.methods.base import Method
from vmf_embeddings.methods.temperature import TemperatureMixin
from vmf_embeddings.methods.vmf_distribution import SAMPLERS, sample_vmf

NORMALIZERS = ("exact", "paper")


def kappa_scale(kappa_confidence: float, dim: int) -> float:
    """sigma = kc/(1-kc^2) (d-1)/sqrt(d): per-coordinate scale giving |w| ~ kc(d-1)/(1-kc^2), i.e. A_d ~ kc."""
    return kappa_confidence / (1.0 - kappa_confidence**2) * (dim - 1) / math.sqrt(dim)


class VMFSoftmax(TemperatureMixin, Method):
    """The paper's head. `normalizer="exact"` uses the exact log C_d and A_d (bessel.py: for float32 a fused
    evaluation at about the cost of the approximation, within 1e-6 relative of mpmath for d <= 2048 and kappa <= 1e5);
    `normalizer="paper"` uses the original's closed-form approximations (A~ has up to 25% error at d = 3), for
    faithful reproduction. `sampler="exact"` draws with Wood's exact envelope; `sampler="original"` restores the
    original's large-kappa shortcut of the rejection sampler, which biases the draws (vmf_distribution.py), for
    parity runs only.

    Departures from the original, on purpose (docs/departures.md): the first term uses logsumexp (the
    original summed exps, overflowing float32 for large beta); z_kappa_mult is a registered buffer so it
    lives in the checkpoint (the original kept a plain attribute, lost on reload); class weights get no
    weight decay, as the original intended; the sampler uses the exact Wood envelope by default.
    """

    geometry = "vmf"
    sampled_prediction = True

    def __init__(
        self,
        embedding_dim: int,
        n_classes: int,
        init_temp: float = 0.0,
        learn_temp: bool = True,
        kappa_confidence: float = 0.4,
        n_samples: int = 10,
        normalizer: str = "exact",
        sampler: str = "exact",
    ) -> None:
        super().__init__()
        if embedding_dim < 2:
            raise ValueError(
                f"vmf_softmax needs arch.params.embedding_dim >= 2 (got {embedding_dim}): a vMF lives on S^(d-1)"
            )
        if normalizer not in NORMALIZERS:
            raise ValueError(f"method.params.normalizer={normalizer!r} is not one of {NORMALIZERS}")
        if sampler not in SAMPLERS:
            raise ConfigError(f"method.params.sampler={sampler!r} is not one of {', '.join(SAMPLERS)}")
        if not 0.0 < kappa_confidence < 1.0:
            raise ValueError(f"method.params.kappa_confidence={kappa_confidence} must lie in (0, 1)")
        self.dim = int(embedding_dim)
        self.n_samples = int(n_samples)
        self.normalizer = normalizer
        self.sampler = sampler
        self.kappa_confidence = float(kappa_confidence)
        self.classifier = nn.Linear(embedding_dim, n_classes, bias=False)
        nn.init.normal_(self.classifier.weight, 0.0, kappa_scale(kappa_confidence, embedding_dim))
        self._init_temperature(init_temp, learn_temp)
        self.register_buffer("z_kappa_mult", torch.tensor(1.0))
        self.register_buffer("calibrated", torch.tensor(False))
        self.register_buffer("_kappa_sum", torch.tensor(0.0), persistent=False)
        self.register_buffer("_kappa_count", torch.tensor(0.0), persistent=False)

    # -- the two special functions, exact or the paper's approximation -------------------------------
    def log_normalizer(self, kappa: torch.Tensor) -> torch.Tensor:
        if self.normalizer == "exact":
            return bessel.log_vmf_normalizer(self.dim, kappa)
        return bessel.log_vmf_normalizer_approx(self.dim, kappa)

    def mean_resultant_length(self, kappa: torch.Tensor) -> torch.Tensor:
        if self.normalizer == "exact":
            return bessel.mean_resultant_length(self.dim, kappa)
        return bessel.bessel_ratio_approx(self.dim, kappa)

    # -- embeddings -----------------------------------------------------------------------------------
    def retrieval_embeddings(self, embeddings: torch.Tensor) -> torch.Tensor:
        return embeddings * self.z_kappa_mult

    @staticmethod
    def _dtype(embeddings: torch.Tensor) -> torch.dtype:
        """At least float32 (AMP hands over bf16 features), float64 when the caller works in float64."""
        return torch.promote_types(embeddings.dtype, torch.float32)

    def _mean_and_kappa(self, embeddings: torch.Tensor):
        z = self.retrieval_embeddings(embeddings.to(self._dtype(embeddings)))
        kappa = z.norm(dim=-1).clamp_min(1e-6)
        return z / kappa[:, None], kappa

    def on_train_start(self, context, resumed: bool) -> None:
        """A fresh run sets z_kappa_mult from one pass over the augmented training split in train mode,
        as the original; on resume the buffer already holds it."""
        if not resumed:
            self.calibrate([context.embed_train(train_mode=True).features])

    @torch.no_grad()
    def calibrate(self, embeddings: Iterable[torch.Tensor]) -> None:
        """z_kappa_mult = (1/mean|f_j|) sigma, so instance kappa starts at the order of class kappa."""
        total, count = 0.0, 0
        for batch in embeddings:
            total = total + batch.float().abs().sum()
            count += batch.numel()
        mean_abs = float(total) / max(count, 1)
        self.z_kappa_mult.fill_(kappa_scale(self.kappa_confidence, self.dim) / max(mean_abs, 1e-12))
        self.calibrated.fill_(True)

    # -- training loss --------------------------------------------------------------------------------
    def loss(self, embeddings, labels, targets=None):
        mu, kappa = self._mean_and_kappa(embeddings)
        weights = self.classifier.weight.to(mu.dtype)
        class_kappa = weights.norm(dim=-1).clamp_min(1e-6)
        beta = self.beta.to(mu.dtype)
        z_samples = sample_vmf(mu, kappa, self.n_samples, sampler=self.sampler)  # S x N x D
        # |w_c + beta z~|^2 = kappa_c^2 + beta^2 + 2 beta <z~, w_c>  (|z~| = 1)
        cross = z_samples @ weights.t()  # S x N x C
        merged = (class_kappa.pow(2) + beta.pow(2) + 2 * beta * cross).clamp_min(1e-12).sqrt()
        log_ratio = self.log_normalizer(class_kappa) - self.log_normalizer(merged)
        first = torch.logsumexp(log_ratio, dim=-1).mean(0)  # N
        mean_cos = (mu * (weights[labels] / class_kappa[labels, None])).sum(-1)
        second = beta * self.mean_resultant_length(kappa) * self.mean_resultant_length(class_kappa[labels]) * mean_cos
        with torch.no_grad():
            self._kappa_sum += kappa.sum()
            self._kappa_count += kappa.numel()
        return (first - second).mean()

    # -- prediction -----------------------------------------------------------------------------------
    @torch.no_grad()
    def logits(
        self,
        embeddings: torch.Tensor,
        n_samples: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
        max_elements: int = 1 << 24,
    ) -> torch.Tensor:
        """log p(c|x) with p = (1/S) sum_s softmax_c(beta <z~_s, w~_sc>): the paper's "expected likelihood"
        prediction, fresh class draws for every (i, s). Chunked over rows so S x n x C x D stays bounded."""
        n_samples = int(n_samples or self.n_samples)
        mu, kappa = self._mean_and_kappa(embeddings)
        weights = self.classifier.weight.to(mu.dtype)
        class_kappa = weights.norm(dim=-1).clamp_min(1e-6)
        class_mu = weights / class_kappa[:, None]
        beta = self.beta.to(mu.dtype)
        n_classes, dim = weights.shape
        rows = max(1, max_elements // (n_samples * n_classes * dim))
        out = []
        for start in range(0, mu.shape[0], rows):
            m, k = mu[start : start + rows], kappa[start : start + rows]
            n = m.shape[0]
            z = sample_vmf(m, k, n_samples, generator=generator, sampler=self.sampler)  # S x n x D
            w = sample_vmf(
                class_mu.repeat(n_samples * n, 1), class_kappa.repeat(n_samples * n), 1, generator=generator,
                sampler=self.sampler,
            ).reshape(n_samples, n, n_classes, dim)
            log_probs = torch.log_softmax(beta * torch.einsum("snd,sncd->snc", z, w), dim=-1)
            out.append(torch.logsumexp(log_probs, dim=0) - math.log(n_samples))
        return torch.cat(out) if out else mu.new_zeros(0, n_classes)

    def log_probs(self, embeddings, n_samples=None, generator=None):
        """`logits` already are the Monte-Carlo log-probabilities."""
        return self.logits(embeddings, n_samples=n_samples, generator=generator).float()

    # -- bookkeeping ----------------------------------------------------------------------------------
    def tracked_scalars(self) -> Dict[str, float]:
        out = super().tracked_scalars()
        out["mean_class_kappa"] = float(self.classifier.weight.detach().norm(dim=-1).mean())
        out["z_kappa_mult"] = float(self.z_kappa_mult)
        if float(self._kappa_count) > 0:
            out["mean_kappa"] = float(self._kappa_sum / self._kappa_count)
            self._kappa_sum.zero_()
            self._kappa_count.zero_()
        return out

    def export(self) -> Dict[str, np.ndarray]:
        return {
            "weights": self.classifier.weight.detach().float().cpu().numpy(),
            "temperature": np.float32(torch.exp(self.temp.detach()).item()),
            "z_kappa_mult": np.float32(self.z_kappa_mult.item()),
        }

    def export_batch(self, embeddings: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"kappa": self._mean_and_kappa(embeddings)[1]}
