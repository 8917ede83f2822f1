"""Backbones: output shapes, the CIFAR stem, frozen BatchNorm statistics and the pretrained-weights error."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vmf_embeddings.archs.n_digit_mnist import NDigitMNIST
from vmf_embeddings.archs.resnet import TorchvisionResNet


def test_n_digit_mnist_shapes():
    net = NDigitMNIST(embedding_dim=5)
    assert net(torch.rand(3, 1, 28, 28)).shape == (3, 5)
    wide = NDigitMNIST(embedding_dim=4, n_digits=2)
    assert wide.head[0].in_features == 2 * 16 * 7 * 7


@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_cifar_stem_and_embedding(depth):
    net = TorchvisionResNet(depth=depth, embedding_dim=16, first_conv_3x3=True).eval()
    assert net.trunk.conv1.kernel_size == (3, 3) and net.trunk.conv1.stride == (1, 1)
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 16)
    assert torch.count_nonzero(net.remap.bias) == 0


def test_resnet_imagenet_stem():
    net = TorchvisionResNet(depth=18, embedding_dim=8, first_conv_3x3=False)
    assert net.trunk.conv1.kernel_size == (7, 7) and net.trunk.conv1.stride == (2, 2)


def test_set_bn_eval_freezes_running_statistics_but_trains_affine():
    net = TorchvisionResNet(depth=18, embedding_dim=8, set_bn_eval=True).train()
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns)
    before = bns[0].running_mean.clone()
    net(torch.rand(4, 3, 32, 32) * 5).sum().backward()
    torch.testing.assert_close(bns[0].running_mean, before)
    assert bns[0].weight.grad is not None


def test_pretrained_without_network_is_one_clear_line(monkeypatch):
    import torchvision

    def offline(self, *args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(RuntimeError, match="arch.params.pretrained") as info:
        TorchvisionResNet(depth=18, embedding_dim=8, pretrained=True)
    assert "\n" not in str(info.value)


def test_pretrained_weights_are_loaded_without_the_fc_layer(monkeypatch):
    import torchvision

    reference = torchvision.models.resnet18(weights=None).state_dict()
    reference = {k: torch.full_like(v, 0.5) if v.is_floating_point() else v for k, v in reference.items()}
    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", lambda self, *a, **k: reference)
    net = TorchvisionResNet(depth=18, embedding_dim=8, pretrained=True, first_conv_3x3=False)
    assert torch.all(net.trunk.layer1[0].conv1.weight == 0.5) and torch.all(net.trunk.conv1.weight == 0.5)
