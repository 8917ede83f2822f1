"""The spherization layer against the oracles of Kim & Kim (NeurIPS 2022) and an independent float64 reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vmf_embeddings.errors import ConfigError
from vmf_embeddings.layers.spherization import SphericalConv2d, SphericalLinear, Spherization, lower_angle


def reference(z: np.ndarray, n: int, s: float, r: float, delta: float = 1e-6) -> np.ndarray:
    """Float64, one coordinate at a time with a running product of sines (the paper's formula, no tricks)."""
    phi_l = min(math.asin(delta ** (1.0 / n)), 0.99 * math.pi / 2)
    out = np.zeros((z.shape[0], n + 1))
    for b in range(z.shape[0]):
        running = 1.0
        for k in range(n):
            phi = phi_l + (math.pi / 2 - phi_l) / (1 + math.exp(-s * z[b, k]))
            out[b, k] = r * running * math.cos(phi)
            running *= math.sin(phi)
        out[b, n] = r * running
    return out


def test_shapes_vector_and_per_pixel():
    layer = Spherization(4, scaling=5.0, radius=5.0)
    assert layer(torch.randn(3, 4)).shape == (3, 5)
    images = torch.randn(2, 4, 3, 5)
    out = layer(images)
    assert out.shape == (2, 5, 3, 5)
    pixel = images[1, :, 2, 3][None]
    torch.testing.assert_close(out[1, :, 2, 3], layer(pixel)[0])
    with pytest.raises(ValueError, match="last dimension must be 4"):
        layer(torch.randn(3, 6))


@pytest.mark.parametrize("n", [1, 2, 84, 300, 4096])
def test_outputs_lie_on_the_sphere_in_the_positive_orthant(n):
    g = torch.Generator().manual_seed(n)
    z = torch.randn(32, n, generator=g) * 3
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
        x = Spherization(n, scaling=5.0, radius=5.0)(z.to(dtype))
        x = x.detach()
        assert float((x.norm(dim=1) - 5).abs().max()) <= tol * 5
        assert float(x.min()) >= 0
        assert float(x[:, -1].min()) >= 5 * 1e-6 * (1 - 1e-5)
        assert float(x[:, 0].max()) <= 5 * math.cos(lower_angle(n, 1e-6)) + 1e-6 * 5
    legacy = Spherization(n, scaling=5.0, radius=5.0, impl="legacy")(z).detach()
    assert float((legacy.norm(dim=1) - 5).abs().max()) <= (n + 2) * 1.1e-6 * 5


def test_lower_angle_table():
    table = {1: 1.0e-6, 2: 1.000e-3, 3: 0.0100, 10: 0.2539, 64: 0.9371, 84: 1.0128, 256: 1.2452, 300: 1.2696,
             512: 1.3395, 640: 1.3638, 4096: 1.4887}
    for n, value in table.items():
        assert lower_angle(n, 1e-6) == pytest.approx(value, abs=1e-4 if n > 2 else 1e-7)
    assert lower_angle(111_975, 1e-6) < 0.99 * math.pi / 2 and lower_angle(10**6, 1e-6) == 0.99 * math.pi / 2
    assert lower_angle(5, 1e-6, "whole") == 0.0
    assert Spherization(3, range="whole").phi_low == 0.0


def test_angles_are_recovered_and_the_map_is_triangular():
    n = 6
    layer = Spherization(n, scaling=2.0, radius=3.0).double()
    z = torch.randn(5, n, dtype=torch.float64)
    x = layer(z)
    tail = torch.flip(torch.cumsum(torch.flip(x.pow(2), [1]), 1), [1]).sqrt()  # |x_k..x_{n+1}|
    recovered = torch.atan2(tail[:, 1:], x[:, :n])
    torch.testing.assert_close(recovered, layer.angles(z), atol=1e-12, rtol=0)
    jac = torch.autograd.functional.jacobian(lambda v: layer(v[None])[0], z[0])
    assert torch.all(jac[:n].triu(1) == 0)  # x_k depends on z_1..z_k only
    phi1 = [float(layer.angles(torch.tensor([[t] + [0.0] * (n - 1)], dtype=torch.float64))[0, 0].detach()) for t in (-1, 0, 1)]
    assert phi1[0] < phi1[1] < phi1[2]
    one = Spherization(1, scaling=1.0, radius=2.0).double()
    a, b = torch.tensor([[0.3]], dtype=torch.float64), torch.tensor([[-1.2]], dtype=torch.float64)
    expected = 4 * torch.cos(one.angles(a) - one.angles(b))
    torch.testing.assert_close((one(a) * one(b)).sum(), expected.sum())


def test_golden_values():
    z = torch.zeros(1, 2, dtype=torch.float64)
    layer = Spherization(2, scaling=1.0, radius=1.0)
    assert layer.phi_low == pytest.approx(1.000000167e-3, abs=1e-12)
    assert float(layer.angles(z)[0, 0].detach()) == pytest.approx(0.785898163, abs=1e-9)
    np.testing.assert_allclose(layer.double()(z)[0].detach().numpy(), [0.706753139, 0.499999750, 0.500500000], atol=1e-6)
    legacy = Spherization(2, scaling=1.0, radius=1.0, impl="legacy")(torch.zeros(1, 2))
    np.testing.assert_allclose(legacy[0].detach().numpy(), [0.7067543, 0.5000012, 0.5005014], atol=1e-6)


@pytest.mark.parametrize("n", [3, 84, 1024, 4096])
def test_float32_matches_the_float64_reference(n):
    z = np.random.default_rng(n).normal(size=(4, n))
    expected = reference(z, n, 5.0, 5.0)
    x = Spherization(n, scaling=5.0, radius=5.0)(torch.tensor(z, dtype=torch.float32))
    assert np.abs(x.detach().numpy() - expected).max() <= 2e-6 * 5
    legacy = Spherization(n, scaling=5.0, radius=5.0, impl="legacy")(torch.tensor(z, dtype=torch.float32))
    assert np.abs(legacy.detach().numpy() - expected).max() <= (n + 2) * 1.1e-6 * 5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_gradients_stay_finite_at_saturation(dtype):
    values = torch.tensor([-1e4, -100, -17, 0, 17, 100, 1e4, 30.0])
    z = values.repeat(4)[None].to(dtype).requires_grad_(True)
    layer = SphericalLinear(32, 3, scaling=5.0, radius=5.0, learn_radius=True).to(dtype)
    out = layer(z)
    assert out.dtype == dtype
    out.sum().backward()
    grads = [z.grad, layer.spherize.scaling.grad, layer.spherize.radius.grad, layer.linear.weight.grad]
    assert all(torch.isfinite(g).all() for g in grads)


def test_gradcheck_in_float64():
    layer = Spherization(5, scaling=1.5, radius=2.0, learn_radius=True).double()
    z = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: layer(v), (z,))


