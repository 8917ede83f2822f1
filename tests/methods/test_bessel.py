"""log-Bessel functions and vMF normalisers against scipy / mpmath, and the paper's approximations."""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import torch
from scipy.special import ive

from vmf_embeddings.methods import bessel
from vmf_embeddings.methods.bessel import (
    bessel_ratio,
    bessel_ratio_approx,
    log_iv,
    log_vmf_normalizer,
    log_vmf_normalizer_approx,
    mean_resultant_length,
)

mp.mp.dps = 30

# orders cover both sides of the Debye radius (30) and every d/2 - 1 the experiments use (d = 3, 128, 512, 2048)
NUS = [0.0, 0.5, 1.0, 2.5, 7.0, 14.5, 29.5, 30.0, 63.0, 127.0, 255.0, 511.0, 1023.0, 1100.0]
XS = np.unique(np.concatenate([np.logspace(-6, 5, 23), [0.37, 3.0, 12.0, 29.0, 29.99, 30.0, 30.01, 45.0]]))
DIMS = [2, 3, 4, 10, 16, 128, 512, 2048]
KAPPAS = np.logspace(-2, 4, 25)


def _mp_log_iv(nu: float, x: float) -> float:
    return float(mp.log(mp.besseli(nu, x, maxterms=10**6)))


def _mp_ratio(nu: float, x: float) -> float:
    return float(mp.besseli(nu + 1, x, maxterms=10**6) / mp.besseli(nu, x, maxterms=10**6))


def _mp_log_c(d: int, kappa: float) -> float:
    nu = d / 2 - 1
    return float(nu * mp.log(kappa) - d / 2 * mp.log(2 * mp.pi) - mp.log(mp.besseli(nu, kappa, maxterms=10**6)))


def _t(x, dtype=torch.float64) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64)).to(dtype)


def _rel(got, ref) -> np.ndarray:
    """|got - ref| / max(1, |ref|): relative for |log I| > 1, absolute near the zero crossing of log I."""
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return np.abs(got - ref) / np.maximum(1.0, np.abs(ref))


# ---------------------------------------------------------------------------------------------------------------
# log I_nu and the ratio
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("nu", NUS)
def test_log_iv_matches_mpmath(nu):
    got = log_iv(nu, _t(XS)).numpy()
    ref = np.array([_mp_log_iv(nu, x) for x in XS])
    assert np.all(np.isfinite(got))
    # the spec asks 1e-6; the implementation reaches ~1e-14, so guard regressions much tighter
    assert _rel(got, ref).max() < 1e-11, (nu, XS[_rel(got, ref).argmax()])


def test_log_iv_matches_scipy_where_ive_is_usable():
    worst = 0.0
    for nu in NUS:
        with np.errstate(divide="ignore"):
            scaled = ive(nu, XS)
        ok = (scaled > 1e-290) & np.isfinite(scaled)
        ref = np.log(scaled[ok]) + XS[ok]
        worst = max(worst, _rel(log_iv(nu, _t(XS[ok])).numpy(), ref).max(initial=0.0))
    assert worst < 1e-12


def test_log_iv_where_scipy_underflows():
    # scipy's ive(255, 0.01) underflows to 0 in float64 (why the module works in log space)
    assert ive(255, 0.01) == 0.0
    got = log_iv(255.0, _t([0.01, 1e-6])).numpy()
    ref = [_mp_log_iv(255.0, 0.01), _mp_log_iv(255.0, 1e-6)]
    assert np.all(np.isfinite(got)) and _rel(got, ref).max() < 1e-13


def test_log_iv_is_relatively_accurate_near_zero():
    # log I_0(x) ~ x^2/4 -> 0: the power-series tail is kept apart (log1p), so even the tiny value is accurate
    x = np.array([1e-6, 1e-4, 1e-2, 0.5])
    ref = np.array([_mp_log_iv(0.0, v) for v in x])
    got = log_iv(0.0, _t(x)).numpy()
    assert np.max(np.abs(got - ref) / np.abs(ref)) < 1e-12


