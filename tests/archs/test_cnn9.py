"""CNN-9 of SphereNet (the spherization paper's comparison backbone): shapes and the rows' variants."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.conftest import compose_config
from vmf_embeddings.archs.cnn9 import CNN9
from vmf_embeddings.build import build_model
from vmf_embeddings.layers.spherization import recording_projection
from vmf_embeddings.errors import ConfigError
from vmf_embeddings.layers.angular import AngularLinear
from vmf_embeddings.layers.spherization import Spherization


def test_paper_network_shapes_on_32px():
    net = CNN9().eval()
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [128] * 3 + [192] * 3 + [256] * 3
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.features) == 9
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.features) == 3
    assert net.feature_dim == 4096  # 4 x 4 x 256
    assert (net.fc.in_features, net.fc.out_features, net.fc.operator) == (4096, 256, "none")
    assert net.fc.bias is not None and net.preactivation_output
    with torch.no_grad():
        features = net.features(torch.rand(2, 3, 32, 32))
        out = net(torch.rand(2, 3, 32, 32))
    assert features.shape == (2, 4096) and (features >= 0).all()  # post-ReLU, pooled
    assert out.shape == (2, 256) and (out < 0).any()  # no activation after the FC-256


@pytest.mark.parametrize("operator", ["linear", "cosine", "sigmoid"])
def test_fc256_direct_projection_is_bounded(operator):
    net = CNN9(widths=(8, 8, 16), fc256_operator=operator).eval()
    assert isinstance(net.fc, AngularLinear) and net.fc.projection == "direct" and net.fc.bias is None
    with torch.no_grad():
        out = net(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, 256) and out.abs().max() <= 1.0
    assert CNN9(widths=(8, 8, 16), fc256_operator=operator, fc256_bias=True).fc.bias is not None


def test_spherized_conv_features_then_bias_free_fc():
    net = CNN9(widths=(8, 8, 16), spherize_conv_features=True, spherization={"scaling": 5.0, "radius": 5.0}).eval()
    assert isinstance(net.spherization, Spherization) and net.spherization.n == 256  # 4 x 4 x 16
    assert net.fc.in_features == 257 and net.fc.bias is None
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net.fc(net.spherization(net.features(x))))
    with pytest.raises(ConfigError, match="bias-free FC-256"):
        CNN9(widths=(8, 8, 16), spherize_conv_features=True, fc256_bias=True)


def test_bad_options_are_refused():
    with pytest.raises(ConfigError, match="fc256_operator='tanh'"):
        CNN9(fc256_operator="tanh")
    with pytest.raises(ConfigError, match="at least 8 px"):
        CNN9(image_size=4)


def test_config_rows_build_on_digits():
    """arch=cnn9 from the YAML (28 px, 1 channel: 3 x 3 x 256 after the pools), the spherized variants."""
    small = ["arch=cnn9", "arch.params.widths=[4,4,8]"]
    x = torch.rand(2, 1, 28, 28)
    model = build_model(compose_config(small)).eval()
    assert model.backbone.feature_dim == 8 * 3 * 3 and model(x).shape == (2, 256)
    # hsnsph_cnn9-s: FC-256 then Spherization(256); the head sees 257
    sph_s = build_model(compose_config(small + ["arch.spherize=true"])).eval()
    assert sph_s.backbone.spherization.n == 256 and sph_s.head.classifier.in_features == 257
    assert sph_s(x).shape == (2, 257)
    # hsnsph_cnn9-d: spherized conv features; the overlap analysis records that layer
    sph_d = build_model(compose_config(small + ["arch.params.spherize_conv_features=true"])).eval()
    with torch.no_grad(), recording_projection(sph_d) as record:
        assert sph_d(x).shape == (2, 256)
    arrays = record.arrays()
    assert arrays["projection_input"].shape == (2, 72) and arrays["projection_output"].shape == (2, 73)
    # FC-256 direct + the base FC-10 of the original (input-normalising quirk, bias)
    cfg = compose_config(small + ["arch.params.fc256_operator=sigmoid", "method=angular_softmax",
                                  "method.params.operator=none", "method.params.bias=true",
                                  "method.params.normalize_input_quirk=true"])
    model = build_model(cfg).eval()
    assert model.backbone.fc.operator == "sigmoid" and model.head.classifier.normalize_input_quirk
    assert model.head.log_probs(model(x)).shape == (2, 10)
