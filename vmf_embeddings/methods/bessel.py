"""Modified Bessel functions of the first kind in log space, and the von Mises-Fisher normaliser.

Why this module exists: the vMF normaliser C_d(kappa) = kappa^(d/2-1) / ((2 pi)^(d/2) I_(d/2-1)(kappa)) is needed
at orders up to ~1000 (d = 2048) and kappa up to 1e5, where I_nu over- or underflows in any float type and scipy's
`ive(255, 0.01)` already underflows to 0 (NaN normalisers at d = 512, small kappa). Everything here works on
log I_nu directly and is written in torch, so it runs on any device, vectorised, with exact gradients in kappa.

Algorithm for log I_nu(x), nu >= 0 (a Python float), x >= 0 (a tensor):

* r = hypot(nu, x) >= `_DEBYE_RADIUS`: Debye's uniform asymptotic expansion
  I_nu(nu z) ~ e^(nu eta) / sqrt(2 pi nu) / (1 + z^2)^(1/4) * sum_k u_k(t) / nu^k, t = 1/sqrt(1 + z^2).
  Rewritten in (nu, x): nu eta = r - nu asinh(nu/x), sqrt(nu) (1 + z^2)^(1/4) = sqrt(r), and because
  u_k(t) = t^k P_k(t^2), every term is P_k(p) / r^k with p = (nu/r)^2. In that form the series is asymptotic in r,
  not only in nu: at nu = 0 it *is* Hankel's large-x expansion, so one formula covers large nu (any x) and large x
  (any nu). The first neglected term is kept below 2e-15 in log I: 12 terms at r >= 30, fewer at high order
  (`_debye_terms`); checked against mpmath on the boundary circle r = 30 in tests/methods/test_bessel.py.
* r < `_DEBYE_RADIUS` (so nu < 30 and x < 30): the power series
  I_nu(x) = (x/2)^nu / Gamma(nu+1) * sum_k (x^2/4)^k / (k! (nu+1)_k). All terms are positive (no cancellation) and
  the tail sum T = sum_{k>=1} is kept apart, so log I_0(x) = log1p(T) stays relatively accurate as x -> 0.

The ratio R_nu(x) = I_(nu+1)(x)/I_nu(x) uses the same two regions, the Debye part written as a cancellation-free
difference (r1 - r0 = (2 nu + 1)/(r1 + r0), ...) rather than exp(log I_(nu+1) - log I_nu).

Gradients are custom autograd Functions: d/dx log I_nu = R_nu + nu/x, dR/dx = 1 - R^2 - (2 nu + 1) R / x,
d/dkappa log C_d = -A_d. Using these identities instead of differentiating the expansions keeps gradients exact and
avoids the catastrophic cancellation nu/kappa - (R + nu/kappa) at small kappa.

Internally everything is evaluated in float64 (float32 on devices without float64, e.g. MPS) and cast back to the
input dtype, so float32 callers get float64-accurate values rounded once, instead of float32 round-off in intermediate
quantities of size ~kappa.

Fast path (`log_vmf_normalizer` and `mean_resultant_length` on float32 and lower-precision inputs, or `fast=True`):
the loss needs log C_d on S x N x C concentrations every step, and the reference evaluation above (two orders, both
regions, a dozen Debye polynomials, the ratio recomputed in the backward pass) costs about a quarter more time per
vMF training step than the paper's closed-form approximation (scripts/bench_train.py). The fast path evaluates
log C_d, A_d and dA_d/dkappa together, in the work dtype (float64; float32 on MPS, where the accuracy below is not
reached), with a few dozen tensor operations, and keeps A_d for the backward pass:

* d = 3: closed forms, C_3(k) = k / (4 pi sinh k) and A_3(k) = coth k - 1/k (its Taylor series below k = 0.1).
* hypot(nu, kappa) >= `_FAST_RADIUS` (20; every kappa once d >= 42): Debye's expansion in log form,
  log sum_k P_k(p)/r^k = sum_k Q_k(p)/r^k. At a fixed order p = (nu/r)^2 = nu^2 y^2 with y = 1/r, so the whole
  correction is ONE polynomial in y (degree 3K, coefficients exact rationals from the Q_k), evaluated by Horner;
  K is the fewest terms whose first neglected one is below `_FAST_TOL` = 1e-9 (7 at low order, 4 at d = 128, 3 at
  d = 512, 2 at d = 2048). A_d and dA_d/dkappa are the exact kappa-derivatives of that truncated expansion,
  A = kappa (1/(nu + r) - y^2 N(y)) with N = 1/2 + y L'(y), so the gradient of log C_d is exactly -A_d.
* inside that circle (2 <= d <= 41, small kappa): the power series, as above, on those entries only (on CPU by
  indexing; on accelerators both branches run and torch.where picks, so there is no host-device sync).

Measured against mpmath (tests/methods/test_bessel.py) for d in {2, 3, 4, 16, 41, 42, 128, 512, 2048}, kappa in
{0} U [1e-3, 1e5] and both sides of each switch: float32 results within 1e-7 relative (log C_d relative to
max(1, |log C_d|)), i.e. float32 rounding; before rounding, values within 1e-9 and dA_d/dkappa within 1e-7.

The paper's closed-form approximations (`bessel_ratio_approx`, `log_vmf_normalizer_approx`) are kept separately
for faithful reproduction; they are evaluated in the input dtype, as in the original code.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache
from typing import List, Optional, Tuple, Union

import torch
from torch import Tensor

__all__ = [
    "log_iv",
    "bessel_ratio",
    "mean_resultant_length",
    "log_vmf_normalizer",
    "bessel_ratio_approx",
    "log_vmf_normalizer_approx",
]

#: most Debye terms u_1..u_K ever kept (u_0 = 1 is always there); fewer at high order, see `_debye_terms`
_MAX_DEBYE_TERMS = 12
#: size allowed for the first neglected Debye term (absolute error in log I)
_DEBYE_TOL = 2e-15
#: the Debye/Hankel expansion is used where hypot(nu, x) >= this radius, the power series inside it
_DEBYE_RADIUS = 30.0
#: relative size of the first neglected power-series term
_SERIES_TOL = 1e-18

_LOG_2PI = math.log(2.0 * math.pi)

Number = Union[float, int]


# ----------------------------------------------------------------------------------------------------------------
# Debye polynomials
# ----------------------------------------------------------------------------------------------------------------
def _debye_polynomials_exact(n_terms: int) -> List[List[Fraction]]:
    """Coefficients of P_k with u_k(t) = t^k P_k(t^2), k = 0..n_terms (ascending powers of p = t^2), exact.

    Generated from the recursion u_(k+1)(t) = t^2 (1 - t^2) u_k'(t) / 2 + (1/8) int_0^t (1 - 5 s^2) u_k(s) ds
    (DLMF 10.41.E9) in rational arithmetic, so no coefficient is hand-typed.
    """
    polys = [{0: Fraction(1)}]
    for _ in range(n_terms):
        u = polys[-1]
        nxt: dict = {}
        for power, coef in u.items():
            if power > 0:
                deriv = coef * power  # coefficient of t^(power - 1) in u'
                nxt[power + 1] = nxt.get(power + 1, 0) + deriv / 2
                nxt[power + 3] = nxt.get(power + 3, 0) - deriv / 2
            nxt[power + 1] = nxt.get(power + 1, 0) + coef / (8 * (power + 1))
            nxt[power + 3] = nxt.get(power + 3, 0) - 5 * coef / (8 * (power + 3))
        polys.append({p: c for p, c in nxt.items() if c != 0})
    out = []
    for k, u in enumerate(polys):
        coefs = [Fraction(0)] * (k + 1)
        for power, coef in u.items():
            coefs[(power - k) // 2] = coef
        out.append(coefs)
    return out


def _debye_polynomials(n_terms: int) -> List[List[float]]:
    """`_debye_polynomials_exact` rounded to floats."""
    return [[float(c) for c in coefs] for coefs in _debye_polynomials_exact(n_terms)]


_DEBYE_P = _debye_polynomials(_MAX_DEBYE_TERMS + 1)


def _debye_bound(k: int) -> float:
    """max_{p in [0, 1]} |P_k(p)| on a fine grid (bounds the first neglected Debye term)."""
    coefs = _DEBYE_P[k]
    return max(abs(sum(c * (i / 4096.0) ** j for j, c in enumerate(coefs))) for i in range(4097))


@lru_cache(maxsize=None)
def _debye_terms(nu: float) -> int:
    """Fewest Debye terms whose first neglected term P_(K+1)/r^(K+1) is below _DEBYE_TOL for every r >= r_min.

    r = hypot(nu, x) >= max(nu, _DEBYE_RADIUS), known on the host, so high orders need fewer terms
    (12 at r >= 30, 8 at nu = 63, 6 at nu = 255, 4 at nu = 1023).
    """
    r_min = max(nu, _DEBYE_RADIUS)
    for k in range(1, _MAX_DEBYE_TERMS + 1):
        if _debye_bound(k + 1) / r_min ** (k + 1) <= _DEBYE_TOL:
            return k
    raise AssertionError("_DEBYE_RADIUS too small for _MAX_DEBYE_TERMS")  # pragma: no cover


class _Coefs:
    """Host-side coefficient lists turned into 0-dim tensors once per (device, dtype): `torch.addcmul` needs tensor
    operands, and one fused multiply-add pass per coefficient halves the memory traffic of `acc * p + c`."""

    _cache: dict = {}

    @classmethod
    def get(cls, key: tuple, values: List[float], like: Tensor) -> List[Tensor]:
        full_key = (key, like.device, like.dtype)
        if full_key not in cls._cache:
            t = torch.tensor(values, dtype=like.dtype, device=like.device)
            cls._cache[full_key] = list(t.unbind(0))
        return cls._cache[full_key]


def _horner(coefs: List[Tensor], z: Tensor) -> Tensor:
    """sum_j coefs[j] z^j with one fused pass per coefficient."""
    acc = coefs[-1].expand_as(z)
    for c in reversed(coefs[:-1]):
        acc = torch.addcmul(c, acc, z)
    return acc


def _debye_log_sum(nu: float, r: Tensor, p: Tensor) -> Tensor:
    """log sum_{k<=K} P_k(p) / r^k (the Debye correction factor, 1 + O(1/r)); K from `_debye_terms(nu)`."""
    n_terms = _debye_terms(nu)
    y = 1.0 / r
    polys = [_Coefs.get(("debye", k), _DEBYE_P[k], r) for k in range(1, n_terms + 1)]
    acc = _horner(polys[-1], p)
    for coefs in reversed(polys[:-1]):
        acc = torch.addcmul(_horner(coefs, p), acc, y)
    return torch.log1p(acc * y)


# ----------------------------------------------------------------------------------------------------------------
# Power series
# ----------------------------------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _series_coefficients(nu: float, radius: float = _DEBYE_RADIUS) -> List[float]:
    """c_k = 1 / (k! (nu+1)_k), k = 1..K, with K such that the tail is negligible for every x < radius."""
    q = radius**2 / 4.0
    coefs: List[float] = []
    c, term, total, k = 1.0, 1.0, 1.0, 0
    while True:
        k += 1
        c /= k * (nu + k)
        coefs.append(c)
        term *= q / (k * (nu + k))
        total += term
        # terms decrease geometrically (ratio < 1/2) once k (nu + k) > 2 q; stop when the next ones are negligible
        if k * (nu + k) > 2.0 * q and term < _SERIES_TOL * total:
            return coefs


def _series_tail(nu: float, x: Tensor, radius: float = _DEBYE_RADIUS) -> Tensor:
    """T_nu(x) = sum_{k>=1} (x^2/4)^k / (k! (nu+1)_k), so I_nu(x) = (x/2)^nu / Gamma(nu+1) (1 + T_nu(x)).

    Positive coefficients, Horner in q = x^2/4: no cancellation; T is kept apart from the leading 1 for log1p.
    """
    q = x * x / 4.0
    coefs = _Coefs.get(("series", nu, radius), _series_coefficients(nu, radius), x)
    return _horner(coefs, q) * q


# ----------------------------------------------------------------------------------------------------------------
# Core evaluations (no autograd; work dtype)
# ----------------------------------------------------------------------------------------------------------------
def _work_dtype(x: Tensor) -> torch.dtype:
    return torch.float32 if x.device.type == "mps" else torch.float64


def _check_nu(nu: Number) -> float:
    nu = float(nu)
    if not math.isfinite(nu) or nu < 0.0:
        raise ValueError(f"Bessel order nu must be a finite number >= 0, got {nu}")
    return nu


def _regions(nu: float, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """(mask of the Debye region, x clamped into the Debye region, x clamped into the series region)."""
    x_min_debye = math.sqrt(max(_DEBYE_RADIUS**2 - nu * nu, 0.0))
    use_debye = x >= x_min_debye
    return use_debye, x.clamp_min(x_min_debye), x.clamp_max(_DEBYE_RADIUS)


def _log_iv_impl(nu: float, x: Tensor, minus_nu_log_x: bool) -> Tensor:
    """log I_nu(x), or log I_nu(x) - nu log x (finite at x = 0) when `minus_nu_log_x`."""

    def debye(xd: Tensor) -> Tensor:
        r = torch.hypot(torch.full_like(xd, nu), xd)
        p = (nu / r) ** 2
        lead = r - nu * torch.log(nu + r) if minus_nu_log_x else r - nu * torch.asinh(nu / xd)
        return lead - 0.5 * (_LOG_2PI + torch.log(r)) + _debye_log_sum(nu, r, p)

    if nu >= _DEBYE_RADIUS:
        return debye(x)

    use_debye, xd, xs = _regions(nu, x)
    tail = _series_tail(nu, xs)
    series = torch.log1p(tail) - (nu * math.log(2.0) + math.lgamma(nu + 1.0))
    if not minus_nu_log_x and nu > 0.0:
        series = series + nu * torch.log(xs)
    return torch.where(use_debye, debye(xd), series)


def _ratio_impl(nu: float, x: Tensor) -> Tuple[Tensor, Tensor]:
    """(R_nu(x), dR_nu/dx) with R_nu = I_(nu+1)/I_nu, both accurate also where R -> 1 (large x) or R -> 0."""

    def debye(xd: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        nu_t = torch.full_like(xd, nu)
        r0 = torch.hypot(nu_t, xd)
        r1 = torch.hypot(nu_t + 1.0, xd)
        dr = (2.0 * nu + 1.0) / (r1 + r0)  # r1 - r0 without cancellation
        # log I_(nu+1) - log I_nu with every difference of large terms rewritten in closed form:
        # (nu+1) asinh((nu+1)/x) - nu asinh(nu/x) = asinh((nu+1)/x) + nu log((nu+1+r1)/(nu+r0))
        log_ratio = (
            dr
            - torch.asinh((nu + 1.0) / xd)
            - nu * torch.log1p((1.0 + dr) / (nu + r0))
            - 0.5 * torch.log1p(dr / r0)
            + _debye_log_sum(nu + 1.0, r1, ((nu + 1.0) / r1) ** 2)
            - _debye_log_sum(nu, r0, (nu / r0) ** 2)
        )
        ratio = torch.exp(log_ratio)
        one_minus = -torch.expm1(log_ratio)
        # R/x -> 1/(2 nu + 2) as x -> 0 (only reachable here when nu >= _DEBYE_RADIUS)
        ratio_over_x = torch.where(xd > 0, ratio / xd, torch.full_like(xd, 0.5 / (nu + 1.0)))
        return ratio, one_minus, ratio_over_x

    def finish(ratio: Tensor, one_minus: Tensor, ratio_over_x: Tensor) -> Tuple[Tensor, Tensor]:
        # R' = 1 - R^2 - (2 nu + 1) R / x, with 1 - R^2 = (1 - R)(1 + R) from an accurate 1 - R (R -> 1 at large x)
        deriv = one_minus * (2.0 - one_minus) - (2.0 * nu + 1.0) * ratio_over_x
        return ratio, deriv

    if nu >= _DEBYE_RADIUS:
        return finish(*debye(x))

    use_debye, xd, xs = _regions(nu, x)
    tail0, tail1 = _series_tail(nu, xs), _series_tail(nu + 1.0, xs)
    s_ratio_over_x = (0.5 / (nu + 1.0)) * (1.0 + tail1) / (1.0 + tail0)
    s_ratio = s_ratio_over_x * xs
    d_ratio, d_one_minus, d_ratio_over_x = debye(xd)
    return finish(
        torch.where(use_debye, d_ratio, s_ratio),
        torch.where(use_debye, d_one_minus, 1.0 - s_ratio),
        torch.where(use_debye, d_ratio_over_x, s_ratio_over_x),
    )


# ----------------------------------------------------------------------------------------------------------------
# Autograd wrappers
# ----------------------------------------------------------------------------------------------------------------
def _as_float_tensor(x: Union[Tensor, Number]) -> Tensor:
    x = torch.as_tensor(x)
    if not torch.is_floating_point(x):
        x = x.to(torch.get_default_dtype())
    return x


class _BesselRatio(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, nu: float) -> Tensor:  # type: ignore[override]
        ratio, deriv = _ratio_impl(nu, x.detach().to(_work_dtype(x)))
        ctx.save_for_backward(deriv.to(x.dtype))
        return ratio.to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (deriv,) = ctx.saved_tensors
        return grad * deriv, None


class _LogIv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, nu: float) -> Tensor:  # type: ignore[override]
        ctx.nu = nu
        ctx.save_for_backward(x)
        return _log_iv_impl(nu, x.detach().to(_work_dtype(x)), minus_nu_log_x=False).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        nu = ctx.nu
        dlog = _BesselRatio.apply(x, nu)
        if nu != 0.0:
            dlog = dlog + nu / x
        return grad * dlog, None


class _LogVmfNormalizer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kappa: Tensor, d: int) -> Tensor:  # type: ignore[override]
        nu = d / 2.0 - 1.0
        ctx.nu = nu
        ctx.save_for_backward(kappa)
        k = kappa.detach().to(_work_dtype(kappa))
        out = -(d / 2.0) * _LOG_2PI - _log_iv_impl(nu, k, minus_nu_log_x=True)
        return out.to(kappa.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (kappa,) = ctx.saved_tensors
        # d/dkappa log C_d = nu/kappa - (R + nu/kappa) = -A_d(kappa): written directly, no cancellation at small kappa
        return -grad * _BesselRatio.apply(kappa, ctx.nu), None


# ----------------------------------------------------------------------------------------------------------------
# Fast path: log C_d and A_d with their derivatives in one pass (float32 and lower-precision inputs)
# ----------------------------------------------------------------------------------------------------------------
#: the fast path uses Debye's expansion where hypot(nu, kappa) >= this radius, the power series inside it
_FAST_RADIUS = 20.0
#: size allowed for the first neglected term of the fast Debye sum (absolute error in log I_nu): ~60x below
#: float32's resolution, so a float32 caller sees essentially only the final rounding
_FAST_TOL = 1e-9
#: most terms the fast Debye sum may keep (needed only near the radius at low order)
_MAX_FAST_TERMS = 12
#: d = 3: A_3 = coth(kappa) - 1/kappa from its Taylor series below this kappa (the closed form cancels there)
_LANGEVIN_SWITCH = 0.1
#: Taylor coefficients of (coth(k) - 1/k) / k in k^2 (next term 2 k^8 / 93555 < 3e-13 relative at k = 0.1)
_LANGEVIN_SERIES = [1.0 / 3.0, -1.0 / 45.0, 2.0 / 945.0, -1.0 / 4725.0]


def _poly_mul(a: List[Fraction], b: List[Fraction]) -> List[Fraction]:
    out = [Fraction(0)] * (len(a) + len(b) - 1)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            out[i + j] += x * y
    return out


@lru_cache(maxsize=None)
def _debye_log_polynomials(n_terms: int) -> Tuple[Tuple[Fraction, ...], ...]:
    """Q_k(p), k = 0..n_terms, with log sum_k P_k(p) y^k = sum_(k>=1) Q_k(p) y^k as formal power series in y.

    Exact (rational): for S = 1 + sum a_k y^k, log S = sum b_k y^k with b_k = a_k - (1/k) sum_(j<k) j b_j a_(k-j).
    Q_k has degree k in p, like P_k.
    """
    P = _debye_polynomials_exact(n_terms)
    Q: List[List[Fraction]] = [[Fraction(0)]]
    for k in range(1, n_terms + 1):
        acc = list(P[k])
        for j in range(1, k):
            for i, c in enumerate(_poly_mul(Q[j], P[k - j])):
                acc[i] -= Fraction(j, k) * c
        Q.append(acc)
    return tuple(tuple(q) for q in Q)


@lru_cache(maxsize=None)
def _debye_log_bound(k: int) -> float:
    """max_(p in [0, 1]) |Q_k(p)| on a fine grid (bounds the first neglected term of the fast Debye sum)."""
    coefs = [float(c) for c in _debye_log_polynomials(_MAX_FAST_TERMS + 1)[k]]
    return max(abs(sum(c * (i / 4096.0) ** j for j, c in enumerate(coefs))) for i in range(4097))


@lru_cache(maxsize=None)
def _fast_debye_terms(nu: float) -> int:
    """Fewest log-Debye terms Q_1..Q_K whose first neglected term Q_(K+1)/r^(K+1) is below _FAST_TOL for all
    r = hypot(nu, x) >= max(nu, _FAST_RADIUS): 7 at low order, 4 at nu = 63 (d = 128), 3 at d = 512, 2 at d = 2048."""
    r_min = max(nu, _FAST_RADIUS)
    for k in range(1, _MAX_FAST_TERMS + 1):
        if _debye_log_bound(k + 1) / r_min ** (k + 1) <= _FAST_TOL:
            return k
    raise AssertionError("_FAST_RADIUS too small for _MAX_FAST_TERMS")  # pragma: no cover


@lru_cache(maxsize=None)
def _fast_debye_coefficients(d: int) -> Tuple[List[float], List[float], List[float]]:
    """Coefficients (ascending) of three polynomials in y = 1/r, r = hypot(nu, x), nu = d/2 - 1:

    L(y) / y with L(y) = sum_(k=1..K) Q_k(nu^2 y^2) y^k, the log of the Debye sum (p = (nu/r)^2 = nu^2 y^2, so at a
    fixed order it is one polynomial in y, of degree 3K); N(y) = 1/2 + y L'(y); and N'(y). Built exactly in
    rational arithmetic, then rounded.
    """
    nu = Fraction(d - 2, 2)
    n_terms = _fast_debye_terms(float(nu))
    Q = _debye_log_polynomials(_MAX_FAST_TERMS + 1)
    coefs = [Fraction(0)] * (3 * n_terms + 1)  # coefs[m]: coefficient of y^m in L
    for k in range(1, n_terms + 1):
        for j, c in enumerate(Q[k]):
            coefs[k + 2 * j] += c * nu ** (2 * j)
    while len(coefs) > 2 and coefs[-1] == 0:  # nu = 0: only y^1..y^K survive
        coefs.pop()
    l_over_y = coefs[1:]
    n_poly = [Fraction(1, 2)] + [m * coefs[m] for m in range(1, len(coefs))]
    dn_poly = [m * n_poly[m] for m in range(1, len(n_poly))]
    return [float(c) for c in l_over_y], [float(c) for c in n_poly], [float(c) for c in dn_poly]


def _poly(coefs: List[Tensor], z: Tensor) -> Tensor:
    """sum_j coefs[j] z^j (ascending, 0-dim tensor coefficients, at least two), one fused op per coefficient."""
    acc = torch.addcmul(coefs[-2], coefs[-1], z)
    for c in reversed(coefs[:-2]):
        acc = torch.addcmul(c, acc, z)
    return acc


def _fast_debye(d: int, x: Tensor, want_log: bool, want_a: bool, want_deriv: bool):
    """(log I_nu(x) - nu log x, A = I_(nu+1)/I_nu, dA/dx) from Debye's expansion in log form, nu = d/2 - 1.

    With r = hypot(nu, x), y = 1/r: log I_nu(x) - nu log x = r - nu log(nu + r) - 1/2 log(2 pi r) + L(y). A and
    dA/dx are the exact x-derivatives of that truncated expansion, simplified so that nothing cancels:
        A     = x (1/(nu + r) - y^2 N(y)),
        dA/dx = nu y/(nu + r) + y^2 ((1 - 2p) N(y) + (1 - p) y N'(y)),  p = (nu y)^2,
    so the gradient of the fast log C_d is exactly the fast -A_d. Outputs not wanted are None.
    """
    nu = d / 2.0 - 1.0
    l_c, n_c, dn_c = (_Coefs.get(("fast", d, name), values, x)
                      for name, values in zip(("l", "n", "dn"), _fast_debye_coefficients(d)))
    r = torch.sqrt(torch.add(x * x, nu * nu))
    y = torch.reciprocal(r)
    nu_r = r + nu
    log_part = a = deriv = None
    if want_log:
        log_l = _poly(l_c, y) * y
        log_part = torch.add(r + log_l, torch.log(nu_r), alpha=-nu).add_(torch.log(r), alpha=-0.5) - 0.5 * _LOG_2PI
    if want_a or want_deriv:
        inv_nu_r = torch.reciprocal(nu_r)
        y2 = y * y
        n_val = _poly(n_c, y)
        if want_a:
            a = x * torch.addcmul(inv_nu_r, y2, n_val, value=-1.0)
        if want_deriv:
            p = (nu * y) ** 2
            inner = torch.addcmul((1.0 - p) * y * _poly(dn_c, y), 1.0 - 2.0 * p, n_val)
            deriv = torch.addcmul(nu * y * inv_nu_r, y2, inner)
    return log_part, a, deriv


def _fast_series(d: int, x: Tensor, want_log: bool, want_a: bool, want_deriv: bool):
    """`_fast_debye`'s outputs from the power series (all terms positive), for x < _FAST_RADIUS and nu < it."""
    nu = d / 2.0 - 1.0
    tail0 = _series_tail(nu, x, _FAST_RADIUS)
    log_part = a = deriv = None
    if want_log:
        log_part = torch.log1p(tail0) - (nu * math.log(2.0) + math.lgamma(nu + 1.0))
    if want_a or want_deriv:
        ratio_over_x = (0.5 / (nu + 1.0)) * (1.0 + _series_tail(nu + 1.0, x, _FAST_RADIUS)) / (1.0 + tail0)
        a = ratio_over_x * x
        if want_deriv:
            deriv = (1.0 - a) * (1.0 + a) - (2.0 * nu + 1.0) * ratio_over_x
    return log_part, a, deriv


def _fast_d3(x: Tensor, want_log: bool, want_a: bool, want_deriv: bool):
    """d = 3 (nu = 1/2) in closed form: C_3(k) = k / (4 pi sinh k), A_3(k) = coth k - 1/k (Langevin function).

    With u = 1 - e^(-2k): log C_3 = log(k / u) - k - log(2 pi), A_3 = 2/u - 1 - 1/k, dA/dk = 1/k^2 - 1/sinh(k)^2 =
    1/k^2 - 4 (1 - u)/u^2 (no cancellation at large k). Below _LANGEVIN_SWITCH, where 2/u - 1/k cancels, A_3 comes
    from its Taylor series, dA/dk = 1 - A^2 - 2 A/k, and u from expm1. Returns (log C_3 itself, A, dA/dk).
    """

    def closed(k: Tensor):  # k >= _LANGEVIN_SWITCH: u = 1 - exp(-2k) is accurate there (exp is cheaper than expm1)
        u = 1.0 - torch.exp(-2.0 * k)
        return _d3_outputs(k, u, want_log, want_a, want_deriv, None)

    def small(k: Tensor):
        k = k.clamp_min(torch.finfo(k.dtype).tiny)  # k/u -> 1/2 as k -> 0: log C_3(0) = -log(4 pi)
        ratio_over_k = _poly(_Coefs.get(("langevin",), _LANGEVIN_SERIES, k), k * k)
        return _d3_outputs(k, -torch.expm1(-2.0 * k), want_log, want_a, want_deriv, ratio_over_k)

    return _patch_below(x, _LANGEVIN_SWITCH, small, closed)


def _d3_outputs(k: Tensor, u: Tensor, want_log: bool, want_a: bool, want_deriv: bool, ratio_over_k: Optional[Tensor]):
    """`_fast_d3`'s outputs from k, u = 1 - e^(-2k), and A_3/k from the Taylor series (small k) or None."""
    log_c = a = deriv = None
    if want_log:
        log_c = (torch.log(k / u) - k) - _LOG_2PI
    if want_a or want_deriv:
        if ratio_over_k is None:
            inv_k = torch.reciprocal(k)
            a = (2.0 / u - 1.0) - inv_k
            if want_deriv:
                deriv = inv_k * inv_k - 4.0 * (1.0 - u) / (u * u)
        else:
            a = ratio_over_k * k
            if want_deriv:
                deriv = (1.0 - a * a) - 2.0 * ratio_over_k
    return log_c, (a if want_a else None), deriv


def _index_on_host(x: Tensor) -> bool:
    """Whether `_patch_below` may split x by data-dependent indexing: on CPU there is no host-device sync to avoid."""
    return x.device.type == "cpu"


def _patch_below(x: Tensor, bound: float, low_fn, high_fn):
    """Outputs of high_fn(x) (valid where x >= bound), with the entries where x < bound taken from low_fn instead
    (valid there); both return tuples of flat tensors or None, and each is called at most once.

    On CPU only the entries each side needs are evaluated (found by indexing; there is no device to synchronise
    with). Elsewhere both run on every entry, clamped into their regions, and torch.where picks: no host-device sync.
    """
    if _index_on_host(x):
        if x.numel() == 0:
            return high_fn(x)
        lowest, highest = torch.aminmax(x)
        if not bool(lowest < bound):  # also taken for NaN input, which then propagates
            return high_fn(x)
        if bool(highest < bound):
            return low_fn(x)
        idx = (x < bound).nonzero().squeeze(1)
        low = low_fn(x.index_select(0, idx))
        return tuple(h if h is None else h.index_copy_(0, idx, lo) for h, lo in zip(high_fn(x.clamp_min(bound)), low))
    mask = x < bound
    low = low_fn(x.clamp_max(bound))
    return tuple(h if h is None else torch.where(mask, lo, h) for h, lo in zip(high_fn(x.clamp_min(bound)), low))


def _fast_eval(d: int, x: Tensor, want_log: bool, want_a: bool, want_deriv: bool):
    """(log C_d(x), A_d(x), dA_d/dx) for a flat work-dtype tensor x >= 0; outputs not wanted are None."""
    if d == 3:
        return _fast_d3(x, want_log, want_a, want_deriv)
    nu = d / 2.0 - 1.0
    x_min = math.sqrt(max(_FAST_RADIUS**2 - nu * nu, 0.0))  # the Debye region is hypot(nu, x) >= _FAST_RADIUS
    flags = (want_log, want_a, want_deriv)
    if x_min > 0:
        log_part, a, deriv = _patch_below(
            x, x_min, lambda xs: _fast_series(d, xs, *flags), lambda xd: _fast_debye(d, xd, *flags))
    else:
        log_part, a, deriv = _fast_debye(d, x, *flags)
    log_c = None if log_part is None else (-(d / 2.0) * _LOG_2PI) - log_part
    return log_c, a, deriv


class _FastLogVmfNormalizer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kappa: Tensor, d: int) -> Tensor:  # type: ignore[override]
        ctx.d = d
        need_grad = ctx.needs_input_grad[0]
        log_c, a, _ = _fast_eval(d, kappa.detach().to(_work_dtype(kappa)).reshape(-1), True, need_grad, False)
        if need_grad:
            ctx.save_for_backward(kappa, a.reshape(kappa.shape).to(kappa.dtype))
        return log_c.reshape(kappa.shape).to(kappa.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        kappa, a = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: the gradient itself must be differentiable
            a = _FastMeanResultantLength.apply(kappa, ctx.d)
        return -grad * a, None


class _FastMeanResultantLength(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kappa: Tensor, d: int) -> Tensor:  # type: ignore[override]
        need_grad = ctx.needs_input_grad[0]
        _, a, deriv = _fast_eval(d, kappa.detach().to(_work_dtype(kappa)).reshape(-1), False, True, need_grad)
        if need_grad:
            ctx.save_for_backward(deriv.reshape(kappa.shape).to(kappa.dtype))
        return a.reshape(kappa.shape).to(kappa.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (deriv,) = ctx.saved_tensors
        return grad * deriv, None


# ----------------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------------
def log_iv(nu: float, x: Tensor) -> Tensor:
    """log I_nu(x) for nu >= 0 and x >= 0, finite where I_nu over- or underflows; d/dx is exact (R_nu + nu/x).

    Absolute error in float64 below ~1e-13 for nu <= 1100, x in [1e-6, 1e5] (relative below 1e-14 where
    |log I| > 1); float32 inputs are evaluated in float64 and rounded once.
    """
    return _LogIv.apply(_as_float_tensor(x), _check_nu(nu))


def bessel_ratio(nu: float, x: Tensor) -> Tensor:
    """I_(nu+1)(x) / I_nu(x), accurate to ~1e-12 relative in float64 for nu <= 1100, x in [0, 1e5].

    Differentiable once in x with dR/dx = 1 - R^2 - (2 nu + 1) R / x (enough for second derivatives of log_iv).
    """
    return _BesselRatio.apply(_as_float_tensor(x), _check_nu(nu))


def _use_fast(kappa: Tensor, fast: Optional[bool]) -> bool:
    return kappa.dtype != torch.float64 if fast is None else bool(fast)


def mean_resultant_length(d: int, kappa: Tensor, fast: Optional[bool] = None) -> Tensor:
    """A_d(kappa) = I_(d/2)(kappa) / I_(d/2-1)(kappa) = E[mu^T x] for x ~ vMF(mu, kappa) on S^(d-1).

    Differentiable once, with dA/dkappa = 1 - A^2 - (d-1) A/kappa. `fast` (default: True unless kappa is float64)
    selects the fused evaluation of the module docstring (relative error below 1e-6 after rounding to float32);
    otherwise the reference evaluation (`bessel_ratio`, ~1e-12).
    """
    _check_dim(d)
    kappa = _as_float_tensor(kappa)
    if _use_fast(kappa, fast):
        return _FastMeanResultantLength.apply(kappa, int(d))
    return bessel_ratio(d / 2.0 - 1.0, kappa)


def log_vmf_normalizer(d: int, kappa: Tensor, fast: Optional[bool] = None) -> Tensor:
    """Exact log C_d(kappa) = (d/2-1) log kappa - (d/2) log 2 pi - log I_(d/2-1)(kappa); kappa = 0 gives -log|S^(d-1)|.

    Computed as -(d/2) log 2 pi - [log I_nu(kappa) - nu log kappa], a quantity that is finite at kappa = 0, so no
    huge terms cancel at small kappa. Its gradient is exactly -A_d(kappa) (from the same evaluation). Finite for
    d <= 2048, kappa <= 1e5 also in float32. `fast` as in `mean_resultant_length`: the fast evaluation returns
    A_d together with log C_d and keeps it for the backward pass.
    """
    _check_dim(d)
    kappa = _as_float_tensor(kappa)
    if _use_fast(kappa, fast):
        return _FastLogVmfNormalizer.apply(kappa, int(d))
    return _LogVmfNormalizer.apply(kappa, int(d))


def bessel_ratio_approx(d: int, kappa: Union[Tensor, Number]) -> Tensor:
    """The paper's Ã_d(kappa): mean of the Amos-type bounds kappa/(a + sqrt(b^2 + kappa^2)), b in {a, a + 1}.

    Kept for faithful reproduction (google-research/vmf_embeddings `bessel_approx.py`). Max relative error vs
    A_d is 1/(2(d-1)) as kappa -> 0 (25% at d = 3). Evaluated in the input dtype with plain autograd, like the
    original.
    """
    _check_dim(d)
    kappa = _as_float_tensor(kappa)
    a = (d - 1) / 2.0
    lower = kappa / (a + torch.sqrt(((d + 1) / 2.0) ** 2 + kappa * kappa))
    upper = kappa / (a + torch.sqrt(((d - 1) / 2.0) ** 2 + kappa * kappa))
    return 0.5 * (lower + upper)


def log_vmf_normalizer_approx(d: int, kappa: Union[Tensor, Number]) -> Tensor:
    """The paper's log C̃_d(kappa) (up to an additive constant): d/dkappa log C̃_d = -Ã_d(kappa) exactly.

    1/2 sum_{b in {(d-1)/2, (d+1)/2}} [a log(a + sqrt(b^2 + kappa^2)) - sqrt(b^2 + kappa^2)], a = (d-1)/2.
    Departure from the original: it takes kappa, not kappa^2, as input. Only meaningful in differences.
    """
    _check_dim(d)
    kappa = _as_float_tensor(kappa)
    a = (d - 1) / 2.0
    out = torch.zeros_like(kappa)
    for b in ((d - 1) / 2.0, (d + 1) / 2.0):
        s = torch.sqrt(b * b + kappa * kappa)
        out = out + 0.5 * (a * torch.log(a + s) - s)
    return out


def _check_dim(d: int) -> None:
    if int(d) != d or d < 2:
        raise ValueError(f"vMF dimension d must be an integer >= 2, got {d}")
