"""vMF sampler against exact moments, CDFs and the MGF."""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import integrate, stats
from scipy.special import xlogy

import vmf_embeddings.methods.vmf_distribution as vmf_dist
from vmf_embeddings.methods.bessel import log_vmf_normalizer
from vmf_embeddings.methods.vmf_distribution import VonMisesFisher, sample_vmf

KAPPAS = [0.5, 2.0, 30.0, 60.0, 700.0, 5000.0]
DIMS = [3, 10, 128, 512]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _exact_a(d: int, kappa: float) -> float:
    """A_d(kappa) from mpmath, independent of vmf_embeddings.methods.bessel."""
    nu = d / 2 - 1
    return float(mp.besseli(nu + 1, kappa, maxterms=10**6) / mp.besseli(nu, kappa, maxterms=10**6))


def _random_mu(n: int, d: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=_gen(seed), dtype=dtype), dim=-1)


def _moment_check(x: torch.Tensor, mu: torch.Tensor, kappa: float) -> dict:
    """z-scores of mean(w) and var(w) against A_d and 1 - A_d^2 - (d-1) A_d / kappa, and the tangent chi^2 p-value."""
    n, d = x.shape
    a = _exact_a(d, kappa)
    var = 1 - a * a - (d - 1) * a / kappa
    w = (x @ mu).numpy()
    z_mean = (w.mean() - a) / math.sqrt(var / n)
    centred = w - w.mean()
    se_var = math.sqrt(max(np.mean(centred**4) - np.mean(centred**2) ** 2, 1e-300) / n)
    z_var = (np.mean(centred**2) - var) / se_var
    # tangent part x - (mu^T x) mu: isotropic, so its mean is 0 with per-coordinate variance (1 - E w^2)/(d-1)
    tangent = (x - torch.from_numpy(w)[:, None] * mu).mean(0).numpy()
    chi2 = n * (d - 1) * np.sum(tangent**2) / (1 - np.mean(w**2))
    p_tangent = stats.chi2.sf(chi2, d - 1)
    return {"z_mean": z_mean, "z_var": z_var, "p_tangent": p_tangent}


@pytest.mark.parametrize("d", DIMS)
def test_moments_match_exact(d):
    # every (kappa, d) of the grid; the large-kappa / moderate-d cases fail with the original's b shortcut
    n = 4000
    mu = _random_mu(len(KAPPAS), d, seed=d)
    kappa = torch.tensor(KAPPAS, dtype=torch.float64)
    x = sample_vmf(mu, kappa, n, generator=_gen(100 + d))
    assert x.shape == (n, len(KAPPAS), d) and x.dtype == torch.float64
    assert (x.norm(dim=-1) - 1).abs().max() < 1e-12
    for i, k in enumerate(KAPPAS):
        res = _moment_check(x[:, i], mu[i], k)
        assert abs(res["z_mean"]) < 4, (d, k, res)
        assert abs(res["z_var"]) < 4.5, (d, k, res)
        assert res["p_tangent"] > 1e-5, (d, k, res)


def test_moment_check_catches_the_original_large_kappa_shortcut(monkeypatch):
    # the same assertion must fail for the original's b = (d-1)/(4 kappa) at kappa >= 11 (biased samples)
    def shortcut(kappa, m):
        b = m / (4.0 * kappa)
        return b, 1.0 - b

    monkeypatch.setattr(vmf_dist, "_wood_constants", shortcut)
    mu = _random_mu(1, 128, seed=0)
    x = sample_vmf(mu, torch.tensor([60.0], dtype=torch.float64), 4000, generator=_gen(0))[:, 0]
    assert abs(_moment_check(x, mu[0], 60.0)["z_mean"]) > 4


