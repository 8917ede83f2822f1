"""SphereNet's angle-based operators (Liu et al., "Deep Hyperspherical Learning", NeurIPS 2017; TensorFlow code
github.com/wy1iu/SphereNet), as the spherization paper compares them (Kim & Kim, NeurIPS 2022; its PyTorch port
`models/hsn.py` HSNLinear, github.com/GIST-IRR/spherization_layer).

On the cosine c = w^ . x^ between a class weight and the input, with theta = arccos c:

- linear:  g = 1 - (2 / pi) theta
- cosine:  g = c
- sigmoid: g = K (1 - e^(theta/k - pi/(2k))) / (1 + e^(theta/k - pi/(2k))),
           K = (1 + e^(-pi/(2k))) / (1 - e^(-pi/(2k))), k = 0.3; computed as the equal K tanh((pi/2 - theta) / (2k)) with K = coth(pi/(4k)).

All three give g(0) = 1, g(pi/2) = 0, g(pi) = -1 (sigmoid exactly so: odd about pi/2).

`AngularLinear(in, out, operator, projection)`:

- `operator="none"`: a plain linear layer W x (+ b).
- `projection="direct"` (SphereNet's `norm`, the paper's "direct projection"): logits g(w^_c . x^), bounded in
  [-1, 1]. The original keeps a bias and adds it *before* dividing by |w|: c = (w_c . x^ + b_c) / |w_c|, so c can
  leave [-1, 1] and is clamped. That behaviour is `bias=True` (default off: the clean bounded cosine).
- `projection="wsoftmax"` (SphereNet's `w_norm`, the "indirect projection" / W-Softmax): only the weight is
  normalised, no bias. cosine: logit |x| cos theta = w^_c . x; linear / sigmoid: |x| g(theta).
  `wsoftmax_quirk=True` reproduces what both SphereNet's TF code and the PyTorch port compute instead for linear /
  sigmoid: g applied to |x| cos theta itself taken as a cosine, values beyond +-(1 - 1e-4) squashed by
  v / (v + eps) - eps (the TF code has no squash and gives NaN there). No effect on cosine.

`normalize_input_quirk=True`: the port's HSNLinear always divides its input by sqrt(|x|^2 + 1e-4), even with operator
"none" (so the comparison's "Original Conv." FC-10 sees unit-norm features plus a bias). With a direct operator this
only swaps the exact normalisation for the eps'd one; W-Softmax multiplies the norm back (as the original), so there it
changes nothing.

The clamp: before arccos, c is clamped to [-1 + 1e-4, 1 - 1e-4] (the original's band). Inside the band arccos' slope is
at most 1 / sqrt(1 - (1 - 1e-4)^2) = 70.7; outside it the clamp passes no gradient (the original's in-place
assignment does the same), so the gradient stays finite at c = +-1 and beyond (bias=True lets c exceed 1), where the
bare arccos' slope is infinite. cosine needs no arccos and is not clamped (as the original).

`scores(x)` returns (g, scale) with logits = scale * g: g the per-class angle-based values the projection maps x to
(bounded for every operator but "none"), scale 1, or |x| for W-Softmax linear / sigmoid / cosine. The method head
exports g as the projection's output (vmf_embeddings/eval/overlap.py).

Departures: 2 / pi exactly where the original writes 0.63662, and pi where the port truncates it to 3.141592 (in K).
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from vmf_embeddings.errors import ConfigError

OPERATORS = ("none", "linear", "cosine", "sigmoid")
PROJECTIONS = ("direct", "wsoftmax")
#: the cosine band before arccos: [-1 + CLAMP_EPS, 1 - CLAMP_EPS]
CLAMP_EPS = 1e-4
#: the sigmoid operator's k (SphereNet's fixed value; its learnable variant is not used by the comparison)
SIGMOID_K = 0.3
#: eps under the square root of the original's input norm (normalize_input_quirk)
QUIRK_EPS = 1e-4


def clamp_cosine(c: torch.Tensor) -> torch.Tensor:
    """c clamped to [-1 + 1e-4, 1 - 1e-4]: arccos stays finite and so does its gradient (0 outside the band)."""
    return c.clamp(-1.0 + CLAMP_EPS, 1.0 - CLAMP_EPS)


def linear_operator(theta: torch.Tensor) -> torch.Tensor:
    """g = 1 - (2 / pi) theta."""
    return 1.0 - (2.0 / math.pi) * theta


def sigmoid_operator(theta: torch.Tensor, k: float = SIGMOID_K) -> torch.Tensor:
    """g = K (1 - e^u) / (1 + e^u), u = theta / k - pi / (2k); as K tanh((pi/2 - theta) / (2k)), K = coth(pi / (4k))."""
    coeff = (1.0 + math.exp(-math.pi / (2 * k))) / (1.0 - math.exp(-math.pi / (2 * k)))
    return coeff * torch.tanh((math.pi / 2 - theta) / (2 * k))


#: g as a function of the angle theta, per operator
ANGLE_FUNCTIONS = {"linear": linear_operator, "sigmoid": sigmoid_operator, "cosine": torch.cos}
#: operators that read the cosine itself (no arccos, so no clamp): g = c
READS_COSINE = {"cosine"}


def operator_of_angle(theta: torch.Tensor, operator: str) -> torch.Tensor:
    """g(theta) for operator linear | cosine | sigmoid."""
    if operator not in ANGLE_FUNCTIONS:
        raise ValueError(f"operator={operator!r} has no angle function; choose linear, cosine or sigmoid")
    return ANGLE_FUNCTIONS[operator](theta)


def operator_of_cosine(c: torch.Tensor, operator: str) -> torch.Tensor:
    """g from the cosine c: cosine is c itself (no clamp); linear / sigmoid go through arccos of the clamped c."""
    if operator in READS_COSINE:
        return c
    return operator_of_angle(torch.arccos(clamp_cosine(c)), operator)


def _squash(v: torch.Tensor) -> torch.Tensor:
    """The original W-Softmax squash: v >= 1 - eps -> v / (v + eps) - eps; v <= -1 + eps -> -(v / (v - eps)) + eps."""
    eps = CLAMP_EPS
    high = v / (v + eps) - eps
    low = -(v / (v - eps)) + eps
    return torch.where(v >= 1 - eps, high, torch.where(v <= -1 + eps, low, v))


class AngularLinear(nn.Module):
    """in_features -> out_features with a SphereNet operator (module docstring). Parameters `weight` (out x in) and,
    when `bias`, `bias` (out), initialised as nn.Linear."""

    def __init__(self, in_features: int, out_features: int, operator: str = "cosine", projection: str = "direct",
                 bias: bool = False, normalize_input_quirk: bool = False, wsoftmax_quirk: bool = False) -> None:
        super().__init__()
        if operator not in OPERATORS:
            raise ConfigError(f"angular operator={operator!r} must be one of {', '.join(OPERATORS)}")
        if projection not in PROJECTIONS:
            raise ConfigError(f"angular projection={projection!r} must be one of {', '.join(PROJECTIONS)}")
        if operator == "none" and projection == "wsoftmax":
            raise ConfigError("angular operator=none has no projection (a plain linear layer); use projection=direct "
                              "or pick operator linear, cosine or sigmoid for W-Softmax")
        if projection == "wsoftmax" and bias:
            raise ConfigError("angular projection=wsoftmax has no bias (W-Softmax normalises only the weight); set "
                              "bias=false")
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or int(value) != value or int(value) < 1:
                raise ConfigError(f"AngularLinear: {name}={value!r} must be an integer >= 1")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.operator, self.projection = operator, projection
        self.normalize_input_quirk, self.wsoftmax_quirk = bool(normalize_input_quirk), bool(wsoftmax_quirk)
        self.weight = nn.Parameter(torch.empty(self.out_features, self.in_features))
        self.bias = nn.Parameter(torch.empty(self.out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # as nn.Linear
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, operator={self.operator}, "
                f"projection={self.projection}, bias={self.bias is not None}, "
                f"normalize_input_quirk={self.normalize_input_quirk}, wsoftmax_quirk={self.wsoftmax_quirk}")

    @property
    def has_projection(self) -> bool:
        """False for operator "none" (a plain linear layer: nothing is projected)."""
        return self.operator != "none"

    def cosines(self, x: torch.Tensor) -> torch.Tensor:
        """The (unclamped) value the operator reads: w^ . x^, or with bias=True (w . x^ + b) / |w|."""
        if self.normalize_input_quirk:
            x_hat = x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + QUIRK_EPS)
        else:
            x_hat = F.normalize(x, dim=-1)
        if self.bias is None:
            return x_hat @ F.normalize(self.weight, dim=-1).t()
        return (F.linear(x_hat, self.weight, self.bias)) / self.weight.norm(dim=-1)

    def scores(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(g, scale), logits = scale * g: g N x out the per-class values of the operator, scale 1 or N x 1 |x|."""
        one = torch.ones((), dtype=x.dtype, device=x.device)
        if self.operator == "none":
            if self.normalize_input_quirk:
                x = x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + QUIRK_EPS)
            return F.linear(x, self.weight, self.bias), one
        if self.projection == "direct":
            return operator_of_cosine(self.cosines(x), self.operator), one
        # W-Softmax: only the weight normalised; the original multiplies its input norm back, so the quirk is moot
        w_hat = F.normalize(self.weight, dim=-1)
        if self.wsoftmax_quirk and self.operator not in READS_COSINE:
            return operator_of_cosine(_squash(x @ w_hat.t()), self.operator), one
        norm = x.norm(dim=-1, keepdim=True)
        return operator_of_cosine(F.normalize(x, dim=-1) @ w_hat.t(), self.operator), norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.projection == "wsoftmax" and self.operator in READS_COSINE:
            return x @ F.normalize(self.weight, dim=-1).t()  # |x| cos theta, exactly w^ . x
        g, scale = self.scores(x)
        return scale * g


__all__ = ["AngularLinear", "OPERATORS", "PROJECTIONS", "CLAMP_EPS", "SIGMOID_K", "clamp_cosine", "linear_operator",
           "sigmoid_operator", "operator_of_angle", "operator_of_cosine"]