def test_debye_boundary_circle():
    # the two regions meet at hypot(nu, x) = 30; check both sides all around that circle
    worst = 0.0
    for nu in np.linspace(0.0, 29.9, 14):
        x0 = math.sqrt(30.0**2 - nu**2)
        xs = np.array([x0 * (1 - 1e-9), x0 * (1 + 1e-9)])
        worst = max(worst, _rel(log_iv(float(nu), _t(xs)).numpy(), [_mp_log_iv(nu, x) for x in xs]).max())
        r_got = bessel_ratio(float(nu), _t(xs)).numpy()
        r_ref = np.array([_mp_ratio(nu, x) for x in xs])
        worst = max(worst, np.max(np.abs(r_got / r_ref - 1)))
    assert worst < 1e-13


@pytest.mark.parametrize("nu", [0.0, 0.5, 14.5, 63.0, 255.0, 1023.0])
def test_bessel_ratio_matches_mpmath(nu):
    x = np.concatenate([[0.0], XS])
    got = bessel_ratio(nu, _t(x)).numpy()
    assert got[0] == 0.0
    ref = np.array([_mp_ratio(nu, v) for v in XS])
    assert np.max(np.abs(got[1:] / ref - 1)) < 1e-11
    assert np.all(np.diff(got) >= 0) and np.all(got < 1)  # increasing in x, below 1


def test_ratio_bounds():
    # Amos-type bounds: kappa/(a + sqrt((a+1)^2 + kappa^2)) <= A_d <= kappa/(a + sqrt(a^2 + kappa^2)), a = (d-1)/2
    kappa = _t(KAPPAS)
    for d in DIMS:
        a = (d - 1) / 2
        exact = mean_resultant_length(d, kappa)
        lower = kappa / (a + torch.sqrt((a + 1) ** 2 + kappa**2))
        upper = kappa / (a + torch.sqrt(a**2 + kappa**2))
        assert torch.all(exact >= lower * (1 - 1e-13)), d
        assert torch.all(exact <= upper * (1 + 1e-13)), d
        assert torch.allclose(bessel_ratio_approx(d, kappa), (lower + upper) / 2, rtol=1e-14, atol=0)


def test_bessel_ratio_derivative_matches_mpmath():
    for nu in [0.0, 0.5, 63.0, 1023.0]:
        for x in [1e-6, 0.5, 29.0, 31.0, 1e3, 1e5]:
            xt = torch.tensor([x], dtype=torch.float64, requires_grad=True)
            (grad,) = torch.autograd.grad(bessel_ratio(nu, xt).sum(), xt)
            ref = float(mp.diff(lambda t: mp.besseli(nu + 1, t) / mp.besseli(nu, t), mp.mpf(x)))
            assert abs(grad.item() / ref - 1) < 1e-8, (nu, x)