def _original_sampler_mean(d: int, kappa: float) -> float:
    """E[mu^T x] under the original code's sampler (s-vae-pytorch, Davidson et al., as copied by
    google-research/vmf_embeddings), by quadrature over its Beta((d-1)/2, (d-1)/2) proposal eps: accepted with
    probability min(1, exp((d-1) log t - t + delta)), t = 2ab/(1 - (1-b) eps), delta = 4ab/(1+b) - (d-1) log(d-1),
    w = (1 - (1+b) eps)/(1 - (1-b) eps), where b is blended from the exact value to (d-1)/(4 kappa) on kappa in
    [10, 11] and a keeps the exact c. Written from the original's formulas, independently of vmf_distribution."""
    m = d - 1
    c = math.sqrt(4 * kappa**2 + m**2)
    blend = min(max(kappa - 10.0, 0.0), 1.0)
    b = blend * m / (4 * kappa) + (1 - blend) * (c - 2 * kappa) / m
    a = (m + 2 * kappa + c) / 4
    delta = 4 * a * b / (1 + b) - m * math.log(m)
    proposal = stats.beta(m / 2, m / 2)

    def accepted_density(eps: float) -> float:
        t = 2 * a * b / (1 - (1 - b) * eps)
        return proposal.pdf(eps) * min(1.0, math.exp(m * math.log(t) - t + delta))

    def w(eps: float) -> float:
        return (1 - (1 + b) * eps) / (1 - (1 - b) * eps)

    num = integrate.quad(lambda e: w(e) * accepted_density(e), 0, 1, points=[0.5], limit=500)[0]
    return num / integrate.quad(accepted_density, 0, 1, points=[0.5], limit=500)[0]


@pytest.mark.parametrize("d,kappa,biased", [(128, 60.0, 0.306), (128, 10.5, -0.317), (512, 50.0, -0.437)])
def test_original_sampler_reproduces_the_shortcut_bias(d, kappa, biased):
    # sampler="original" (parity runs) draws E[mu^T x] = the original's biased value, not A_d; the default stays exact.
    # kappa = 10.5 is inside the original's blend (half shortcut); d = 512, kappa = 50 has b > 1.
    n = 20_000
    mu = _random_mu(1, d, seed=21)
    kappa_t = torch.tensor([kappa], dtype=torch.float64)
    reference = _original_sampler_mean(d, kappa)
    assert abs(reference - biased) < 1e-3  # the documented value (at d = 128, kappa = 60: 0.306 vs A_d = 0.396)
    exact = _exact_a(d, kappa)
    w_orig = (sample_vmf(mu, kappa_t, n, generator=_gen(22), sampler="original")[:, 0] @ mu[0]).numpy()
    w_exact = (sample_vmf(mu, kappa_t, n, generator=_gen(22))[:, 0] @ mu[0]).numpy()
    se_orig, se_exact = w_orig.std() / math.sqrt(n), w_exact.std() / math.sqrt(n)
    assert abs(w_orig.mean() - reference) < 4 * se_orig
    assert abs(w_orig.mean() - exact) > 50 * se_orig  # clearly biased at this sample size
    assert abs(w_exact.mean() - exact) < 4 * se_exact  # the default: E[mu^T x] = A_d(kappa)


def test_original_sampler_documented_numbers():
    # the numbers quoted in conf/method/vmf_softmax.yaml and the docstrings: d = 128, kappa = 60
    assert abs(_original_sampler_mean(128, 60.0) - 0.306) < 5e-4
    assert abs(_exact_a(128, 60.0) - 0.396) < 5e-4


