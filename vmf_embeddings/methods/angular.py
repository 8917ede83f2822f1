"""`angular_softmax`: cross-entropy on SphereNet angle-based logits (Liu et al., NeurIPS 2017), the FC-10 rows of the
spherization paper's comparison (Kim & Kim, NeurIPS 2022): logits = AngularLinear(embedding_dim, C) with
`operator` none | linear | cosine | sigmoid and `projection` direct | wsoftmax (vmf_embeddings/layers/angular.py).

- direct: logits g(cos theta_c) in [-1, 1] (bounded: the softmax can never be confident, as the paper observes);
- wsoftmax: |x| cos theta_c (cosine) or |x| g(theta_c), no bias;
- none: a plain linear classifier; with `bias=true normalize_input_quirk=true` it is the comparison's base FC-10
  (the original's HSNLinear divides its input by sqrt(|x|^2 + 1e-4) and keeps a bias).

Retrieval: cosine geometry on the raw embedding (the angle is what every operator reads).

Projection analysis (vmf_embeddings/eval/overlap.py, a reconstruction): with an operator, each embeddings file gets
`projection_input` (the embedding f(x) the layer reads, N x D) and `projection_output` (the per-class operator values
g_c, N x C). g is chosen rather than the normalised vector x^ because it is what the clamp / saturation acts on and
what decides the prediction: logits are g (direct) or |x| g (W-Softmax, |x| > 0), so two samples with the same g get
the same prediction whatever their inputs, while equal x^ does not imply equal W-Softmax logits. Operator none has no
projection and exports neither (the paper's "original" row: 0 overlaps).
"""

from __future__ import annotations

from typing import Dict

import numpy as np
import torch
import torch.nn.functional as F

from vmf_embeddings.layers.angular import AngularLinear
from vmf_embeddings.methods.base import Method


class AngularSoftmax(Method):
    """logits = AngularLinear(f(x)); cross-entropy; cosine retrieval on f(x)."""

    geometry = "cosine"

    def __init__(self, embedding_dim: int, n_classes: int, operator: str = "cosine", projection: str = "direct",
                 bias: bool = False, normalize_input_quirk: bool = False, wsoftmax_quirk: bool = False) -> None:
        super().__init__()
        self.classifier = AngularLinear(int(embedding_dim), int(n_classes), operator=operator, projection=projection,
                                        bias=bool(bias), normalize_input_quirk=bool(normalize_input_quirk),
                                        wsoftmax_quirk=bool(wsoftmax_quirk))

    def logits(self, embeddings, n_samples=None, generator=None):
        return self.classifier(embeddings)

    def loss(self, embeddings, labels, targets=None):
        return F.cross_entropy(self.logits(embeddings), labels)

    def export(self) -> Dict[str, np.ndarray]:
        out = {"weights": self.classifier.weight.detach().float().cpu().numpy(),
               "operator": np.array(self.classifier.operator), "projection": np.array(self.classifier.projection)}
        if self.classifier.bias is not None:
            out["bias"] = self.classifier.bias.detach().float().cpu().numpy()
        return out

    def export_batch(self, embeddings: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The projection's input (f(x)) and output (per-class g values) for the overlap analysis."""
        if not self.classifier.has_projection:
            return {}
        g, _ = self.classifier.scores(embeddings)
        return {"projection_input": embeddings, "projection_output": g}
