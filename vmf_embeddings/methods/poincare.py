"""Poincare-ball operations (curvature -c), after Khrulkov et al.'s hyptorch as used by the original."""

from __future__ import annotations

import torch

MIN_NORM = 1e-5
BALL_EPS = 1e-3


def expmap0(u: torch.Tensor, c: float) -> torch.Tensor:
    """Exponential map at the origin: tanh(sqrt(c)|u|) u / (sqrt(c)|u|)."""
    sqrt_c = c**0.5
    norm = u.norm(dim=-1, keepdim=True).clamp_min(MIN_NORM)
    return torch.tanh(sqrt_c * norm) * u / (sqrt_c * norm)


def project(x: torch.Tensor, c: float) -> torch.Tensor:
    """Clip norms to (1 - 1e-3)/sqrt(c) so points stay strictly inside the ball."""
    norm = x.norm(dim=-1, keepdim=True).clamp_min(MIN_NORM)
    max_norm = (1 - BALL_EPS) / c**0.5
    return torch.where(norm > max_norm, x / norm * max_norm, x)


def mobius_add(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """x (+)_c y for broadcastable x, y."""
    xy = (x * y).sum(-1, keepdim=True)
    x2 = x.pow(2).sum(-1, keepdim=True)
    y2 = y.pow(2).sum(-1, keepdim=True)
    num = (1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y
    denom = 1 + 2 * c * xy + c**2 * x2 * y2
    return num / denom.clamp_min(MIN_NORM)


def poincare_distance(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """d(x, y) = arccosh(1 + 2c|x - y|^2 / ((1 - c|x|^2)(1 - c|y|^2))) / sqrt(c), elementwise over broadcast rows.

    Equal to (2/sqrt(c)) artanh(sqrt(c) |(-x) (+)_c y|), but with no clamp on the artanh argument: that
    clamp (at 1 - 1e-5) capped distances at 12.2/sqrt(c), while two points of the projected ball
    (norm (1 - 1e-3)/sqrt(c)) can be 15.2/sqrt(c) apart.
    """
    sq = (x - y).pow(2).sum(-1)
    den = (1 - c * x.pow(2).sum(-1)) * (1 - c * y.pow(2).sum(-1))
    return torch.acosh((1 + 2 * c * sq / den.clamp_min(MIN_NORM**2)).clamp_min(1.0)) / c**0.5


class _RiemannianGradient(torch.autograd.Function):
    """Identity forward; backward rescales by the inverse Poincare metric (1 - c|x|^2)^2 / 4."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, c: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.c = c
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (x,) = ctx.saved_tensors
        scale = (1 - ctx.c * x.pow(2).sum(-1, keepdim=True)).pow(2) / 4
        return grad_output * scale, None


def to_poincare(u: torch.Tensor, c: float, riemannian: bool = True) -> torch.Tensor:
    """Map Euclidean embeddings onto the ball: project(expmap0(u)), with hyptorch's gradient fix."""
    x = project(expmap0(u, c), c)
    return _RiemannianGradient.apply(x, c) if riemannian else x