def test_original_sampler_below_the_blend_and_at_d3():
    # kappa <= 10: the original's b is the exact one (same distribution); d = 3: the closed form, identical draws
    mu = _random_mu(1, 3, seed=23)
    kappa = torch.tensor([60.0], dtype=torch.float64)
    assert torch.equal(sample_vmf(mu, kappa, 50, generator=_gen(24), sampler="original"),
                       sample_vmf(mu, kappa, 50, generator=_gen(24)))
    mu = _random_mu(1, 128, seed=25)
    n = 20_000
    x = sample_vmf(mu, torch.tensor([8.0], dtype=torch.float64), n, generator=_gen(26), sampler="original")
    w = x[:, 0] @ mu[0]
    assert abs(w.mean().item() - _exact_a(128, 8.0)) < 4 * w.std().item() / math.sqrt(n)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_original_sampler_gradients_and_validation(dtype):
    mu = _random_mu(3, 128, seed=27, dtype=dtype).requires_grad_(True)
    kappa = torch.tensor([5.0, 10.5, 60.0], dtype=dtype, requires_grad=True)  # below, inside and above the blend
    x = sample_vmf(mu, kappa, 16, generator=_gen(28), sampler="original")
    assert x.dtype == dtype and torch.all(torch.isfinite(x))
    x.sum().backward()
    assert torch.all(torch.isfinite(mu.grad)) and torch.all(torch.isfinite(kappa.grad)) and torch.all(kappa.grad != 0)
    with pytest.raises(ValueError, match="sampler='wood' is not one of exact, original"):
        sample_vmf(mu.detach(), kappa.detach(), 2, sampler="wood")


def _cdf_d3(w: np.ndarray, kappa: float) -> np.ndarray:
    # (e^{k w} - e^{-k}) / (e^k - e^{-k}), divided through by e^k so nothing overflows
    return (np.exp(kappa * (w - 1)) - np.exp(-2 * kappa)) / -np.expm1(-2 * kappa)


def _cdf_numeric(d: int, kappa: float):
    """CDF of w = cos(theta), theta having density ~ exp(kappa cos theta) sin(theta)^(d-2) on [0, pi] (no endpoint
    singularity, unlike the density of w at d = 2), by cumulative trapezoid on a fine grid."""
    theta = np.linspace(0, np.pi, 400_001)
    with np.errstate(divide="ignore"):
        logf = kappa * np.cos(theta) + xlogy(d - 2, np.sin(theta))  # xlogy: 0 * log 0 = 0 at d = 2
    f = np.exp(logf - logf.max())
    cdf_theta = np.concatenate([[0.0], np.cumsum((f[1:] + f[:-1]) / 2)])
    cdf_theta /= cdf_theta[-1]
    return lambda w: 1 - np.interp(np.arccos(np.clip(w, -1, 1)), theta, cdf_theta)


@pytest.mark.parametrize("kappa", [0.5, 2.0, 30.0, 700.0])
def test_d3_ks_against_exact_cdf(kappa):
    mu = _random_mu(1, 3, seed=1)
    x = sample_vmf(mu, torch.tensor([kappa], dtype=torch.float64), 5000, generator=_gen(7))[:, 0]
    w = (x @ mu[0]).numpy()
    assert stats.kstest(w, lambda t: _cdf_d3(t, kappa)).pvalue > 1e-3
    # and the test has power: a 25% wrong kappa is rejected
    assert stats.kstest(w, lambda t: _cdf_d3(t, kappa * 1.25)).pvalue < 1e-3


@pytest.mark.parametrize("d,kappa", [(2, 1.5), (10, 2.0), (128, 60.0), (512, 700.0)])
def test_ks_against_numerical_cdf(d, kappa):
    mu = _random_mu(1, d, seed=2)
    x = sample_vmf(mu, torch.tensor([kappa], dtype=torch.float64), 5000, generator=_gen(8))[:, 0]
    assert stats.kstest((x @ mu[0]).numpy(), _cdf_numeric(d, kappa)).pvalue > 1e-3


