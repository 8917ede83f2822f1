"""Hyperspherical Prototype Networks (Mettes, van der Pol and Snoek, NeurIPS 2019): heads with fixed
prototypes on the unit sphere, placed before training (`vmf_embeddings.prototypes`) and never updated.

* HPNClassifier: loss (1 - cos(z, p_y))^2, prediction argmax_k cos(z, p_k).
* HPNRegressor: two opposite prototypes p_u = e_0, p_l = -e_0; targets in [lower, upper] are encoded to
  r in [-1, 1] and fitted by (r - cos(z, p_u))^2; predictions are decoded back to target units.
* HPNJoint: the official 47-d OmniArt layout: the year prototype is e_0 and the K style prototypes live
  in the orthogonal coordinates z[1:]; loss (1 - w) L_r + w L_c.

Departures from the originals (psmmettes/hpn and its reimplementation; docs/departures.md):
* loss_reduction "mean" by default (the runner's contract), where both originals *sum* over the batch.
  The gradient is then B times smaller: to reproduce the paper use loss_reduction=sum with its
  lr (0.01) and weight decay (1e-4), as conf/experiment/hpn_* do. Mean with lr x B is *not* equivalent
  once weight decay is on (the decay step would grow B-fold too).
* prototypes, bounds and the softmax scale are registered buffers, so they are in every checkpoint and
  move with .to(device) (the official prototypes were a plain tensor attribute, left behind on .to(device)).
* regression targets arrive raw (in years) and are encoded inside the loss; predictions are always
  decoded, so train and test MAE share units (the reimplementation reported MAE in normalised years).
* joint and classification losses ignore label -1 (OmniArt test styles unseen in training).

Softmax scale (the originals have none; they only take the argmax): logits = s * cos(z, p_k) with s
chosen so that an output lying exactly on its class prototype gets softmax probability
`prototype_confidence` (default 0.99) averaged over classes. The rule adapts s to K and to how close
the prototypes are (a tight layout needs a larger s for the same confidence); `logit_scale` overrides it.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F

from vmf_embeddings.errors import ConfigError
from vmf_embeddings.methods.base import Method
from vmf_embeddings.prototypes import PAPER_SEED, load_or_place

REDUCTIONS = ("mean", "sum")
EPS = 1e-9  # the official nn.CosineSimilarity eps


def cosine_to(embeddings: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """N x K cosines between outputs and unit-norm prototypes (normalise(z) . P^T)."""
    return F.normalize(embeddings, dim=-1, eps=EPS) @ prototypes.t()


def encode_targets(values: torch.Tensor, lower: float, upper: float) -> torch.Tensor:
    """Paper's r = 2 (y - v_l) / (v_u - v_l) - 1, mapping [lower, upper] onto [-1, 1]."""
    return 2.0 * (values - lower) / (upper - lower) - 1.0


def decode_targets(cosines: torch.Tensor, lower: float, upper: float) -> torch.Tensor:
    """Inverse of encode_targets; cosines in [-1, 1] land in [lower, upper]."""
    return lower + (upper - lower) * (cosines + 1.0) / 2.0


def auto_logit_scale(prototypes: np.ndarray, confidence: float = 0.99) -> float:
    """Smallest s with mean_y softmax(s * P p_y)_y >= confidence, by bisection (monotone in s)."""
    p = np.asarray(prototypes, dtype=np.float64)
    n_classes = p.shape[0]
    if n_classes < 2:
        return 1.0
    if not 1.0 / n_classes < confidence < 1.0:
        raise ConfigError(f"prototype_confidence={confidence} must lie in (1/K, 1) = ({1.0 / n_classes:.4g}, 1)")
    gaps = 1.0 - p @ p.T  # >= 0; the diagonal is 0

    def mean_confidence(scale: float) -> float:
        return float(np.mean(1.0 / np.exp(np.logaddexp.reduce(-scale * gaps, axis=1))))

    low, high = 0.0, 1.0
    while mean_confidence(high) < confidence:
        high *= 2.0
        if high > 1e6:
            break
    for _ in range(60):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if mean_confidence(mid) < confidence else (low, mid)
    return high


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    return values.sum() if reduction == "sum" else values.mean()


def _check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ConfigError(f"method.params.loss_reduction={reduction!r} must be one of {REDUCTIONS}")
    return reduction


def _plain(options: Any) -> Dict[str, Any]:
    """Hydra passes nested nodes as DictConfig; the cache key needs plain values."""
    if options is None:
        return {}
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(options, DictConfig):
            return dict(OmegaConf.to_container(options, resolve=True))
    except ImportError:  # pragma: no cover - omegaconf ships with hydra
        pass
    return dict(options)


