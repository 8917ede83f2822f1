"""The official CIFAR ResNet-32 layout and the ResNet-34 config for 224-px data."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from tests.conftest import compose_config
from vmf_embeddings.archs.resnet_cifar import BasicBlock, ResNetCifar


def test_resnet32_layout_matches_the_official_code():
    net = ResNetCifar(embedding_dim=10)
    stages = [net.layer1, net.layer2, net.layer3]
    assert [len(stage) for stage in stages] == [5, 5, 5]
    assert [stage[0].conv1.out_channels for stage in stages] == [16, 32, 64]
    assert [stage[0].conv1.stride[0] for stage in stages] == [1, 2, 2]
    assert net.layer1[0].downsample is None
    for stage in (net.layer2, net.layer3):
        shortcut = stage[0].downsample[0]
        assert shortcut.kernel_size == (3, 3) and shortcut.stride == (2, 2)  # non-standard 3x3 shortcut
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert net.fc.in_features == 64 and net.fc.out_features == 10 and net.fc.bias is not None
    assert sum(isinstance(m, BasicBlock) for m in net.modules()) == 15
    # depth 32 = stem conv + 15 blocks x 2 convs + fc (shortcut convs are not counted)
    shortcut_convs = {id(b.downsample[0]) for s in stages for b in s if b.downsample is not None}
    main_convs = [m for m in net.modules() if isinstance(m, nn.Conv2d) and id(m) not in shortcut_convs]
    assert len(main_convs) + 1 == 32 and len(shortcut_convs) == 2


def test_official_initialisation():
    torch.manual_seed(0)
    net = ResNetCifar(embedding_dim=10)
    conv = net.layer3[1].conv1
    expected = math.sqrt(2.0 / (9 * 64))
    assert conv.weight.std().item() == pytest.approx(expected, rel=0.05)
    assert torch.all(net.bn1.weight == 1) and torch.all(net.bn1.bias == 0)


@pytest.mark.parametrize("size", [32, 64])
def test_output_shape_at_cifar_and_imagenet200_sizes(size):
    net = ResNetCifar(embedding_dim=25).eval()
    assert net(torch.randn(2, 3, size, size)).shape == (2, 25)
    assert net.embedding_dim == 25


def test_options_and_validation():
    gray = ResNetCifar(embedding_dim=4, in_channels=1, depth=20, shortcut="conv1x1").eval()
    assert gray(torch.randn(2, 1, 28, 28)).shape == (2, 4)
    assert len(gray.layer1) == 3 and gray.layer2[0].downsample[0].kernel_size == (1, 1)
    with pytest.raises(ValueError, match="6n\\+2"):
        ResNetCifar(depth=33)
    with pytest.raises(ValueError, match="shortcut"):
        ResNetCifar(shortcut="identity")


def test_configs_build_resnet32_and_resnet34():
    cfg = compose_config(["arch=resnet32", "dataset=cifar100", "arch.params.embedding_dim=50"])
    net = instantiate(cfg.arch.backbone)
    assert isinstance(net, ResNetCifar) and net.embedding_dim == 50 and net.conv1.in_channels == 3
    cfg = compose_config(["arch=resnet34", "dataset=omniart", "arch.params.embedding_dim=47"])
    net = instantiate(cfg.arch.backbone).eval()
    assert net.embedding_dim == 47
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].kernel_size == (7, 7) and convs[0].stride == (2, 2)  # ImageNet stem for 224 px
    blocks = [m for m in net.modules() if type(m).__name__ == "BasicBlock"]
    assert len(blocks) == 3 + 4 + 6 + 3
    assert net(torch.randn(1, 3, 64, 64)).shape == (1, 47)