def test_mgf_d3():
    # vMF MGF: E[exp(t^T x)] = C_d(kappa) / C_d(|kappa mu + t|) (4e5 draws: 3.4935 vs 3.4907 at d = 3, kappa = 3)
    d, kappa, n = 3, 3.0, 200_000
    mu = _random_mu(1, d, seed=3)
    t = torch.tensor([0.6, -0.4, 0.9], dtype=torch.float64)
    x = sample_vmf(mu, torch.tensor([kappa], dtype=torch.float64), n, generator=_gen(9))[:, 0]
    values = torch.exp(x @ t)
    k = torch.tensor([kappa], dtype=torch.float64)
    exact = torch.exp(log_vmf_normalizer(d, k) - log_vmf_normalizer(d, (kappa * mu[0] + t).norm().reshape(1))).item()
    assert abs(values.mean().item() - exact) < 4 * values.std().item() / math.sqrt(n)


@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("d", [2, 3, 10, 512])
def test_mu_at_plus_minus_e1(sign, d):
    mu = torch.zeros(2, d, dtype=torch.float64)
    mu[:, 0] = sign
    mu.requires_grad_(True)
    kappa = torch.tensor([5.0, 1e5], dtype=torch.float64, requires_grad=True)
    x = sample_vmf(mu, kappa, 500, generator=_gen(10))
    assert torch.all(torch.isfinite(x))
    assert (x.norm(dim=-1) - 1).abs().max() < 1e-12
    w = x[..., 0].detach() * sign
    assert abs(w[:, 0].mean().item() - _exact_a(d, 5.0)) < 4 * math.sqrt(0.2 / 500)
    assert w[:, 1].min().item() > 0.99  # kappa = 1e5 sits on top of mu
    x.sum().backward()
    assert torch.all(torch.isfinite(mu.grad)) and torch.all(torch.isfinite(kappa.grad))


def test_reproducible_and_no_global_rng():
    mu = _random_mu(4, 16, seed=4)
    kappa = torch.tensor([0.5, 20.0, 300.0, 1e4], dtype=torch.float64)
    state = torch.random.get_rng_state()
    a = sample_vmf(mu, kappa, 50, generator=_gen(11))
    b = sample_vmf(mu, kappa, 50, generator=_gen(11))
    c = sample_vmf(mu, kappa, 50, generator=_gen(12))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched when a generator is given
    torch.manual_seed(0)
    d1 = sample_vmf(mu, kappa, 5)
    torch.manual_seed(0)
    assert torch.equal(d1, sample_vmf(mu, kappa, 5))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d", [2, 3, 10, 512])
def test_gradients_finite_at_extreme_kappa(dtype, d):
    raw = torch.randn(4, d, generator=_gen(13), dtype=dtype, requires_grad=True)
    kappa = torch.tensor([1e-4, 1.0, 1e3, 1e5], dtype=dtype, requires_grad=True)
    x = sample_vmf(F.normalize(raw, dim=-1), kappa, 64, generator=_gen(14))
    assert x.dtype == dtype and torch.all(torch.isfinite(x))
    assert (x.norm(dim=-1) - 1).abs().max() < (1e-5 if dtype == torch.float32 else 1e-12)
    (x * torch.randn(x.shape, generator=_gen(15), dtype=dtype)).sum().backward()
    assert torch.all(torch.isfinite(raw.grad)) and torch.all(torch.isfinite(kappa.grad))
    assert torch.all(kappa.grad != 0)


def test_float32_moments():
    # the cancellation-free 1 - w and acceptance test keep float32 usable at both ends of the kappa range
    n = 4000
    for d, k in [(3, 1e-4), (10, 1e5), (512, 5000.0)]:
        mu = _random_mu(1, d, seed=5, dtype=torch.float32)
        x = sample_vmf(mu, torch.tensor([k]), n, generator=_gen(16))[:, 0]
        res = _moment_check(x.double(), mu[0].double(), k)
        assert abs(res["z_mean"]) < 4 and abs(res["z_var"]) < 4.5, (d, k, res)