class _PrototypeMixin:
    """Class prototypes from the placement cache, the softmax scale, and the masked squared-cosine loss."""

    def _init_class_prototypes(self, n_classes: int, dim: int, placement: str, placement_seed: int,
                               cache_dir: Optional[str], word_vectors: Optional[str], privileged_weight: float,
                               n_positives: Optional[int], placement_options: Any, logit_scale: Optional[float],
                               prototype_confidence: float) -> np.ndarray:
        prototypes = load_or_place(
            int(n_classes), int(dim), method=str(placement), seed=int(placement_seed), cache_dir=cache_dir,
            word_vectors=word_vectors, privileged_weight=float(privileged_weight), n_positives=n_positives,
            options=_plain(placement_options),
        )
        scale = float(logit_scale) if logit_scale is not None else auto_logit_scale(prototypes, prototype_confidence)
        self.register_buffer("logit_scale", torch.tensor(scale, dtype=torch.float32))
        return prototypes

    @staticmethod
    def _class_loss(cosines_to_targets: torch.Tensor, labels: torch.Tensor, reduction: str) -> torch.Tensor:
        valid = labels >= 0
        per_sample = (1.0 - cosines_to_targets) ** 2
        if reduction == "sum":
            return (per_sample * valid).sum()
        return (per_sample * valid).sum() / valid.sum().clamp(min=1)


class HPNClassifier(_PrototypeMixin, Method):
    """Fixed-prototype classification: loss (1 - cos(z, p_y))^2, prediction argmax_k cos(z, p_k)."""

    geometry = "cosine"
    task = "classification"

    def __init__(self, embedding_dim: int, n_classes: int, placement: str = "converged",
                 placement_seed: int = PAPER_SEED, cache_dir: Optional[str] = "prototypes",
                 word_vectors: Optional[str] = None, privileged_weight: float = 1.0, n_positives: Optional[int] = 2,
                 placement_options: Optional[Dict[str, Any]] = None, loss_reduction: str = "mean",
                 logit_scale: Optional[float] = None, prototype_confidence: float = 0.99) -> None:
        super().__init__()
        self.loss_reduction = _check_reduction(loss_reduction)
        prototypes = self._init_class_prototypes(
            n_classes, embedding_dim, placement, placement_seed, cache_dir, word_vectors, privileged_weight,
            n_positives, placement_options, logit_scale, prototype_confidence)
        self.register_buffer("prototypes", torch.from_numpy(prototypes).float())

    def cosines(self, embeddings: torch.Tensor) -> torch.Tensor:
        return cosine_to(embeddings, self.prototypes)

    def loss(self, embeddings, labels, targets=None):
        target_protos = self.prototypes[labels.clamp(min=0)]
        cos = (F.normalize(embeddings, dim=-1, eps=EPS) * target_protos).sum(dim=-1)
        return self._class_loss(cos, labels, self.loss_reduction)

    def logits(self, embeddings, n_samples=None, generator=None):
        return self.logit_scale * self.cosines(embeddings)

    def export(self) -> Dict[str, np.ndarray]:
        return {"prototypes": self.prototypes.detach().cpu().numpy(),
                "logit_scale": np.float32(self.logit_scale.item())}


class _RegressionMixin:
    """Year prototype p_u, the [lower, upper] bounds, and the (r - cos(z, p_u))^2 loss."""

    def _init_bounds(self, lower: Optional[float], upper: Optional[float]) -> None:
        if (lower is None) != (upper is None):
            raise ConfigError("set both method.params.lower and method.params.upper (the regression bounds)")
        if lower is not None and not float(upper) > float(lower):
            raise ConfigError(f"regression bounds need upper > lower, got lower={lower}, upper={upper}")
        bounds = [math.nan, math.nan] if lower is None else [float(lower), float(upper)]
        # float64: encode/decode must round-trip within 1e-9 of the range for years ~ 1e3.
        self.register_buffer("bounds", torch.tensor(bounds, dtype=torch.float64))

    def _bounds(self):
        lower, upper = (float(v) for v in self.bounds)
        if math.isnan(lower):
            raise ConfigError(
                f"{type(self).__name__} needs target bounds: set method.params.lower/upper "
                f"(or dataset.target_lower/target_upper)"
            )
        return lower, upper

    def year_cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """cos(z, p_u) over the full output (also in the joint layout, as the official code)."""
        return (F.normalize(embeddings, dim=-1, eps=EPS) * self.year_prototype).sum(dim=-1)

    def _regression_loss(self, embeddings: torch.Tensor, targets: Optional[torch.Tensor]) -> torch.Tensor:
        if targets is None:
            raise ConfigError(
                f"{type(self).__name__} needs regression targets, but the training split has none; "
                f"use a dataset with targets (e.g. dataset=omniart or dataset=digits_regression)"
            )
        lower, upper = self._bounds()
        # Clamped: a target outside the configured bounds cannot be reached by a cosine anyway.
        encoded = encode_targets(targets.to(torch.float64), lower, upper).clamp(-1.0, 1.0).to(embeddings.dtype)
        return _reduce((encoded - self.year_cosine(embeddings)) ** 2, self.loss_reduction)

    def predict_targets(self, embeddings: torch.Tensor) -> torch.Tensor:
        lower, upper = self._bounds()
        return decode_targets(self.year_cosine(embeddings).to(torch.float64), lower, upper).to(embeddings.dtype)

    def export_batch(self, embeddings: torch.Tensor) -> Dict[str, torch.Tensor]:
        # `predictions` are written by the extractor itself (predict_targets); repeating them here would
        # append them twice. The encoded-space output is the diagnostic worth keeping.
        return {"target_cosine": self.year_cosine(embeddings)}


