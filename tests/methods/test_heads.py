"""Softmax-family heads against float64 references and pytorch-metric-learning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vmf_embeddings.methods.arcface import ArcFace
from vmf_embeddings.methods.hyperbolic import HyperbolicSoftmax, hyperbolic_mlr_logits
from vmf_embeddings.methods.poincare import expmap0, mobius_add, poincare_distance, project, to_poincare
from vmf_embeddings.methods.softmax import NormalizedSoftmax, UnnormalizedSoftmax


def _batch(n=16, d=5, c=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, c, (n,), generator=g)


def _reference_ce(logits: np.ndarray, labels: np.ndarray) -> float:
    logits = logits.astype(np.float64)
    m = logits.max(1, keepdims=True)
    log_z = (m + np.log(np.exp(logits - m).sum(1, keepdims=True)))[:, 0]
    return float(np.mean(log_z - logits[np.arange(len(labels)), labels]))


def test_unnormalized_softmax_matches_float64_reference():
    x, y = _batch()
    head = UnnormalizedSoftmax(5, 7)
    w = head.classifier.weight.detach().double().numpy()
    expected = _reference_ce(x.double().numpy() @ w.T, y.numpy())
    assert head.loss(x, y).item() == pytest.approx(expected, rel=1e-5)


def test_normalized_softmax_matches_pml():
    from pytorch_metric_learning.losses import NormalizedSoftmaxLoss

    x, y = _batch()
    head = NormalizedSoftmax(5, 7, init_temp=-1.5)
    pml = NormalizedSoftmaxLoss(num_classes=7, embedding_size=5, temperature=math.exp(-1.5))
    with torch.no_grad():
        pml.W.copy_(head.classifier.weight.t())
    assert head.loss(x, y).item() == pytest.approx(pml(x, y).item(), rel=1e-5)
    xn = F.normalize(x.double(), dim=1).numpy()
    wn = F.normalize(head.classifier.weight.detach().double(), dim=1).numpy()
    assert head.loss(x, y).item() == pytest.approx(_reference_ce(math.exp(1.5) * xn @ wn.T, y.numpy()), rel=1e-5)


def test_arcface_matches_pml_and_reduces_to_cosine_at_zero_margin():
    from pytorch_metric_learning.losses import ArcFaceLoss

    x, y = _batch()
    beta = 16.0
    head = ArcFace(5, 7, init_temp=-math.log(beta), margin=0.5)
    pml = ArcFaceLoss(num_classes=7, embedding_size=5, margin=math.degrees(0.5), scale=beta)
    with torch.no_grad():
        pml.W.copy_(head.classifier.weight.t())
    assert head.loss(x, y).item() == pytest.approx(pml(x, y).item(), rel=1e-5)
    cosine = NormalizedSoftmax(5, 7, init_temp=-math.log(beta))
    cosine.load_state_dict(head.state_dict())
    head.margin = 0.0
    head.on_epoch_start(0)
    assert head.loss(x, y).item() == pytest.approx(cosine.loss(x, y).item(), rel=1e-6)
    # test-time logits carry no margin (the margin only shapes training)
    torch.testing.assert_close(head.logits(x), cosine.logits(x))


def test_arcface_warmup_and_easy_margin():
    head = ArcFace(5, 7, margin=0.5, warmup_epochs=2, easy_margin=True)
    head.on_epoch_start(0)
    assert head.active_margin == 0.0
    head.on_epoch_start(2)
    assert head.active_margin == 0.5
    # a target at theta ~ pi: easy margin keeps cos(theta) instead of the non-monotone cos(theta + m)
    w = head.classifier.weight.detach()
    x = -w[:1].clone()
    loss_easy = head.loss(x, torch.tensor([0]))
    head.easy_margin = False
    assert head.loss(x, torch.tensor([0])) != loss_easy


def _mlr_direct(x, a, p, c):
    """hyptorch's form: materialise (-p_k) (+) x for every class (float64 reference)."""
    out = torch.empty(x.shape[0], a.shape[0], dtype=torch.float64)
    for k in range(a.shape[0]):
        q = -p[k].expand_as(x)
        xy = (q * x).sum(-1, keepdim=True)
        q2, x2 = q.pow(2).sum(-1, keepdim=True), x.pow(2).sum(-1, keepdim=True)
        mob = ((1 + 2 * c * xy + c * x2) * q + (1 - c * q2) * x) / (1 + 2 * c * xy + c**2 * q2 * x2 + 1e-5)
        lam = 2 / (1 - c * p[k].pow(2).sum())
        an = a[k].norm()
        num = 2 * math.sqrt(c) * (mob * a[k]).sum(-1)
        den = (1 - c * mob.pow(2).sum(-1)) * an
        out[:, k] = lam * an / math.sqrt(c) * torch.asinh(num / den)
    return out


