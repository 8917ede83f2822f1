"""SphereNet's angle-based operators (AngularLinear) against oracle 13 of the spherization reference, the original's
formulas, finite gradients at c = +-1, and the angular_softmax head on digits."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tests.conftest import FAST, compose_config
from vmf_embeddings.errors import ConfigError
from vmf_embeddings.layers.angular import (
    CLAMP_EPS,
    AngularLinear,
    clamp_cosine,
    linear_operator,
    operator_of_angle,
    sigmoid_operator,
)

ANGLES = torch.tensor([0.0, math.pi / 2, math.pi], dtype=torch.float64)


def original_sigmoid(theta: np.ndarray, k: float = 0.3) -> np.ndarray:
    """SphereNet's literal formula: K (1 - e^(theta/k - pi/(2k))) / (1 + e^(theta/k - pi/(2k)))."""
    coeff = (1 + np.exp(-np.pi / (2 * k))) / (1 - np.exp(-np.pi / (2 * k)))
    u = theta / k - np.pi / (2 * k)
    return coeff * (1 - np.exp(u)) / (1 + np.exp(u))


def _layer(operator, projection="direct", d=3, c=4, seed=0, dtype=torch.float64, **kwargs):
    torch.manual_seed(seed)
    return AngularLinear(d, c, operator=operator, projection=projection, **kwargs).to(dtype)


# -- oracle 13 --------------------------------------------------------------------------------------------------------
def test_linear_operator_values():
    torch.testing.assert_close(linear_operator(ANGLES), torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64))


def test_sigmoid_operator_values_and_odd_about_half_pi():
    torch.testing.assert_close(sigmoid_operator(ANGLES), torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64),
                               rtol=0, atol=1e-12)
    t = torch.linspace(0, math.pi / 2, 50, dtype=torch.float64)
    torch.testing.assert_close(sigmoid_operator(math.pi / 2 + t), -sigmoid_operator(math.pi / 2 - t), rtol=0, atol=1e-12)
    theta = np.linspace(0, np.pi, 101)
    np.testing.assert_allclose(sigmoid_operator(torch.from_numpy(theta)).numpy(), original_sigmoid(theta), atol=1e-12)
    assert torch.all(torch.diff(sigmoid_operator(torch.from_numpy(theta))) < 0)  # decreasing in the angle


def test_cosine_wsoftmax_logit_is_norm_times_cosine():
    layer = _layer("cosine", "wsoftmax", d=5, c=3)
    x = torch.randn(8, 5, dtype=torch.float64) * torch.tensor([0.1, 1, 3, 10, 50, 0.5, 2, 1e3], dtype=torch.float64)[:, None]
    w = layer.weight.detach()
    cos = (x @ w.t()) / (x.norm(dim=1, keepdim=True) * w.norm(dim=1))
    torch.testing.assert_close(layer(x), x.norm(dim=1, keepdim=True) * cos)
    g, scale = layer.scores(x)
    torch.testing.assert_close(scale * g, layer(x))


@pytest.mark.parametrize("operator", ["linear", "sigmoid"])
def test_wsoftmax_logit_is_norm_times_g_of_the_angle(operator):
    layer = _layer(operator, "wsoftmax", d=4, c=3)
    x = torch.randn(10, 4, dtype=torch.float64) * 7
    w = layer.weight.detach()
    theta = torch.arccos((x @ w.t()) / (x.norm(dim=1, keepdim=True) * w.norm(dim=1)))
    torch.testing.assert_close(layer(x), x.norm(dim=1, keepdim=True) * operator_of_angle(theta, operator))


@pytest.mark.parametrize("operator", ["linear", "cosine", "sigmoid"])
def test_direct_projection_is_g_of_the_angle_between_normalised_vectors_and_bounded(operator):
    layer = _layer(operator, d=6, c=5)
    x = torch.randn(40, 6, dtype=torch.float64) * 100
    w = layer.weight.detach()
    theta = torch.arccos((x @ w.t()) / (x.norm(dim=1, keepdim=True) * w.norm(dim=1)))
    torch.testing.assert_close(layer(x), operator_of_angle(theta, operator))
    assert layer(x).abs().max() <= 1.0
    torch.testing.assert_close(layer(3 * x), layer(x))  # the input's norm is discarded


def test_layer_at_the_three_angles_within_the_clamp():
    """x at angle 0, pi/2, pi from the single class weight: g = 1, 0, -1 up to the clamp at 1 - 1e-4."""
    for operator in ("linear", "cosine", "sigmoid"):
        layer = _layer(operator, d=2, c=1)
        with torch.no_grad():
            layer.weight.copy_(torch.tensor([[2.0, 0.0]]))
        x = 3 * torch.stack([torch.cos(ANGLES), torch.sin(ANGLES)], 1)
        got = layer(x)[:, 0]
        limit = float(operator_of_angle(torch.arccos(torch.tensor(1 - CLAMP_EPS, dtype=torch.float64)), operator))
        torch.testing.assert_close(got, torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64), rtol=0,
                                   atol=1 - limit + 1e-12)


# -- the original's behaviour behind flags ----------------------------------------------------------------------------
def test_bias_is_added_before_dividing_by_the_weight_norm_and_clamped():
    layer = _layer("linear", d=3, c=2, bias=True)
    with torch.no_grad():
        layer.bias.copy_(torch.tensor([5.0, -0.1]))
    x = torch.randn(6, 3, dtype=torch.float64)
    w, b = layer.weight.detach(), layer.bias.detach()
    c = ((x / x.norm(dim=1, keepdim=True)) @ w.t() + b) / w.norm(dim=1)
    torch.testing.assert_close(layer.cosines(x), c)
    assert (c[:, 0] > 1).all()  # a large bias pushes c out of [-1, 1]: clamped, g pinned at its top value
    torch.testing.assert_close(layer(x), linear_operator(torch.arccos(clamp_cosine(c))))
    assert torch.allclose(layer(x)[:, 0], layer(x)[0, 0].expand(6))


