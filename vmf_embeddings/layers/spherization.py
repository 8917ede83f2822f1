"""The spherization layer (Kim & Kim, "Spherization Layer: Representation Using Only Angles", NeurIPS 2022; code
github.com/GIST-IRR/spherization_layer) and the bias-free layers built on it.

A pre-activation z in R^n becomes n angles phi_i = phi_L + (pi/2 - phi_L) sigmoid(s z_i), with
phi_L = min(arcsin(delta^(1/n)), 0.99 pi/2) ("bound" range; "whole": phi_L = 0), then the point of the radius-r
sphere in R^(n+1) with those hyperspherical coordinates:

    x_1 = r cos phi_1,   x_k = r (prod_{i<k} sin phi_i) cos phi_k,   x_(n+1) = r prod_{i<=n} sin phi_i.

So |x| = r, x >= 0 (the positive orthant) and the layer after it (bias-free) sees only directions.

`impl="exact"` (default) computes the complementary angle psi = pi/2 - phi = (pi/2 - phi_L) sigmoid(-s z) directly
(no cancellation: cos phi = sin psi, sin phi = cos psi) and the cumulative product of sines, so every output lies
on the sphere to float precision, stays finite where the sigmoid saturates, and costs O(n) (the original builds two
dense (n+1) x (n+1) buffers and a matmul). `impl="legacy"` reproduces the original's log-exp form (epsilon 1e-6
inside abs, pi truncated to 3.141592) for comparisons. Half-precision inputs are computed in float32 and returned
in their own dtype. Departures: docs/departures.md.
"""

from __future__ import annotations

import math
import logging
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Union

import torch
from torch import nn

from vmf_embeddings.errors import ConfigError

RANGES = ("bound", "whole")
IMPLS = ("exact", "legacy")
LEGACY_PI = 3.141592
LEGACY_EPS = 1e-6


def lower_angle(n: int, delta: float, range_: str = "bound") -> float:
    """phi_L: the smallest angle, chosen so that prod_i sin(phi_i) > delta; 0 for the "whole" range."""
    if range_ == "whole":
        return 0.0
    return min(math.asin(float(delta) ** (1.0 / int(n))), 0.99 * math.pi / 2)


class Spherization(nn.Module):
    """(B, n) -> (B, n + 1) on the radius-r sphere; (B, C, H, W) -> (B, C + 1, H, W), pixel by pixel."""

    def __init__(self, n: int, delta: float = 1e-6, scaling: float = 1.0, radius: float = 1.0,
                 learn_scaling: bool = True, learn_radius: bool = False, range: str = "bound",  # noqa: A002
                 impl: str = "exact") -> None:
        super().__init__()
        if isinstance(n, bool) or int(n) != n or int(n) < 1:
            raise ConfigError(f"spherization: n={n!r} must be an integer >= 1 (the width of the spherized layer)")
        if not 0 < float(delta) < 1:
            raise ConfigError(f"spherization.delta={delta!r} must lie in (0, 1)")
        if not float(radius) > 0:
            raise ConfigError(f"spherization.radius={radius!r} must be > 0")
        if range not in RANGES:
            raise ConfigError(f"spherization.range={range!r} must be one of {RANGES}")
        if impl not in IMPLS:
            raise ConfigError(f"spherization.impl={impl!r} must be one of {IMPLS}")
        self.n, self.delta, self.range, self.impl = int(n), float(delta), range, impl
        self.phi_low = lower_angle(self.n, self.delta, range)
        scaling_t, radius_t = torch.tensor(float(scaling)), torch.tensor(float(radius))
        if learn_scaling:
            self.scaling = nn.Parameter(scaling_t)
        else:
            self.register_buffer("scaling", scaling_t)
        if learn_radius:
            self.radius = nn.Parameter(radius_t)
        else:
            self.register_buffer("radius", radius_t)
        # running count of saturated angles (sigmoid at 0 or 1 within float eps), read and reset once per epoch
        self.register_buffer("saturated", torch.zeros(()), persistent=False)
        self.register_buffer("counted", torch.zeros(()), persistent=False)

    def extra_repr(self) -> str:
        return f"n={self.n}, delta={self.delta:g}, phi_low={self.phi_low:.6g}, range={self.range}, impl={self.impl}"

    # -- the map ----------------------------------------------------------------------------------------
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() == 4:  # channels of every pixel
            b, c, h, w = z.shape
            flat = z.permute(0, 2, 3, 1).reshape(-1, c)
            return self.forward(flat).reshape(b, h, w, c + 1).permute(0, 3, 1, 2)
        if z.shape[-1] != self.n:
            raise ValueError(f"Spherization(n={self.n}) got input of shape {tuple(z.shape)}; the last dimension must "
                             f"be {self.n}")
        dtype = z.dtype
        work = z.float() if dtype in (torch.float16, torch.bfloat16) else z
        t = self.scaling.to(work.dtype) * work
        if self.training:
            self._count_saturation(t)
        out = self._exact(t) if self.impl == "exact" else self._legacy(t)
        return out.to(dtype)

    def _radius(self, dtype: torch.dtype) -> torch.Tensor:
        # a learnt radius stays positive (the original left it unconstrained)
        return self.radius.to(dtype).clamp_min(1e-6)

    def _exact(self, t: torch.Tensor) -> torch.Tensor:
        psi = (math.pi / 2 - self.phi_low) * torch.sigmoid(-t)  # pi/2 - phi, >= 0 with no cancellation
        cos_phi, sin_phi = torch.sin(psi), torch.cos(psi)      # sin phi >= sin phi_L > 0: no zero factor
        prefix = torch.cumprod(sin_phi, dim=-1)
        ones = torch.ones_like(prefix[..., :1])
        x = torch.cat([torch.cat([ones, prefix[..., :-1]], -1) * cos_phi, prefix[..., -1:]], -1)
        return self._radius(x.dtype) * x

    def _legacy(self, t: torch.Tensor) -> torch.Tensor:
        """The original's log(|sin|+eps) cumulative sum + log(|cos(theta + b)|+eps), exp, times r."""
        phi = self.phi_low + (LEGACY_PI / 2 - self.phi_low) * torch.sigmoid(t)
        theta = torch.cat([phi, phi[..., -1:]], -1)  # W_theta: identity with its last row repeated
        log_sin = torch.log(torch.sin(theta).abs() + LEGACY_EPS)
        exclusive = torch.cumsum(log_sin, -1) - log_sin  # column j: sum of log sin theta_i, i < j
        summed = torch.cat([exclusive[..., :-1], exclusive[..., -2:-1]], -1)  # the last column leaves out phi_n
        shift = torch.zeros_like(theta[..., :1]).expand_as(theta).clone()
        shift[..., -1] = -LEGACY_PI / 2
        log_cos = torch.log(torch.cos(theta + shift).abs() + LEGACY_EPS)
        return self._radius(t.dtype) * torch.exp(summed + log_cos)

    # -- diagnostics -----------------------------------------------------------------------------------
    def angles(self, z: torch.Tensor) -> torch.Tensor:
        """phi (same layout as z): the angles the layer encodes."""
        t = self.scaling.to(z.dtype) * z
        return math.pi / 2 - (math.pi / 2 - self.phi_low) * torch.sigmoid(-t)

    @torch.no_grad()
    def _count_saturation(self, t: torch.Tensor) -> None:
        eps = torch.finfo(t.dtype).eps
        sig = torch.sigmoid(t.detach())
        self.saturated += ((sig <= eps) | (sig >= 1 - eps)).sum()
        self.counted += sig.numel()

    def take_saturated_fraction(self) -> float:
        """Fraction of training angles saturated since the last call (one host sync), then reset."""
        fraction = float(self.saturated / self.counted.clamp_min(1)) if float(self.counted) else 0.0
        self.saturated.zero_()
        self.counted.zero_()
        return fraction


