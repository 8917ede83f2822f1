"""The CIFAR-style ResNet-32 of Hyperspherical Prototype Networks (psmmettes/hpn models/cifar/resnet.py).

Stem 3x3 conv (16) + BN + ReLU; 3 stages of n BasicBlocks (n = (depth - 2) / 6, so 5 for depth 32),
widths 16/32/64, strides 1/2/2; global average pool; Linear(64 -> embedding_dim) with bias.
Used for CIFAR-100 (32 px) and ImageNet-200 (64 px) alike.

Kept from the official code on purpose: shape-changing shortcuts are a 3x3 stride-s conv + BN (the
usual choice is 1x1; `shortcut="conv1x1"` gives that), and convolutions are initialised
N(0, sqrt(2 / (k^2 C_out))) with BN gamma 1, beta 0, the linear layer at torch's default.
Changed: adaptive average pooling instead of AvgPool2d(8), so 64-px inputs need no second model (the
official ImageNet-200 copy hard-codes a larger pool; both reduce the final map to 1x1).
The third-party reimplementation's (Abhishaike/HyperProtoNetReproduce) "resnet32" was torchvision's ResNet-34
on 32-px images, a likely cause of its gap to the paper on CIFAR-100; that network is `conf/arch/resnet34.yaml`,
meant for the 224-px datasets.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "conv3x3") -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            kernel = 3 if shortcut == "conv3x3" else 1
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=kernel, stride=stride, padding=kernel // 2, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


class ResNetCifar(nn.Module):
    """CIFAR ResNet (depth 6n+2) mapping N x C x H x W images to N x embedding_dim outputs."""

    #: the output is a linear layer's pre-activation: arch.spherize=true may append the spherization layer
    preactivation_output = True

    def __init__(self, embedding_dim: int = 64, in_channels: int = 3, depth: int = 32, width: int = 16,
                 shortcut: str = "conv3x3") -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (e.g. 20, 32, 44, 56), got {depth}")
        if shortcut not in ("conv3x3", "conv1x1"):
            raise ValueError(f"shortcut must be 'conv3x3' (official HPN) or 'conv1x1', got {shortcut!r}")
        self.embedding_dim = int(embedding_dim)
        n_blocks = (depth - 2) // 6
        widths = (width, 2 * width, 4 * width)
        self.conv1 = _conv3x3(in_channels, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        stages, in_planes = [], width
        for index, planes in enumerate(widths):
            blocks = []
            for block in range(n_blocks):
                stride = 2 if (index > 0 and block == 0) else 1
                blocks.append(BasicBlock(in_planes, planes, stride, shortcut))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, self.embedding_dim)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan))
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))