def test_normalize_input_quirk_with_operator_none():
    plain = _layer("none", d=3, c=2, bias=True)
    quirk = _layer("none", d=3, c=2, bias=True, normalize_input_quirk=True)
    x = torch.randn(5, 3, dtype=torch.float64) * 4
    torch.testing.assert_close(plain(x), x @ plain.weight.t() + plain.bias)
    x_hat = x / torch.sqrt((x ** 2).sum(1, keepdim=True) + 1e-4)
    torch.testing.assert_close(quirk(x), x_hat @ quirk.weight.t() + quirk.bias)
    assert not plain.has_projection


def test_wsoftmax_quirk_applies_g_to_the_scaled_cosine():
    layer = _layer("linear", "wsoftmax", d=3, c=2, wsoftmax_quirk=True)
    x = torch.randn(20, 3, dtype=torch.float64) * 30
    v = x @ torch.nn.functional.normalize(layer.weight.detach(), dim=1).t()
    out = layer(x)
    assert torch.isfinite(out).all() and out.abs().max() <= 1.0
    high = v >= 1 - CLAMP_EPS  # squashed into [1 - 2e-4, 1 - 1e-4): g near its top
    assert high.any() and (out[high] > 0.98).all()
    mid = v.abs() < 1 - CLAMP_EPS
    torch.testing.assert_close(out[mid], linear_operator(torch.arccos(v[mid])))


@pytest.mark.parametrize("kwargs, match", [
    ({"operator": "tanh"}, "operator='tanh'"),
    ({"projection": "indirect"}, "projection='indirect'"),
    ({"operator": "none", "projection": "wsoftmax"}, "operator=none has no projection"),
    ({"operator": "cosine", "projection": "wsoftmax", "bias": True}, "no bias"),
])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        AngularLinear(3, 2, **kwargs)


# -- gradients --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("operator, projection, bias", [
    ("linear", "direct", False), ("cosine", "direct", False), ("sigmoid", "direct", False),
    ("linear", "direct", True), ("sigmoid", "direct", True),
    ("linear", "wsoftmax", False), ("cosine", "wsoftmax", False), ("sigmoid", "wsoftmax", False),
])
def test_gradients_stay_finite_at_cosine_plus_minus_one(dtype, operator, projection, bias):
    layer = _layer(operator, projection, d=3, c=2, dtype=dtype, bias=bias)
    if bias:
        with torch.no_grad():
            layer.bias.copy_(torch.tensor([3.0, -3.0], dtype=dtype))  # c beyond +-1
    w = layer.weight.detach()
    x = torch.cat([w[:1] * 2, -w[:1] * 0.5, w[1:] * 4, -w[1:]]).clone().requires_grad_(True)  # c = +-1 exactly
    out = layer(x)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(layer.weight.grad).all()
    if bias:
        assert torch.isfinite(layer.bias.grad).all()
    # inside the clamp band arccos' slope is bounded by 1 / sqrt(1 - (1 - 1e-4)^2)
    c = torch.tensor([1 - CLAMP_EPS, -1 + CLAMP_EPS, 1.0, -1.0, 1.5], dtype=dtype, requires_grad=True)
    torch.arccos(clamp_cosine(c)).sum().backward()
    assert torch.isfinite(c.grad).all() and c.grad.abs().max() <= 1 / math.sqrt(1 - (1 - CLAMP_EPS) ** 2) * 1.001


def test_gradient_flows_through_float64_gradcheck():
    layer = _layer("sigmoid", "wsoftmax", d=3, c=2)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))
    direct = _layer("linear", d=3, c=2, bias=True)
    assert torch.autograd.gradcheck(direct, (x,))


# -- the method head ------------------------------------------------------------------------------------------------
def test_head_exports_the_projection_input_and_per_class_values():
    from vmf_embeddings.methods.angular import AngularSoftmax

    head = AngularSoftmax(embedding_dim=4, n_classes=3, operator="sigmoid", projection="wsoftmax").double()
    x = torch.randn(5, 4, dtype=torch.float64) * 3
    extras = head.export_batch(x)
    assert set(extras) == {"projection_input", "projection_output"}
    torch.testing.assert_close(extras["projection_input"], x)
    torch.testing.assert_close(x.norm(dim=1, keepdim=True) * extras["projection_output"], head.logits(x))
    assert AngularSoftmax(4, 3, operator="none").export_batch(x) == {}  # no projection, nothing to analyse
    assert head.geometry == "cosine"


def test_angular_softmax_trains_on_digits_above_chance(tmp_path):
    from vmf_embeddings.main import run

    run(compose_config(FAST + ["method=angular_softmax", "method.params.operator=sigmoid", "mode.epochs=4",
                               "mode.projector=false"]), tmp_path / "run")
    test = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert test["accuracy"] >= 0.4, test  # 10 classes: chance is 0.1 (measured 0.60 at 5 epochs)
    assert {"n_overlap", "n_overlap_errors", "overlap_error_ratio"} <= set(test)
    with np.load(tmp_path / "run" / "embeddings" / "test.npz") as f:
        assert f["projection_input"].shape == (test["n"], 3) and f["projection_output"].shape == (test["n"], 10)
