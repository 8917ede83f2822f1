"""The one interface every method (loss head) implements, so training, extraction and evaluation
never branch on method names.

A model is `backbone(x) -> f(x)` (N x D, see `vmf_embeddings.archs`) followed by a `Method` head that
owns everything class-related (class weights, prototypes, temperature, curvature, running means).
A head says what it is with three class attributes, and the runner reads nothing else:

- `geometry`: a name in `vmf_embeddings.eval.geometry.GEOMETRY_REGISTRY` (distance, search and
  clustering space); parameters of that geometry come from `geometry_params()`.
- `task`: "classification", "regression" or "joint"; `predicts_classes` / `predicts_targets` read it.
- `fits_class_state`: the head needs the embedded training split before validation and extraction
  (`fit_class_state`), e.g. class means for a nearest-class-mean prediction.

Lifecycle (called by `vmf_embeddings.train` and `vmf_embeddings.extract`, in this order):

    on_train_start(context, resumed)     once, before the first step (context embeds the training data)
    per epoch: on_epoch_start(epoch); per step: loss(...), optimiser step, after_step(step);
               on_epoch_end(epoch); fit_class_state(train) if fits_class_state; validation
    extraction: fit_class_state(train) if fits_class_state; log_probs / predict_targets / export

State a head learns from data (running means, cluster indices, calibration constants) belongs in
registered buffers, so it is saved in every checkpoint and restored on resume.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # pragma: no cover - imported for type hints only
    from vmf_embeddings.embedding import EmbeddedSplit, TrainContext


class Method(nn.Module):
    """Base class of all loss heads. Subclasses implement `loss` and `logits`; the rest has defaults."""

    #: retrieval geometry: a key of vmf_embeddings.eval.geometry.GEOMETRY_REGISTRY
    geometry: str = "euclidean"
    #: "classification", "regression" or "joint" (HPN)
    task: str = "classification"
    #: `fit_class_state` must run on the embedded training split before validation and extraction
    fits_class_state: bool = False
    #: predictions are Monte-Carlo (costly on a large training split; see eval.mc_on_train)
    sampled_prediction: bool = False
    #: the head steers the training batch sampler from its own per-batch state (magnet loss); such state is
    #: per process, so torchrun refuses it
    steers_sampler: bool = False

    # -- what the head predicts --------------------------------------------------------------------
    @property
    def predicts_classes(self) -> bool:
        return self.task in ("classification", "joint")

    @property
    def predicts_targets(self) -> bool:
        return self.task in ("regression", "joint")

    def loss(
        self, embeddings: torch.Tensor, labels: torch.Tensor, targets: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Scalar training loss (mean over the batch) from backbone outputs f(x)."""
        raise NotImplementedError

    def logits(
        self, embeddings: torch.Tensor, n_samples: Optional[int] = None, generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        """N x C class scores whose softmax is the predictive distribution (no margin, no sampling noise
        unless the method is stochastic, then averaged over `n_samples` draws in log-probability space)."""
        raise NotImplementedError

    def log_probs(
        self, embeddings: torch.Tensor, n_samples: Optional[int] = None, generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        """N x C predictive log-probabilities log p(c | x), what accuracy, ECE and NLL are computed from."""
        return F.log_softmax(self.logits(embeddings, n_samples=n_samples, generator=generator).float(), dim=-1)

    def predict_targets(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Regression / joint methods: N predictions in the target's own units (e.g. years)."""
        raise NotImplementedError(f"{type(self).__name__} does not predict regression targets")

    def retrieval_embeddings(self, embeddings: torch.Tensor) -> torch.Tensor:
        """The vectors evaluation searches in (e.g. vMF's z = s * f(x), whose norm is kappa)."""
        return embeddings

    def geometry_params(self) -> Dict[str, float]:
        """Parameters of `geometry` (hyperbolic: {"curvature": c}); written beside the embeddings."""
        return {}

    # -- lifecycle hooks ---------------------------------------------------------------------------
    def on_train_start(self, context: "TrainContext", resumed: bool) -> None:
        """Before the first step. `context.embed_train(...)` embeds the training split; on resume
        (`resumed=True`) the head's buffers already hold what a fresh start computed."""

    def on_epoch_start(self, epoch: int) -> None:
        """Schedules keyed on the epoch (e.g. ArcFace margin warm-up)."""

    def after_step(self, step: int) -> None:
        """After every optimiser step (`step` counts from 0 over the whole run). Runs in the hot loop:
        keep it free of host-device syncs."""

    def on_epoch_end(self, epoch: int) -> None:
        """After the epoch's last step, before validation."""

    def fit_class_state(self, train: "EmbeddedSplit") -> None:
        """Class state from the embedded training split (only called when `fits_class_state`)."""

    # -- optimisation and bookkeeping ----------------------------------------------------------------
    def param_groups(self) -> Dict[str, list]:
        """Split own parameters into {"decay": [...], "no_decay": [...], "temperature": [...]}.

        Default: the temperature parameter (if any) alone; class weights and every other parameter
        without weight decay. The vMF original meant to exclude class weights from decay, but its name
        check never matched; we exclude them on purpose (docs/departures.md).
        """
        temperature = [p for n, p in self.named_parameters() if n == "temp"]
        others = [p for n, p in self.named_parameters() if n != "temp"]
        return {"decay": [], "no_decay": others, "temperature": temperature}

    def tracked_scalars(self) -> Dict[str, float]:
        """Scalars worth a TensorBoard curve (temperature, mean kappa, margin...)."""
        out: Dict[str, float] = {}
        if hasattr(self, "temp") and isinstance(self.temp, torch.Tensor):
            out["temperature"] = float(torch.exp(self.temp.detach()).item())
        return out

    def export(self) -> Dict[str, np.ndarray]:
        """Method state worth keeping beside the embeddings (class weights, temperature, ...)."""
        return {}

    def export_batch(self, embeddings: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Per-sample extras for the embeddings file (e.g. vMF kappa)."""
        return {}
