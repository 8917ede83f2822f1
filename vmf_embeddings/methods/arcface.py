"""ArcFace (additive angular margin) head, adapted from pytorch-metric-learning's ArcFaceLoss."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vmf_embeddings.methods.softmax import NormalizedSoftmax


class ArcFace(NormalizedSoftmax):
    """Training logits: beta * cos(theta_c), with the target's replaced by beta * cos(theta_y + m).

    Test-time logits carry no margin (plain cosine softmax). `warmup_epochs` trains with m = 0 first;
    the original hard-coded 20/60/100 epochs by dataset-name substring, here it is a method parameter.
    `easy_margin=True` applies the margin only where theta_y + m <= pi, where cos(theta + m) is still
    monotone (the original had no such guard); default off = the original.
    Margin in radians (PML's ArcFaceLoss takes degrees: 0.5 rad = 28.6 deg).
    """

    def __init__(
        self,
        embedding_dim: int,
        n_classes: int,
        init_temp: float = 0.0,
        learn_temp: bool = True,
        margin: float = 0.5,
        warmup_epochs: int = 0,
        easy_margin: bool = False,
    ) -> None:
        super().__init__(embedding_dim, n_classes, init_temp, learn_temp)
        self.margin = float(margin)
        self.warmup_epochs = int(warmup_epochs)
        self.easy_margin = bool(easy_margin)
        self.active_margin = 0.0 if self.warmup_epochs > 0 else self.margin

    def on_epoch_start(self, epoch: int) -> None:
        self.active_margin = 0.0 if epoch < self.warmup_epochs else self.margin

    def loss(self, embeddings, labels, targets=None):
        cosines = self.cosines(embeddings)
        target_cos = cosines.gather(1, labels[:, None]).clamp(-1 + 1e-7, 1 - 1e-7)
        theta = torch.acos(target_cos)
        with_margin = torch.cos(theta + self.active_margin)
        if self.easy_margin:
            with_margin = torch.where(theta + self.active_margin <= math.pi, with_margin, target_cos)
        cosines = cosines.scatter(1, labels[:, None], with_margin.to(cosines.dtype))
        return F.cross_entropy(self.beta * cosines, labels)

    def tracked_scalars(self):
        out = super().tracked_scalars()
        out["margin"] = self.active_margin
        return out
