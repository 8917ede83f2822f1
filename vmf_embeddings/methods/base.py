"""The one interface every method (loss head) implements, so training, extraction and evaluation
never branch on method names.

A model is `backbone(x) -> f(x)` (N x D, see `vmf_embeddings.archs`) followed by a `Method` head that
owns everything class-related (class weights, prototypes, temperature, curvature). Methods declare
their `geometry`, which evaluation reads from the exported embeddings file to choose the distance.
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional

import numpy as np
import torch
from torch import nn

GEOMETRIES = ("euclidean", "cosine", "vmf", "hyperbolic")


class Method(nn.Module):
    """Base class of all loss heads.

    Subclasses implement `loss` and `logits`; the rest has sensible defaults.
    """

    #: distance used for retrieval: one of GEOMETRIES
    geometry: str = "euclidean"
    #: the head needs one pass over the training data before the first step (vMF's kappa multiplier)
    needs_calibration: bool = False
    #: the task: "classification", "regression" or "joint" (HPN)
    task: str = "classification"

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

    def predict_targets(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Regression / joint methods: N predictions in the target's own units (e.g. years)."""
        raise NotImplementedError(f"{type(self).__name__} does not predict regression targets")

    def retrieval_embeddings(self, embeddings: torch.Tensor) -> torch.Tensor:
        """The vectors evaluation searches in (e.g. vMF's z = s * f(x), whose norm is kappa)."""
        return embeddings

    def calibrate(self, embeddings: Iterable[torch.Tensor]) -> None:
        """One-off statistics from the training data (no-op unless `needs_calibration`)."""

    def on_epoch_start(self, epoch: int) -> None:
        """Schedules keyed on the epoch (e.g. ArcFace margin warm-up)."""

    def param_groups(self) -> Dict[str, list]:
        """Split own parameters into {"decay": [...], "no_decay": [...], "temperature": [...]}.

        Default: the temperature parameter (if any) alone, class weights and every other parameter
        without weight decay. (The original meant to exclude class weights from decay but its name
        check never fired; we exclude them on purpose, see reference note §7.6.)
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
        """Method state evaluation needs, saved beside the embeddings (class weights, temperature, ...)."""
        return {}

    def export_batch(self, embeddings: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Per-sample extras for the embeddings file (e.g. vMF kappa); concatenated over batches."""
        return {}
