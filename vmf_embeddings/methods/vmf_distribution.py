"""Reparameterised sampling from the von Mises-Fisher distribution vMF(mu, kappa) on S^(D-1).

Wood (1994) rejection sampler for the cosine w = mu^T x, an isotropic tangent direction, and a Householder
reflection e1 -> mu, as in the original code (google-research/vmf_embeddings, adapted from Davidson et al.'s
s-vae-pytorch), with these departures:

* b is the exact, cancellation-free b = (d-1) / (2 kappa + sqrt(4 kappa^2 + (d-1)^2)). The original replaced b by
  (d-1)/(4 kappa) for kappa >= 11 (blended linearly with the exact b on 10..11); that breaks Wood's envelope unless
  kappa >> d and biases the samples: at d = 128, kappa = 60, E[mu^T x] is about 0.306 instead of A_d = 0.396
  (tests/methods/test_vmf_distribution.py). The default does NOT copy that shortcut; `sampler="original"` restores
  it (with the original's acceptance test for a b that is not Wood's), for parity runs only.
* With the exact b, a b = (d-1)(1+b)/4, so Wood's test (d-1) log t - t + delta >= log u becomes
  m (log tau - tau + 1) >= log u, m = d - 1, with tau - 1 = (1-b) s / ((1-s) + b (1+s)), s = 2 eps - 1.
  Algebraically the same test, but without the m log m - m log t cancellation (thousands at d = 512) that float32
  cannot afford. Likewise 1 - w = 2 b (1+s) / ((1-s) + b (1+s)) and 1 - b are formed directly, so w near 1 (large
  kappa) keeps its relative accuracy and sqrt(1 - w^2) = sqrt((1-w)(1+w)) needs no 1e-7 clamp.
* Vectorised: every pending row proposes a block of candidates at once and keeps the first accepted one (argmax
  over the accept mask); later rounds run only on the rows still pending. On accelerators the block is sized so
  that a second round is rare (measured acceptance >= 0.65 for every d >= 2, kappa in [1e-4, 1e5]) and the only
  host-device sync is one "all accepted?" check per round, normally one per call; on CPU, where a sync is free, the
  block is small (4) to draw fewer random numbers. The original looped until every row had accepted, re-proposing
  one candidate for every row per iteration.
* The Beta(m/2, m/2) proposal is drawn as (1 + Z / sqrt(Z^2 + chi^2_m)) / 2 (one gamma, one normal, and the
  passed generator; torch.distributions.Beta takes none).
* d = 3 uses the exact inverse CDF, 1 - w = -log1p(-v (1 - e^(-2 kappa))) / kappa, v ~ U[0, 1), which is accurate
  from kappa = 1e-4 (where the original's logsumexp form loses all digits in float32) to 1e5.
* Randomness comes only from the `generator` argument when given (no global RNG), so draws are reproducible.

Gradients: to mu through the reflection; to kappa pathwise through the accepted w (through b(kappa)), as the
original. For d != 3 this omits the rejection-correction term of Naesseth et al. (2017), so the kappa-gradient is
biased (noted for the same s-vae-pytorch code in pytorch/pytorch#147048). For d = 3 the inverse CDF is an exact
reparameterisation.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from .bessel import log_vmf_normalizer, mean_resultant_length

__all__ = ["sample_vmf", "VonMisesFisher", "SAMPLERS"]

#: b of Wood's envelope: "exact" (the default, unbiased) or "original" (the original code's large-kappa shortcut,
#: biased; for parity runs)
SAMPLERS = ("exact", "original")

#: measured lower bound on Wood's acceptance probability over d >= 2, kappa in [1e-4, 1e5] (the worst case, 0.657,
#: is d = 2 at large kappa); used only to size the candidate block
_MIN_ACCEPT = 0.65
#: accelerators: a round leaves on average at most this many rows pending, so a second round (and a second
#: host-device sync) happens in ~1e-3 of the calls
_PENDING_TARGET = 1e-3
_MIN_BLOCK, _MAX_BLOCK = 8, 64
#: CPU: a sync costs nothing there, so propose few candidates (~1.5 are needed on average) and let the few pending
#: rows (0.35^4 = 1.5%) go round again; this draws ~3x fewer random numbers than the accelerator block
_CPU_BLOCK = 4
#: rounds before giving up; a row fails all of them with probability < 0.35^80
_MAX_ROUNDS = 20


def _block_size(n_rows: int, device: torch.device) -> int:
    """Candidates per row and round: on accelerators enough that E[#rows without an accepted candidate] =
    n_rows 0.35^B <= _PENDING_TARGET (one sync per call, the waste is parallel and nearly free); on CPU a few."""
    if device.type == "cpu":
        return _CPU_BLOCK
    needed = math.log(_PENDING_TARGET / max(n_rows, 1)) / math.log(1.0 - _MIN_ACCEPT)
    return int(min(max(math.ceil(needed), _MIN_BLOCK), _MAX_BLOCK))


def _wood_constants(kappa: Tensor, m: int) -> Tuple[Tensor, Tensor]:
    """(b, 1 - b) of Wood's envelope, both without cancellation (1 - b -> 0 as kappa -> 0, b -> 0 as kappa -> inf)."""
    c = torch.sqrt(4.0 * kappa * kappa + m * m)
    b = m / (2.0 * kappa + c)
    # 1 - b = (2 kappa + c - m) / (2 kappa + c) and c - m = 4 kappa^2 / (c + m)
    one_minus_b = 2.0 * kappa * (1.0 + 2.0 * kappa / (c + m)) / (2.0 * kappa + c)
    return b, one_minus_b


def _original_wood_constants(kappa: Tensor, m: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(b, 1 - b, g, h) of the original code's envelope, differentiable in kappa.

    b = s (d-1)/(4 kappa) + (1 - s) b_exact with s = clamp(kappa - 10, 0, 1), as in s-vae-pytorch (Davidson et al.)
    and google-research/vmf_embeddings; a = (d - 1 + 2 kappa + c)/4 keeps the exact c. With that b, Wood's test
    (d-1) log t - t + delta >= log u, delta = 4ab/(1+b) - (d-1) log(d-1), reads m (log tau - tau + h) >= log u,
    tau = g / ((1-s') + b (1+s')), g = 4ab/m, h = g/(1+b), m = d - 1 (s' the symmetric Beta draw). For kappa <= 10
    this is the exact envelope (g = 1 + b, h = 1).
    """
    b_exact, omb_exact = _wood_constants(kappa, m)
    blend = (kappa - 10.0).clamp(0.0, 1.0)
    b_short = m / (4.0 * kappa)
    b = blend * b_short + (1.0 - blend) * b_exact
    one_minus_b = blend * (1.0 - b_short) + (1.0 - blend) * omb_exact
    g = (m + 2.0 * kappa + torch.sqrt(4.0 * kappa * kappa + m * m)) * b / m
    return b, one_minus_b, g, g / (1.0 + b)


def _symmetric_beta(
    shape: Tuple[int, int], m: int, like: Tensor, generator: Optional[torch.Generator]
) -> Tuple[Tensor, Tensor]:
    """(1 + s, 1 - s) for s = 2 eps - 1, eps ~ Beta(m/2, m/2), each without cancellation.

    s = Z / sqrt(Z^2 + V), Z ~ N(0, 1), V ~ chi^2_m = 2 Gamma(m/2): the first coordinate of a uniform point on
    S^m, whose (1 + s)/2 is Beta(m/2, m/2). One gamma and one normal instead of the usual two gammas (gamma draws
    dominate the CPU cost), and 1 -+ s are formed as V / (r +- Z) / r on the side where r -+ Z would cancel.
    (torch.distributions.Beta cannot take a generator; torch._standard_gamma can.)
    """
    z = torch.randn(shape, dtype=like.dtype, device=like.device, generator=generator)
    v = 2.0 * torch._standard_gamma(
        torch.full(shape, m / 2.0, dtype=like.dtype, device=like.device), generator=generator
    )
    r = torch.sqrt(z * z + v)
    one_plus = torch.where(z >= 0, r + z, v / (r - z)) / r
    one_minus = torch.where(z <= 0, r - z, v / (r + z)) / r
    return one_plus, one_minus


def _accepted_proposal(
    kappa: Tensor, m: int, generator: Optional[torch.Generator], sampler: str = "exact"
) -> Tuple[Tensor, Tensor, int]:
    """(1 + s, 1 - s) of one accepted Wood proposal per entry of `kappa` (flattened), and the rounds it took.

    No gradient: w is rebuilt from (1 +- s) and a differentiable b(kappa) afterwards.
    """
    kappa = kappa.reshape(-1)
    n_rows = kappa.numel()
    block = _block_size(n_rows, kappa.device)
    if sampler == "exact":
        consts = _wood_constants(kappa, m)
    else:
        consts = _original_wood_constants(kappa, m)
    rows: Optional[Tensor] = None  # indices of the rows still pending; None = all rows (first round)
    for round_ in range(1, _MAX_ROUNDS + 1):
        b, omb, *original = [c.unsqueeze(1) for c in (consts if rows is None else [c[rows] for c in consts])]
        shape = (b.shape[0], block)
        opl, omi = _symmetric_beta(shape, m, kappa, generator)
        log_u = torch.log(torch.rand(shape, dtype=kappa.dtype, device=kappa.device, generator=generator))
        if not original:
            # Wood's test with the exact b: m (log tau - tau + 1) >= log u, tau - 1 = (1-b) s / ((1-s) + b (1+s))
            tau_m1 = omb * (opl - omi) / 2.0 / (omi + b * opl)
            accept = log_u <= m * (torch.log1p(tau_m1) - tau_m1)
        else:  # the original's b: m (log tau - tau + h) >= log u, tau = g / ((1-s) + b (1+s))
            g, h = original
            tau = g / (omi + b * opl)
            accept = log_u <= m * (torch.log(tau) - tau + h)
        first = accept.to(torch.uint8).argmax(dim=1, keepdim=True)  # index of the first accepted candidate
        got = accept.any(dim=1)
        sel_plus, sel_minus = opl.gather(1, first).squeeze(1), omi.gather(1, first).squeeze(1)
        if rows is None:
            one_plus, one_minus = sel_plus, sel_minus  # rows without an accepted candidate are redone below
        else:
            one_plus[rows] = torch.where(got, sel_plus, one_plus[rows])
            one_minus[rows] = torch.where(got, sel_minus, one_minus[rows])
        if bool(got.all()):  # the one host-device sync of a round
            return one_plus, one_minus, round_
        pending = (~got).nonzero().squeeze(1)
        rows = pending if rows is None else rows[pending]
    raise RuntimeError(
        f"vMF rejection sampler: {rows.numel()} of {n_rows} rows had no accepted proposal after {_MAX_ROUNDS} rounds "
        f"of {block} candidates (d = {m + 1}); this should not happen for kappa in [1e-4, 1e5] -- check kappa for "
        "NaN/inf or extreme values."
    )


def _one_minus_w(kappa: Tensor, d: int, generator: Optional[torch.Generator], sampler: str = "exact") -> Tensor:
    """1 - w with w = mu^T x ~ the vMF marginal (`sampler="exact"`), differentiable in kappa; shape of `kappa`.

    `sampler="original"` uses the original code's b (biased for d != 3; d = 3 is the closed form either way).
    """
    if d == 3:
        v = torch.rand(kappa.shape, dtype=kappa.dtype, device=kappa.device, generator=generator)
        return -torch.log1p(v * torch.expm1(-2.0 * kappa)) / kappa
    m = d - 1
    with torch.no_grad():
        one_plus, one_minus, _ = _accepted_proposal(kappa.detach(), m, generator, sampler)
    one_plus, one_minus = one_plus.reshape(kappa.shape), one_minus.reshape(kappa.shape)
    b = _wood_constants(kappa, m)[0] if sampler == "exact" else _original_wood_constants(kappa, m)[0]
    # w = (1 - (1+b) eps) / (1 - (1-b) eps), eps = (1+s)/2  =>  1 - w = 2 b (1+s) / ((1-s) + b (1+s))
    return 2.0 * b * one_plus / (one_minus + b * one_plus)


def _householder_axis(mu: Tensor) -> Tensor:
    """Unit u with (I - 2 u u^T) e1 = mu, or 0 where mu == e1 (identity). Scaled before normalising so the result is
    a unit vector whenever it is not 0 (a non-unit u would make the reflection non-orthogonal), and NaN-free in
    both value and gradient at mu = e1."""
    diff = torch.cat([1.0 - mu[..., :1], -mu[..., 1:]], dim=-1)
    scale = diff.detach().abs().amax(dim=-1, keepdim=True)
    diff = diff / torch.where(scale > 0, scale, torch.ones_like(scale))
    norm = torch.linalg.vector_norm(diff, dim=-1, keepdim=True)
    return diff / torch.where(norm > 0, norm, torch.ones_like(norm))


def sample_vmf(
    mu: Tensor,
    kappa: Tensor,
    n_samples: int,
    generator: Optional[torch.Generator] = None,
    sampler: str = "exact",
) -> Tensor:
    """Draw `n_samples` reparameterised samples from vMF(mu_i, kappa_i) for every row i.

    Args:
        mu: N x D mean directions (unit rows: the reflection maps e1 to mu only if |mu| = 1), D >= 2.
        kappa: N concentrations (> 0; tested on [1e-4, 1e5]).
        n_samples: S, the number of draws per row.
        generator: source of all randomness when given (must live on mu's device).
        sampler: "exact" (Wood's envelope; draws follow vMF) or "original" (the original code's b shortcut for
            kappa > 10, blended on 10..11: biased -- at D = 128, kappa = 60 E[mu^T x] is about 0.306 instead of
            0.396 -- kept for parity runs; no effect at D = 3).

    Returns:
        S x N x D unit vectors, in mu's dtype and on its device; differentiable w.r.t. mu and kappa (see the
        module docstring for the bias of the kappa-gradient when D != 3).
    """
    if mu.dim() != 2 or mu.shape[1] < 2:
        raise ValueError(f"sample_vmf: mu must be N x D with D >= 2, got shape {tuple(mu.shape)}")
    if not torch.is_floating_point(mu):
        raise TypeError(f"sample_vmf: mu must be a floating tensor, got {mu.dtype}")
    n, d = mu.shape
    kappa = torch.as_tensor(kappa, device=mu.device).to(mu.dtype)
    if kappa.shape != (n,):
        raise ValueError(f"sample_vmf: kappa must have shape ({n},) to match mu, got {tuple(kappa.shape)}")
    if n_samples < 1:
        raise ValueError(f"sample_vmf: n_samples must be >= 1, got {n_samples}")
    if sampler not in SAMPLERS:
        raise ValueError(f"sample_vmf: sampler={sampler!r} is not one of {', '.join(SAMPLERS)}")
    kw = dict(dtype=mu.dtype, device=mu.device)

    kappa_rows = kappa.unsqueeze(0).expand(n_samples, n)
    omw = _one_minus_w(kappa_rows, d, generator, sampler).clamp(0.0, 2.0)  # S x N
    # sqrt(1 - w^2); clamp only guards the exact 0 (w = 1), where sqrt has an infinite derivative
    radius = torch.sqrt((omw * (2.0 - omw)).clamp_min(torch.finfo(mu.dtype).tiny))

    # tangent direction: normalised Gaussian (D = 2: one coordinate, so +-1); the 1/|g| is folded into the radius
    gauss = torch.randn((n_samples, n, d - 1), generator=generator, **kw)
    scale = radius / torch.linalg.vector_norm(gauss, dim=-1).clamp_min(torch.finfo(mu.dtype).tiny)  # S x N
    w = 1.0 - omw
    x = torch.cat([w.unsqueeze(-1), gauss * scale.unsqueeze(-1)], dim=-1)  # samples around e1

    # Householder reflection e1 -> mu: x - 2 (x.u) u, with x.u from the pieces (one pass over gauss, not over x)
    u = _householder_axis(mu)  # N x D
    proj = w * u[:, 0] + scale * torch.einsum("snk,nk->sn", gauss, u[:, 1:])
    return torch.addcmul(x, proj.unsqueeze(-1), u, value=-2.0)


class VonMisesFisher:
    """Small convenience wrapper: vMF(loc, scale) with loc N x D unit rows and scale (kappa) of shape N."""

    def __init__(self, loc: Tensor, scale: Tensor) -> None:
        self.loc = loc
        self.scale = scale
        self.dim = loc.shape[-1]

    @property
    def mean(self) -> Tensor:
        """E[x] = A_d(kappa) mu (not a unit vector)."""
        return mean_resultant_length(self.dim, self.scale).unsqueeze(-1) * self.loc

    def rsample(self, n: int = 1, generator: Optional[torch.Generator] = None) -> Tensor:
        """n x N x D reparameterised samples."""
        return sample_vmf(self.loc, self.scale, n, generator)

    def log_prob(self, x: Tensor) -> Tensor:
        """log C_d(kappa) + kappa mu^T x with the exact normaliser; x broadcasts against N x D."""
        return log_vmf_normalizer(self.dim, self.scale) + self.scale * (x * self.loc).sum(-1)