# ---------------------------------------------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("nu", [0.0, 0.5, 14.5, 63.0, 511.0])
def test_log_iv_gradcheck(nu):
    # points on both sides of the Debye radius, small and large arguments
    # (finite differences with step 1e-6 are themselves only good to ~1e-7 here, hence the tolerances)
    x = torch.tensor([0.05, 0.7, 5.0, 27.0, 33.0, 150.0, 2e3], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: log_iv(nu, t), (x,), eps=1e-6, atol=1e-7, rtol=1e-6)
    assert torch.autograd.gradgradcheck(lambda t: log_iv(nu, t), (x,), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("d", [2, 3, 128])
def test_log_vmf_normalizer_gradcheck(d):
    # (at d = 2048 log C ~ 5e3 and finite differences lose too many digits; the next test covers high d exactly)
    kappa = torch.tensor([0.05, 0.5, 20.0, 40.0, 700.0, 5e3], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda k: log_vmf_normalizer(d, k), (kappa,), eps=1e-6, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("d", [512, 2048])
def test_normalizer_gradient_is_minus_a(d):
    # naive autograd of nu log kappa - log I_nu(kappa) cancels nu/kappa ~ 1e9 at kappa = 1e-6; ours returns -A_d
    kappas = [1e-6, 1e-3, 0.5, 60.0, 701.0, 1e4, 1e5]
    kappa = torch.tensor(kappas, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(log_vmf_normalizer(d, kappa).sum(), kappa)
    ref = np.array([-_mp_ratio(d / 2 - 1, k) for k in kappas])
    assert np.max(np.abs(grad.numpy() / ref - 1)) < 1e-11


def test_float32_inputs_and_gradients():
    x32 = torch.tensor([1e-6, 0.3, 10.0, 1e3, 1e5], dtype=torch.float32, requires_grad=True)
    for nu in [0.0, 255.0, 1100.0]:
        out = log_iv(nu, x32)
        assert out.dtype == torch.float32 and torch.all(torch.isfinite(out))
        ref = log_iv(nu, x32.detach().double())
        assert torch.allclose(out.double(), ref, rtol=1e-6, atol=1e-6)
        (g,) = torch.autograd.grad(out.sum(), x32)
        assert g.dtype == torch.float32 and torch.all(torch.isfinite(g))


def test_shapes_and_validation():
    x = torch.rand(3, 4, dtype=torch.float64) * 50
    assert log_iv(2.0, x).shape == (3, 4) and bessel_ratio(2.0, x).shape == (3, 4)
    assert log_vmf_normalizer(5, x).shape == (3, 4)
    with pytest.raises(ValueError):
        log_iv(-0.5, x)
    with pytest.raises(ValueError):
        log_vmf_normalizer(1, x)


# ---------------------------------------------------------------------------------------------------------------
# exact normaliser
# ---------------------------------------------------------------------------------------------------------------
def test_log_vmf_normalizer_matches_scipy_where_ive_is_usable():
    for d in [2, 3, 4, 10, 16, 64, 128, 512, 2048]:
        nu = d / 2 - 1
        with np.errstate(divide="ignore"):
            scaled = ive(nu, KAPPAS)
        ok = (scaled > 1e-290) & np.isfinite(scaled)
        ref = nu * np.log(KAPPAS[ok]) - d / 2 * np.log(2 * np.pi) - (np.log(scaled[ok]) + KAPPAS[ok])
        got = log_vmf_normalizer(d, _t(KAPPAS[ok])).numpy()
        assert _rel(got, ref).max(initial=0.0) < 1e-12, d


@pytest.mark.parametrize("d", [128, 512, 1024, 2048])
def test_log_vmf_normalizer_matches_mpmath_high_order(d):
    kappas = np.array([1e-6, 1e-2, 1.0, 60.0, 243.0, 701.0, 5e3, 1e4, 1e5])
    ref = np.array([_mp_log_c(d, k) for k in kappas])
    got = log_vmf_normalizer(d, _t(kappas)).numpy()
    assert _rel(got, ref).max() < 1e-11
    got32 = log_vmf_normalizer(d, _t(kappas, torch.float32))
    assert got32.dtype == torch.float32 and torch.all(torch.isfinite(got32))
    assert _rel(got32.numpy(), ref).max() < 1e-6


def test_log_vmf_normalizer_zero_kappa_is_uniform():
    for d in [2, 3, 10, 512, 2048]:
        log_area = math.log(2) + d / 2 * math.log(math.pi) - math.lgamma(d / 2)
        for dtype in (torch.float64, torch.float32):
            got = log_vmf_normalizer(d, torch.zeros(1, dtype=dtype)).item()
            tol = 1e-12 if dtype == torch.float64 else 1e-6
            assert abs(got + log_area) <= tol * max(1.0, abs(log_area)), (d, dtype)


def test_log_vmf_normalizer_d3_closed_form():
    # C_3(kappa) = kappa / (4 pi sinh kappa), log sinh k = k + log(-expm1(-2k)) - log 2
    k = np.logspace(-6, 5, 40)
    ref = np.log(k) - np.log(4 * np.pi) - (k + np.log(-np.expm1(-2 * k)) - np.log(2))
    assert _rel(log_vmf_normalizer(3, _t(k)).numpy(), ref).max() < 1e-13


# ---------------------------------------------------------------------------------------------------------------
# the paper's approximations
# ---------------------------------------------------------------------------------------------------------------
def _exact_a_reference(d: int, kappas: np.ndarray) -> np.ndarray:
    """scipy ive ratio for d <= 128 (accurate there), mpmath beyond."""
    if d <= 128:
        return ive(d / 2, kappas) / ive(d / 2 - 1, kappas)
    return np.array([_mp_ratio(d / 2 - 1, k) for k in kappas])


@pytest.mark.parametrize("d", [3, 4, 10, 16, 128, 512, 2048])
def test_ratio_approx_max_relative_error(d):
    approx = bessel_ratio_approx(d, _t(KAPPAS)).numpy()
    exact = _exact_a_reference(d, KAPPAS)
    rel = np.abs(approx / exact - 1)
    bound = 1 / (2 * (d - 1))
    assert rel.max() <= bound + 1e-9
    assert rel.max() > 0.9 * bound  # the bound is attained (at the smallest kappa), not just respected


@pytest.mark.parametrize("d", [3, 10, 128, 512])
def test_ratio_approx_limits(d):
    small = _t([1e-5])
    ratio = (bessel_ratio_approx(d, small) / mean_resultant_length(d, small)).item()
    assert abs(ratio - (1 + 1 / (2 * (d - 1)))) < 1e-8
    big = 1e7
    expected = (d - 1) / (2 * big)  # 1 - A ~ (d-1)/(2 kappa)
    for fn in (bessel_ratio_approx, mean_resultant_length):
        assert abs((1 - fn(d, _t([big])).item()) / expected - 1) < 1e-4


@pytest.mark.parametrize("d", [2, 3, 10, 128, 512, 2048])
def test_log_normalizer_approx_derivative_is_minus_ratio_approx(d):
    # derivative identity: d/dkappa log C~_d = -A~_d, via autograd in float64
    kappa = _t(KAPPAS).requires_grad_(True)
    (grad,) = torch.autograd.grad(log_vmf_normalizer_approx(d, kappa).sum(), kappa)
    approx = bessel_ratio_approx(d, kappa.detach())
    assert torch.allclose(grad, -approx, rtol=1e-6, atol=0)


@pytest.mark.parametrize("d", [3, 10, 128, 512, 2048])
def test_log_normalizer_approx_differences(d):
    # normaliser differences: |(logC~(k1) - logC~(k2)) - (logC(k1) - logC(k2))| <= 0.12 for all k1, k2 in [1e-2, 1e4]
    kappa = _t(np.logspace(-2, 4, 121))
    gap = (log_vmf_normalizer(d, kappa) - log_vmf_normalizer_approx(d, kappa)).numpy()
    assert gap.max() - gap.min() <= 0.12


def test_approximations_match_the_original_formulas():
    # transcription of google-research/vmf_embeddings' bessel_approx.py; its log-normaliser takes kappa^2
    def original_ratio(kappa, d):
        d_m, d_p = d / 2.0 - 0.5, d / 2.0 + 0.5
        return 0.5 * (kappa / (d_m + torch.sqrt(d_p**2 + kappa**2)) + kappa / (d_m + torch.sqrt(d_m**2 + kappa**2)))

    def original_log_c(k_squared, d):
        d_m, d_p = d / 2.0 - 0.5, d / 2.0 + 0.5
        s_m, s_p = torch.sqrt(d_m**2 + k_squared), torch.sqrt(d_p**2 + k_squared)
        return 0.5 * (d_m * torch.log(d_m + s_m) - s_m + d_m * torch.log(d_m + s_p) - s_p)

    kappa = _t(KAPPAS)
    for d in [2, 3, 128, 2048]:
        assert torch.allclose(bessel_ratio_approx(d, kappa), original_ratio(kappa, d), rtol=1e-15, atol=0)
        assert torch.allclose(log_vmf_normalizer_approx(d, kappa), original_log_c(kappa**2, d), rtol=1e-15, atol=1e-12)


def test_approximations_stay_finite_in_float32():
    kappa = torch.tensor([0.0, 1e-4, 1.0, 1e4, 1e5], dtype=torch.float32)
    for d in [2, 3, 512, 2048]:
        assert torch.all(torch.isfinite(log_vmf_normalizer_approx(d, kappa)))
        assert torch.all(torch.isfinite(bessel_ratio_approx(d, kappa)))


def test_init_kappa_gives_target_mean_resultant_length():
    # init: A_d(kc (d-1)/(1-kc^2)) ~ kc within 0.002 for d >= 128 (measured 0.3996 / 0.6998 at d = 512)
    for d in [128, 512]:
        for kc in [0.4, 0.7]:
            a = mean_resultant_length(d, _t([kc * (d - 1) / (1 - kc**2)])).item()
            assert abs(a - kc) < 0.002, (d, kc, a)
    a512 = mean_resultant_length(512, _t([0.4 * 511 / 0.84, 0.7 * 511 / 0.51])).numpy()
    assert np.allclose(a512, [0.3996, 0.6998], atol=1e-4)


def test_internal_debye_term_counts():
    # fewer terms at high order is what keeps d = 512 cheap; the bound on the neglected term is what makes it safe
    assert bessel._debye_terms(0.0) == bessel._MAX_DEBYE_TERMS
    assert bessel._debye_terms(255.0) < bessel._debye_terms(63.0) < bessel._MAX_DEBYE_TERMS


# ---------------------------------------------------------------------------------------------------------------
# the fast path (default for float32): log C_d, A_d and dA_d/dkappa from one fused evaluation
# ---------------------------------------------------------------------------------------------------------------
# d = 3: closed form; 2, 4, 16, 41: Debye outside the radius-20 circle, power series inside; 42 and up: Debye only
FAST_DIMS = [2, 3, 4, 16, 41, 42, 128, 512, 2048]


def _fast_kappas(d: int) -> np.ndarray:
    """kappa = 0, 1e-3..1e5, and both sides of every switch of the fast path for this d."""
    ks = [0.0, *np.logspace(-3, 5, 33), 0.37, 3.0, 60.0, 243.0, 701.0]
    x_min = math.sqrt(max(bessel._FAST_RADIUS**2 - (d / 2 - 1) ** 2, 0.0))
    if x_min > 0:
        ks += [x_min * (1 - 1e-6), x_min, x_min * (1 + 1e-6)]
    if d == 3:
        ks += [bessel._LANGEVIN_SWITCH * (1 - 1e-6), bessel._LANGEVIN_SWITCH, bessel._LANGEVIN_SWITCH * (1 + 1e-6)]
    return np.unique(np.array(ks))


def _mp_log_c_a_da(d: int, kappa: float):
    """(log C_d, A_d, dA_d/dkappa) from mpmath; dA/dk = 1 - A^2 - (d-1) A/k; kappa = 0: the limits (A ~ k/d)."""
    if kappa == 0.0:
        log_area = math.log(2) + d / 2 * math.log(math.pi) - math.lgamma(d / 2)
        return -log_area, 0.0, 1.0 / d
    nu, k = mp.mpf(d) / 2 - 1, mp.mpf(kappa)
    i0 = mp.besseli(nu, k, maxterms=10**6)
    a = mp.besseli(nu + 1, k, maxterms=10**6) / i0
    log_c = nu * mp.log(k) - mp.mpf(d) / 2 * mp.log(2 * mp.pi) - mp.log(i0)
    return float(log_c), float(a), float(1 - a * a - (d - 1) * a / k)


def _fast_outputs(d: int, kappa: torch.Tensor, fast=None):
    """(log C_d, its autograd gradient, A_d, its autograd gradient) as float64 numpy arrays."""
    k1, k2 = kappa.clone().requires_grad_(True), kappa.clone().requires_grad_(True)
    log_c = log_vmf_normalizer(d, k1, fast=fast)
    a = mean_resultant_length(d, k2, fast=fast)
    (grad_log_c,) = torch.autograd.grad(log_c.sum(), k1)
    (grad_a,) = torch.autograd.grad(a.sum(), k2)
    assert log_c.dtype == a.dtype == grad_log_c.dtype == grad_a.dtype == kappa.dtype
    return [t.detach().double().numpy() for t in (log_c, grad_log_c, a, grad_a)]


def _rel_or_zero(got, ref) -> np.ndarray:
    """Relative error where ref != 0; |got| where ref == 0 (A_d(0) = 0 must come out exactly 0)."""
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return np.where(ref != 0, np.abs(got - ref) / np.where(ref != 0, np.abs(ref), 1.0), np.abs(got))


@pytest.mark.parametrize("d", FAST_DIMS)
def test_fast_path_float32_matches_mpmath(d):
    # the spec: 1e-6 relative for d <= 2048, kappa <= 1e5 (log C relative to max(1, |log C|)); measured ~6e-8, i.e.
    # float32 rounding. The reference is taken at the float32-rounded kappa: input rounding is not the method's error.
    kappa = _t(_fast_kappas(d), torch.float32)
    ref = np.array([_mp_log_c_a_da(d, k) for k in kappa.double().numpy()])
    log_c, grad_log_c, a, grad_a = _fast_outputs(d, kappa)  # float32 takes the fast path by default
    assert _rel(log_c, ref[:, 0]).max() <= 1e-6
    assert _rel_or_zero(a, ref[:, 1]).max() <= 1e-6
    assert _rel_or_zero(-grad_log_c, ref[:, 1]).max() <= 1e-6  # the gradient training uses: -A_d
    assert _rel_or_zero(grad_a, ref[:, 2]).max() <= 1e-6  # dA_d/dkappa (second term of the loss)


@pytest.mark.parametrize("d", FAST_DIMS)
def test_fast_path_float64_error_before_rounding(d):
    # fast=True on float64 shows the method's own error: the Debye truncation (_FAST_TOL = 1e-9) and the closed forms
    kappa = _t(_fast_kappas(d))
    ref = np.array([_mp_log_c_a_da(d, k) for k in kappa.numpy()])
    log_c, grad_log_c, a, grad_a = _fast_outputs(d, kappa, fast=True)
    assert _rel(log_c, ref[:, 0]).max() <= 1e-9
    assert _rel_or_zero(a, ref[:, 1]).max() <= 1e-9
    assert np.array_equal(grad_log_c, -a)  # exactly the saved A_d
    assert _rel_or_zero(grad_a, ref[:, 2]).max() <= 2e-7  # a derivative of the truncated series: ~50x the value's


def test_fast_path_matches_reference_for_every_low_dimension():
    # every d whose fast path has both regions (2..41) and some beyond, on a dense grid, against the reference path
    kappa = _t(np.unique(np.concatenate([np.logspace(-3, 5, 161), np.linspace(14.0, 21.0, 71)])))
    for d in [*range(2, 46), 64, 100, 255, 256, 1000, 2047]:
        log_c, grad_log_c, a, grad_a = _fast_outputs(d, kappa, fast=True)
        ref_log_c, _, ref_a, ref_grad_a = _fast_outputs(d, kappa, fast=False)
        assert _rel(log_c, ref_log_c).max() <= 1e-9, d
        assert np.max(np.abs(a / ref_a - 1)) <= 1e-9, d
        assert np.max(np.abs(grad_a / ref_grad_a - 1)) <= 2e-7, d


@pytest.mark.parametrize("d", [2, 3, 16, 128])
def test_fast_path_gradcheck(d):
    # finite differences (step 1e-6, good to ~1e-7) on both sides of the switches, in float64 with fast=True
    kappa = torch.tensor([0.05, 0.5, 3.0, 12.0, 19.9, 20.1, 25.0, 150.0, 2e3], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda k: log_vmf_normalizer(d, k, fast=True), (kappa,), eps=1e-6, atol=1e-7,
                                    rtol=1e-6)
    assert torch.autograd.gradcheck(lambda k: mean_resultant_length(d, k, fast=True), (kappa,), eps=1e-6, atol=1e-7,
                                    rtol=1e-6)
    # create_graph: the gradient -A_d is itself differentiable (second derivative of log C_d = -dA_d/dkappa)
    assert torch.autograd.gradgradcheck(lambda k: log_vmf_normalizer(d, k, fast=True), (kappa,), eps=1e-6, atol=1e-7,
                                        rtol=1e-5)


def test_fast_path_is_the_float32_default_and_float64_keeps_the_reference():
    k64 = _t([0.0, 0.3, 19.0, 60.0, 1e4])
    k32 = k64.float()
    for d in [3, 16, 512]:
        assert torch.equal(log_vmf_normalizer(d, k32), log_vmf_normalizer(d, k32, fast=True))
        assert torch.equal(mean_resultant_length(d, k32), mean_resultant_length(d, k32, fast=True))
        assert torch.equal(log_vmf_normalizer(d, k64), log_vmf_normalizer(d, k64, fast=False))
        assert torch.equal(mean_resultant_length(d, k64), bessel_ratio(d / 2 - 1, k64))
        # without a backward pass ahead A_d is skipped, which must not change log C_d
        with_grad = log_vmf_normalizer(d, k32.clone().requires_grad_(True)).detach()
        with torch.no_grad():
            assert torch.equal(log_vmf_normalizer(d, k32), with_grad)


def test_fast_path_shapes_and_empty_input():
    x = torch.rand(3, 4, 5) * 50
    for d in [3, 16, 512]:
        assert log_vmf_normalizer(d, x).shape == (3, 4, 5) and mean_resultant_length(d, x).shape == (3, 4, 5)
        assert log_vmf_normalizer(d, torch.zeros(0)).shape == (0,)
        assert mean_resultant_length(d, torch.zeros(0, requires_grad=True)).shape == (0,)


def test_fast_path_accelerator_branch(monkeypatch):
    # on accelerators the two regions are merged with torch.where (no data-dependent indexing, no host-device sync);
    # run that branch on CPU and check it gives the indexing branch's results
    kappa = _t(np.concatenate([np.logspace(-3, 5, 60), [0.0, 0.1, 18.0, 20.0, 25.0]]), torch.float32)
    cases = [(d, fast) for d in [2, 3, 16, 41] for fast in [(kappa, None), (kappa.double(), True)]]
    host = [_fast_outputs(d, k, fast=f) for d, (k, f) in cases]
    monkeypatch.setattr(bessel, "_index_on_host", lambda x: False)
    for (d, (k, f)), want in zip(cases, host):
        for got_part, want_part in zip(_fast_outputs(d, k, fast=f), want):
            assert np.allclose(got_part, want_part, rtol=1e-12, atol=0), d


def test_fast_debye_log_polynomials_are_the_log_of_debye_sum():
    # exp(sum_k Q_k(p) y^k) = sum_k P_k(p) y^k as power series in y, exactly (rational arithmetic)
    from fractions import Fraction

    n = 8
    q = bessel._debye_log_polynomials(n)
    p = bessel._debye_polynomials_exact(n)
    e = [[Fraction(1)]]  # e_n = (1/n) sum_(k=1..n) k q_k e_(n-k)  (E' = L' E)
    for m in range(1, n + 1):
        acc = [Fraction(0)] * (m + 1)
        for k in range(1, m + 1):
            for i, c in enumerate(bessel._poly_mul(list(q[k]), e[m - k])):
                acc[i] += Fraction(k, m) * c
        e.append(acc)
    for m in range(n + 1):
        assert e[m] == list(p[m]), m


def test_fast_debye_term_counts():
    # fewer terms at high order keep d = 512 / 2048 cheap; the bound on the neglected term keeps them accurate
    assert [bessel._fast_debye_terms(d / 2 - 1) for d in [2, 16, 42, 128, 512, 2048]] == [7, 7, 7, 4, 3, 2]
    for d in [16, 128, 2048]:
        k = bessel._fast_debye_terms(d / 2 - 1)
        assert len(bessel._fast_debye_coefficients(d)[0]) == 3 * k  # L/y has degree 3K - 1
        assert bessel._debye_log_bound(k + 1) / max(d / 2 - 1, bessel._FAST_RADIUS) ** (k + 1) <= bessel._FAST_TOL