@pytest.mark.parametrize("c", [1e-5, 0.1, 1.0])
def test_hyperbolic_mlr_closed_form_matches_materialised_moebius(c):
    x, _ = _batch(n=9, d=4, seed=1)
    g = torch.Generator().manual_seed(2)
    xb = project(expmap0(x.double(), c), c)
    p = expmap0(torch.randn(6, 4, generator=g, dtype=torch.float64) * 0.3, c)
    a = torch.randn(6, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(hyperbolic_mlr_logits(xb, a, p, c), _mlr_direct(xb, a, p, c), rtol=1e-9, atol=1e-9)


def test_hyperbolic_head_trains_a_step_and_exports_curvature():
    x, y = _batch()
    head = HyperbolicSoftmax(5, 7, c=0.05)
    x.requires_grad_(True)
    loss = head.loss(x, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all() and torch.isfinite(head.p_vals.grad).all()
    assert head.export()["curvature"] == pytest.approx(0.05)


def test_poincare_properties():
    """Poincare ball: inside the ball, symmetric, zero diagonal, distance from the origin."""
    c = 0.5
    g = torch.Generator().manual_seed(3)
    u = torch.randn(20, 6, generator=g, dtype=torch.float64) * 5
    x = project(expmap0(u, c), c)
    assert (x.norm(dim=-1) < 1 / math.sqrt(c)).all()
    d = poincare_distance(x[:, None], x[None], c)
    torch.testing.assert_close(d, d.t())
    assert d.diagonal().abs().max() <= 1e-3
    torch.testing.assert_close(mobius_add(-x, x, c), torch.zeros_like(x), atol=1e-12, rtol=0)
    origin = torch.zeros(1, 6, dtype=torch.float64)
    small = x[:3] * 0.1
    expected = 2 / math.sqrt(c) * torch.atanh(math.sqrt(c) * small.norm(dim=-1))
    torch.testing.assert_close(poincare_distance(origin, small, c), expected)


def test_riemannian_gradient_rescales_by_inverse_metric():
    c = 1.0
    u = torch.tensor([[0.3, -0.2]], dtype=torch.float64, requires_grad=True)
    to_poincare(u, c, riemannian=True).sum().backward()
    with_fix = u.grad.clone()
    u.grad = None
    x = project(expmap0(u, c), c)
    x.sum().backward()
    scale = (1 - c * x.detach().pow(2).sum()) ** 2 / 4
    torch.testing.assert_close(with_fix, u.grad * scale)


def test_poincare_distance_reaches_the_far_side_of_the_projected_ball():
    """Two antipodal points at the projection limit are 4 artanh(1 - 1e-3)/sqrt(c) ~ 15.2/sqrt(c) apart; an
    artanh clamp at 1 - 1e-5 used to cap every distance at 12.2/sqrt(c)."""
    from vmf_embeddings.eval.geometry import poincare_distance as mobius_form

    for c in (1.0, 0.05, 1e-5):
        u = torch.tensor([[1e6, 0.0, 0.0], [-1e6, 0.0, 0.0], [3.0, -1.0, 0.5]], dtype=torch.float64) / math.sqrt(c)
        x = project(expmap0(u, c), c)
        d = poincare_distance(x[:, None], x[None], c)
        expected = 4 * math.atanh(1 - 1e-3) / math.sqrt(c)
        assert float(d[0, 1]) == pytest.approx(expected, rel=1e-6) and expected * math.sqrt(c) > 15.1
        np.testing.assert_allclose(d.numpy(), mobius_form(x.numpy(), x.numpy(), c), rtol=1e-6, atol=1e-6)