def test_d3_kappa_gradient_is_unbiased():
    # d = 3 uses the exact inverse CDF, so the pathwise gradient of E[w] is exactly A_3'(kappa) = Var(w)
    n = 20_000
    for k0 in [0.5, 4.0, 50.0]:
        # one row per draw, each with its own kappa leaf, gives per-draw gradients (and so an error bar)
        kappa = torch.full((n,), k0, dtype=torch.float64, requires_grad=True)
        mu = _random_mu(1, 3, seed=6).expand(n, 3)
        w = sample_vmf(mu, kappa, 1, generator=_gen(17))[0] @ mu[0]
        (per_draw,) = torch.autograd.grad(w.sum(), kappa)
        a = _exact_a(3, k0)
        exact = 1 - a * a - 2 * a / k0
        assert abs(per_draw.mean().item() - exact) < 4 * per_draw.std().item() / math.sqrt(n), k0


def test_mu_gradient_matches_mean_direction():
    # E[x] = A_d mu, so d/dp E[c^T x] with mu = p/|p| is A_d (I - mu mu^T) c / |p|; the MC pathwise gradient agrees
    d, k0, n = 10, 8.0, 20_000
    p = torch.randn(1, d, generator=_gen(18), dtype=torch.float64) * 2
    p.requires_grad_(True)
    c = torch.randn(d, generator=_gen(19), dtype=torch.float64)
    x = sample_vmf(F.normalize(p, dim=-1), torch.tensor([k0], dtype=torch.float64), n, generator=_gen(20))
    (grad,) = torch.autograd.grad((x @ c).mean(), p)
    mu = F.normalize(p.detach(), dim=-1)[0]
    expected = _exact_a(d, k0) * (c - (mu @ c) * mu) / p.detach().norm()
    assert (grad[0] - expected).norm() < 0.05 * expected.norm()


def test_input_validation_and_clear_error():
    mu = _random_mu(2, 5, seed=7)
    with pytest.raises(ValueError):
        sample_vmf(mu[0], torch.ones(2), 3)
    with pytest.raises(ValueError):
        sample_vmf(mu, torch.ones(3), 3)
    with pytest.raises(ValueError):
        sample_vmf(mu[:, :1], torch.ones(2), 3)
    with pytest.raises(RuntimeError, match="no accepted proposal"):
        sample_vmf(mu, torch.tensor([1.0, float("nan")], dtype=torch.float64), 3, generator=_gen(0))


def test_block_size_makes_a_second_round_rare(monkeypatch):
    # d = 2 at large kappa has the lowest acceptance (0.657); with the accelerator block one round is the rule
    rows = torch.full((2560,), 1e4, dtype=torch.float64)
    cpu_rounds = [vmf_dist._accepted_proposal(rows, 1, _gen(seed))[2] for seed in range(3)]
    assert vmf_dist._block_size(2560, torch.device("cpu")) == vmf_dist._CPU_BLOCK and max(cpu_rounds) <= 8
    accelerator_block = vmf_dist._block_size(2560, torch.device("cuda"))
    assert accelerator_block == 15 and vmf_dist._block_size(1, torch.device("cuda")) == vmf_dist._MIN_BLOCK
    monkeypatch.setattr(vmf_dist, "_block_size", lambda n, device: accelerator_block)
    rounds = [vmf_dist._accepted_proposal(rows, 1, _gen(seed))[2] for seed in range(10)]
    assert max(rounds) <= 2 and sum(r > 1 for r in rounds) <= 1, rounds


def test_von_mises_fisher_wrapper():
    d, k = 3, 2.0
    mu = _random_mu(1, d, seed=9)
    dist = VonMisesFisher(mu, torch.tensor([k], dtype=torch.float64))
    assert torch.allclose(dist.mean, _exact_a(d, k) * mu)
    assert dist.rsample(7, generator=_gen(1)).shape == (7, 1, d)
    # log_prob integrates to 1 over the sphere (uniform MC)
    u = F.normalize(torch.randn(200_000, 1, d, generator=_gen(2), dtype=torch.float64), dim=-1)
    integral = dist.log_prob(u).exp().mean().item() * 4 * math.pi
    assert abs(integral - 1) < 0.01