class HPNRegressor(_RegressionMixin, Method):
    """Bounded regression with two opposite prototypes (p_u = e_0, p_l = -e_0); needs D >= 2."""

    geometry = "cosine"
    task = "regression"

    def __init__(self, embedding_dim: int, lower: Optional[float] = None, upper: Optional[float] = None,
                 loss_reduction: str = "mean") -> None:
        super().__init__()
        if int(embedding_dim) < 2:
            raise ConfigError(
                f"hpn_regression needs arch.params.embedding_dim >= 2, got {embedding_dim}: at D=1 cos(z, p_u) "
                f"is sign(z), so every prediction is a bound"
            )
        self.loss_reduction = _check_reduction(loss_reduction)
        self._init_bounds(lower, upper)
        year = torch.zeros(int(embedding_dim))
        year[0] = 1.0
        self.register_buffer("year_prototype", year)

    def loss(self, embeddings, labels, targets=None):
        return self._regression_loss(embeddings, targets)

    def logits(self, embeddings, n_samples=None, generator=None):
        raise NotImplementedError("hpn_regression has no classes (task=regression): use predict_targets")

    def export(self) -> Dict[str, np.ndarray]:
        year = self.year_prototype.detach().cpu().numpy()
        return {"prototypes": np.stack([year, -year]), "year_prototype": year,
                "bounds": self.bounds.detach().cpu().numpy()}


class HPNJoint(_RegressionMixin, _PrototypeMixin, Method):
    """Official joint layout: year prototype e_0; K style prototypes [0; p_k] placed in D-1 dimensions.

    Loss (1 - w) L_r + w L_c with w = task_weight (share of classification). Styles are predicted
    from z[1:], years from the full z, as the official OmniArt script does.
    """

    geometry = "cosine"
    task = "joint"

    def __init__(self, embedding_dim: int, n_classes: int, task_weight: float = 0.5, lower: Optional[float] = None,
                 upper: Optional[float] = None, placement: str = "converged", placement_seed: int = PAPER_SEED,
                 cache_dir: Optional[str] = "prototypes", word_vectors: Optional[str] = None,
                 privileged_weight: float = 1.0, n_positives: Optional[int] = 2,
                 placement_options: Optional[Dict[str, Any]] = None, loss_reduction: str = "mean",
                 logit_scale: Optional[float] = None, prototype_confidence: float = 0.99) -> None:
        super().__init__()
        dim = int(embedding_dim)
        if dim < 3:
            raise ConfigError(
                f"hpn_joint needs arch.params.embedding_dim >= 3 (1 year axis + >= 2 style dims), got {dim}"
            )
        if not 0.0 <= float(task_weight) <= 1.0:
            raise ConfigError(f"method.params.task_weight={task_weight} must lie in [0, 1]")
        self.task_weight = float(task_weight)
        self.loss_reduction = _check_reduction(loss_reduction)
        self._init_bounds(lower, upper)
        year = torch.zeros(dim)
        year[0] = 1.0
        self.register_buffer("year_prototype", year)
        styles = self._init_class_prototypes(
            n_classes, dim - 1, placement, placement_seed, cache_dir, word_vectors, privileged_weight,
            n_positives, placement_options, logit_scale, prototype_confidence)
        self.register_buffer("style_prototypes", torch.from_numpy(styles).float())

    def cosines(self, embeddings: torch.Tensor) -> torch.Tensor:
        return cosine_to(embeddings[:, 1:], self.style_prototypes)

    def loss(self, embeddings, labels, targets=None):
        w = self.task_weight
        total = embeddings.new_zeros(())
        if w < 1.0:
            total = total + (1.0 - w) * self._regression_loss(embeddings, targets)
        if w > 0.0:
            target_protos = self.style_prototypes[labels.clamp(min=0)]
            cos = (F.normalize(embeddings[:, 1:], dim=-1, eps=EPS) * target_protos).sum(dim=-1)
            total = total + w * self._class_loss(cos, labels, self.loss_reduction)
        return total

    def logits(self, embeddings, n_samples=None, generator=None):
        return self.logit_scale * self.cosines(embeddings)

    def export(self) -> Dict[str, np.ndarray]:
        styles = self.style_prototypes.detach().cpu().numpy()
        full = np.concatenate([np.zeros((styles.shape[0], 1), dtype=styles.dtype), styles], axis=1)
        return {"prototypes": full, "style_prototypes": styles,
                "year_prototype": self.year_prototype.detach().cpu().numpy(),
                "bounds": self.bounds.detach().cpu().numpy(),
                "logit_scale": np.float32(self.logit_scale.item()), "task_weight": np.float32(self.task_weight)}