def test_module_contract():
    linear = SphericalLinear(7, 4)
    assert linear.linear.bias is None and linear.linear.in_features == 8
    assert isinstance(linear.spherize.scaling, torch.nn.Parameter)
    assert {"spherize.scaling", "spherize.radius"} <= set(linear.state_dict())
    assert "spherize.radius" not in dict(linear.named_parameters())
    frozen = Spherization(7, learn_scaling=False)
    assert not list(frozen.parameters()) and {"scaling", "radius"} <= set(frozen.state_dict())
    conv = SphericalConv2d(3, 8, 3, padding=1)
    assert conv.conv.bias is None and conv.conv.in_channels == 4
    assert conv(torch.randn(2, 3, 5, 5)).shape == (2, 8, 5, 5)


def test_geometry_consequences():
    layer = Spherization(6, scaling=5.0, radius=3.0).double()
    x = layer(torch.randn(20, 6, dtype=torch.float64))
    sq = torch.cdist(x, x).pow(2)
    torch.testing.assert_close(sq, 2 * 9 - 2 * x @ x.t())  # Euclidean and cosine rankings agree
    assert float((x @ x.t()).min().detach()) >= 0  # the positive orthant: at most 90 degrees apart
    w = torch.randn(4, 7, dtype=torch.float64)
    other = Spherization(6, scaling=5.0, radius=0.5).double()
    z = torch.randn(20, 6, dtype=torch.float64)
    assert torch.equal((layer(z) @ w.t()).argmax(1), (other(z) @ w.t()).argmax(1))


def test_saturated_fraction_is_counted_in_training_only():
    layer = Spherization(4, scaling=5.0)
    layer.eval()
    layer(torch.full((2, 4), 100.0))
    assert layer.take_saturated_fraction() == 0.0
    layer.train()
    layer(torch.tensor([[100.0, -100.0, 0.0, 0.1]]))
    assert layer.take_saturated_fraction() == pytest.approx(0.5)
    assert layer.take_saturated_fraction() == 0.0  # reset


@pytest.mark.parametrize("kwargs, message", [({"n": 0}, "n=0"), ({"n": 3, "delta": 0.0}, "delta"),
                                             ({"n": 3, "radius": -1.0}, "radius"),
                                             ({"n": 3, "range": "half"}, "range"), ({"n": 3, "impl": "fast"}, "impl")])
def test_bad_arguments_are_refused_in_one_line(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Spherization(**kwargs)
