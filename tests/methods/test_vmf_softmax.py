"""vMF softmax head: float64 reference loss, the deterministic limit, the Jensen bound and the initialisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import ive, logsumexp

import vmf_embeddings.methods.vmf as vmf_module
from vmf_embeddings.methods.softmax import NormalizedSoftmax
from vmf_embeddings.methods.vmf import VMFSoftmax, kappa_scale


def _log_c_exact(d: int, kappa: np.ndarray) -> np.ndarray:
    nu = d / 2 - 1
    return nu * np.log(kappa) - d / 2 * np.log(2 * np.pi) - (np.log(ive(nu, kappa)) + kappa)


def _a_exact(d: int, kappa: np.ndarray) -> np.ndarray:
    return ive(d / 2, kappa) / ive(d / 2 - 1, kappa)


def _head(d=6, c=4, init_temp=-1.0, **kw):
    torch.manual_seed(0)
    return VMFSoftmax(d, c, init_temp=init_temp, learn_temp=True, n_samples=3, **kw).double()


def test_loss_matches_float64_loop_reference(monkeypatch):
    d, c = 6, 4
    head = _head(d, c)
    g = torch.Generator().manual_seed(1)
    f = torch.randn(5, d, generator=g, dtype=torch.float64) * 3
    y = torch.tensor([0, 1, 2, 3, 1])
    fixed = F.normalize(torch.randn(3, 5, d, generator=g, dtype=torch.float64), dim=-1)
    monkeypatch.setattr(vmf_module, "sample_vmf", lambda mu, kappa, n, generator=None, sampler="exact": fixed)
    got = head.loss(f, y).item()

    z = f.numpy() * head.z_kappa_mult.item()
    w = head.classifier.weight.detach().numpy()
    beta = math.exp(-head.temp.item())
    kz, kw = np.linalg.norm(z, axis=1), np.linalg.norm(w, axis=1)
    total = 0.0
    for i in range(5):
        first = np.mean(
            [logsumexp([_log_c_exact(d, kw[k]) - _log_c_exact(d, np.linalg.norm(w[k] + beta * fixed[s, i].numpy()))
                        for k in range(c)]) for s in range(3)]
        )
        cos = z[i] @ w[y[i]] / (kz[i] * kw[y[i]])
        total += first - beta * _a_exact(d, kz[i]) * _a_exact(d, kw[y[i]]) * cos
    assert got == pytest.approx(total / 5, rel=1e-8)


def test_deterministic_limit_is_cosine_softmax():
    """Deterministic limit: scaling z and W by lambda -> inf at fixed beta gives cosine-softmax CE and predictions."""
    d, c = 8, 5
    head = _head(d, c, init_temp=-math.log(4.0))
    cosine = NormalizedSoftmax(d, c, init_temp=-math.log(4.0)).double()
    g = torch.Generator().manual_seed(2)
    f = torch.randn(6, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, c, (6,), generator=g)
    with torch.no_grad():
        cosine.classifier.weight.copy_(head.classifier.weight)
        head.classifier.weight.mul_(1e6)
        head.z_kappa_mult.fill_(1e6)
    assert head.loss(f, y).item() == pytest.approx(cosine.loss(f, y).item(), abs=2e-3)
    probs = head.logits(f, n_samples=4, generator=torch.Generator().manual_seed(0)).exp()
    torch.testing.assert_close(probs, torch.softmax(cosine.logits(f), -1), atol=2e-3, rtol=0)


def test_loss_upper_bounds_expected_cross_entropy():
    """Jensen: loss >= MC estimate of E[-log softmax_y(beta z~^T w~)] with exact normalisers."""
    from vmf_embeddings.methods.vmf_distribution import sample_vmf

    d, c, n = 4, 3, 6
    head = _head(d, c, init_temp=-math.log(3.0))
    head.n_samples = 200
    g = torch.Generator().manual_seed(3)
    f = torch.randn(n, d, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, c, (n,), generator=g)
    torch.manual_seed(4)
    bound = head.loss(f, y).item()
    z = f * head.z_kappa_mult
    kz = z.norm(dim=-1)
    w = head.classifier.weight.detach()
    kw = w.norm(dim=-1)
    zs = sample_vmf(z / kz[:, None], kz, 400)  # S x n x d
    ws = sample_vmf((w / kw[:, None]).repeat(400 * n, 1), kw.repeat(400 * n), 1).reshape(400, n, c, d)
    logits = 3.0 * torch.einsum("snd,sncd->snc", zs, ws)
    expected_ce = -(torch.log_softmax(logits, -1).gather(2, y[None, :, None].expand(400, n, 1))).mean().item()
    assert bound >= expected_ce - 0.02


def test_initialisation_targets():
    """Class kappa ~ kc(d-1)/(1-kc^2); calibration gives mean |z_j| = sigma exactly; beta(-2.773) = 16."""
    d, c, kc = 128, 400, 0.4
    torch.manual_seed(0)
    head = VMFSoftmax(d, c, init_temp=-2.773, kappa_confidence=kc)
    norms = head.classifier.weight.detach().norm(dim=-1)
    target = kc * (d - 1) / (1 - kc**2)
    assert abs(norms.mean().item() - target) < 3 * norms.std().item() / math.sqrt(c) + 0.01 * target
    from vmf_embeddings.methods.bessel import mean_resultant_length

    assert abs(mean_resultant_length(d, norms.double()).mean().item() - kc) < 0.002
    assert head.beta.item() == pytest.approx(16.0, abs=0.01)
    batches = [torch.randn(50, d) * 3 + 1 for _ in range(4)]
    head.calibrate(batches)
    z = torch.cat([head.retrieval_embeddings(b) for b in batches])
    assert z.abs().mean().item() == pytest.approx(kappa_scale(kc, d), rel=1e-5)
    assert bool(head.calibrated) and "z_kappa_mult" in head.state_dict()


def test_gradients_reach_embeddings_weights_and_temperature():
    head = VMFSoftmax(16, 5, n_samples=4)
    f = torch.randn(8, 16, requires_grad=True)
    loss = head.loss(f, torch.arange(8) % 5)
    loss.backward()
    for grad in (f.grad, head.classifier.weight.grad, head.temp.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("d", [2, 3, 512, 2048])
def test_loss_finite_across_dimensions_and_concentrations(d):
    head = VMFSoftmax(d, 7, n_samples=2, kappa_confidence=0.7)
    for scale in (1e-3, 1.0, 1e3):
        f = torch.randn(4, d) * scale
        loss = head.loss(f, torch.tensor([0, 1, 2, 3]))
        assert torch.isfinite(loss), (d, scale)


def test_paper_normalizer_option_close_to_exact():
    head = _head(32, 5)
    paper = _head(32, 5, normalizer="paper")
    paper.load_state_dict(head.state_dict())
    f = torch.randn(6, 32, dtype=torch.float64) * 4
    y = torch.arange(6) % 5
    torch.manual_seed(0)
    exact_loss = head.loss(f, y)
    torch.manual_seed(0)
    assert paper.loss(f, y).item() == pytest.approx(exact_loss.item(), abs=0.1)


def test_refuses_one_dimensional_embeddings():
    with pytest.raises(ValueError, match="embedding_dim"):
        VMFSoftmax(1, 3)


def test_float32_loss_matches_float64_reference_loss(monkeypatch):
    # training runs in float32, where the exact normaliser takes the fused fast path: the same loss and gradients as
    # the float64 reference evaluation up to float32 rounding (same samples)
    for d in (3, 16, 128):
        g = torch.Generator().manual_seed(d)
        fixed = F.normalize(torch.randn(3, 7, d, generator=g, dtype=torch.float64), dim=-1)
        monkeypatch.setattr(vmf_module, "sample_vmf", lambda mu, kappa, n, generator=None, sampler="exact":
                            fixed.to(mu.dtype))
        head64 = _head(d, 5, init_temp=-3.0)
        head32 = VMFSoftmax(d, 5, init_temp=-3.0, n_samples=3)
        head32.load_state_dict(head64.state_dict())
        for head in (head32, head64):
            head.z_kappa_mult.fill_(4.0)
        f64 = torch.randn(7, d, generator=g, dtype=torch.float64).requires_grad_(True)
        f32 = f64.detach().float().requires_grad_(True)
        y = torch.arange(7) % 5
        loss64, loss32 = head64.loss(f64, y), head32.loss(f32, y)
        assert loss32.item() == pytest.approx(loss64.item(), rel=1e-5), d
        loss64.backward()
        loss32.backward()
        torch.testing.assert_close(f32.grad.double(), f64.grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(head32.classifier.weight.grad.double(), head64.classifier.weight.grad, rtol=1e-4,
                                   atol=1e-6)


def test_sampler_option_reaches_every_draw(monkeypatch):
    calls = []

    def spy(mu, kappa, n, generator=None, sampler="exact"):
        calls.append(sampler)
        return F.normalize(torch.randn(n, mu.shape[0], mu.shape[1], dtype=mu.dtype), dim=-1)

    monkeypatch.setattr(vmf_module, "sample_vmf", spy)
    for choice in ("exact", "original"):
        calls.clear()
        head = _head(8, 3, sampler=choice)
        f = torch.randn(4, 8, dtype=torch.float64)
        head.loss(f, torch.tensor([0, 1, 2, 0]))
        head.logits(f, n_samples=2)
        assert calls == [choice] * 3  # the loss's instance draws, the prediction's instance and class draws


def test_unknown_sampler_is_a_one_line_config_error(compose_cfg):
    from vmf_embeddings.errors import ConfigError
    from vmf_embeddings.validate import VMF_SAMPLERS, validate
    from vmf_embeddings.methods.vmf_distribution import SAMPLERS

    assert VMF_SAMPLERS == SAMPLERS
    with pytest.raises(ConfigError, match=r"^method\.params\.sampler='wood' is not one of exact, original$"):
        VMFSoftmax(8, 3, sampler="wood")
    cfg = compose_cfg(["method=vmf_softmax", "method.params.sampler=wood"])
    with pytest.raises(ConfigError, match=r"^method\.params\.sampler='wood' is not one of exact, original$"):
        validate(cfg)


def test_sampler_config_default_is_exact(compose_cfg):
    from vmf_embeddings.build import build_model

    cfg = compose_cfg(["method=vmf_softmax"])
    assert cfg.method.params.sampler == "exact" and build_model(cfg).head.sampler == "exact"
    cfg = compose_cfg(["method=vmf_softmax", "method.params.sampler=original"])
    assert build_model(cfg).head.sampler == "original"