class SphericalLinear(nn.Module):
    """Spherization(in_features) -> Linear(in_features + 1, out_features, bias=False)."""

    def __init__(self, in_features: int, out_features: int, **spherization) -> None:
        super().__init__()
        self.spherize = Spherization(int(in_features), **spherization)
        self.linear = nn.Linear(int(in_features) + 1, int(out_features), bias=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(self.spherize(z))


class SphericalConv2d(nn.Module):
    """Per-pixel Spherization(in_channels) -> Conv2d(in_channels + 1, out_channels, ..., bias=False)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Union[int, tuple], stride: int = 1,
                 padding: int = 0, **spherization) -> None:
        super().__init__()
        self.spherize = Spherization(int(in_channels), **spherization)
        self.conv = nn.Conv2d(int(in_channels) + 1, int(out_channels), kernel_size, stride=stride, padding=padding,
                              bias=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv(self.spherize(z))


def spherization_modules(module: nn.Module):
    """Every Spherization inside `module` (for logging s, r and the saturated fraction)."""
    return [m for m in module.modules() if isinstance(m, Spherization)]


class ProjectionRecord:
    """Input and output rows of one layer over the forward passes of a `recording_projection` block."""

    def __init__(self) -> None:
        self.inputs: List[torch.Tensor] = []
        self.outputs: List[torch.Tensor] = []
        self.low_precision = False  # recorded under autocast (amp=true)

    def hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        z = args[0]
        self.low_precision = self.low_precision or output.dtype in (torch.float16, torch.bfloat16)
        self.inputs.append(z.detach().reshape(z.shape[0], -1).float().cpu())
        self.outputs.append(output.detach().reshape(output.shape[0], -1).float().cpu())

    def arrays(self) -> Dict[str, Any]:
        """{"projection_input": N x n, "projection_output": N x (n + 1)} as numpy, or {} when nothing ran."""
        if not self.inputs:
            return {}
        if self.low_precision:
            logging.getLogger(__name__).warning(
                "the spherization layer ran in half precision (amp=true): values equal at that precision count as one "
                "point in the overlap analysis; extract with amp=false for eval.overlap_tol to mean float32 precision")
        return {"projection_input": torch.cat(self.inputs).numpy(),
                "projection_output": torch.cat(self.outputs).numpy()}


@contextmanager
def recording_projection(model: nn.Module, enabled: bool = True) -> Iterator[Optional[ProjectionRecord]]:
    """Inside the block, record the input (pre-activation z) and output (spherized x) of the backbone's last
    spherization layer (the one `Spherized` appends, or an arch's own) for every forward pass, for the projection
    analysis (vmf_embeddings/eval/overlap.py). Yields None when disabled or when the backbone has no such layer."""
    layers = [m for m in getattr(model, "backbone", model).modules() if isinstance(m, Spherization)] if enabled else []
    if not layers:
        yield None
        return
    record = ProjectionRecord()
    handle = layers[-1].register_forward_hook(record.hook)
    try:
        yield record
    finally:
        handle.remove()
