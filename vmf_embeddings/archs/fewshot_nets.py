"""The few-shot backbones of the spherization paper (Kim & Kim, NeurIPS 2022; its `fewshot/` code comes from
SSL-FEW-SHOT / FEAT: `feat/networks/{convnet,resnet,sphconvnet,sphresnet}.py`), miniImageNet ProtoNet rows.

- `ConvNet4FewShot` (arch=convnet4_fewshot), 84 px: 4 x (Conv3x3 -> BN -> ReLU -> MaxPool2) at 64 channels
  (the last block has embedding_dim channels, FEAT's z_dim) (84 -> 5 px), then MaxPool(5) -> 64-d (baseline).
  Spherized: the MaxPool(5) is replaced by Conv5x5 stride 5 (with bias) -> BN, whose output (a pre-activation) goes
  through Spherization(64) -> 65-d.
- `ResNet12Wide` (arch=resnet12_wide), 80 px: Conv3x3(3 -> 80, with bias) -> BN -> ReLU, then three stages of
  [4, 4, 4] BasicBlocks (Conv3x3-BN-ReLU-Conv3x3-BN + shortcut, ReLU; 1x1 conv + BN shortcut on the first block)
  at widths 160 / 320 / 640, each stage starting with stride 2 (80 -> 10 px), then average pooling -> 640-d
  (baseline: the pooled post-ReLU feature). Spherized: BN(640) -> average pooling -> Spherization(640) -> 641-d.
  Convs are Kaiming-normal (fan-out), BN 1 / 0, as the original.

Guesses and departures (documented, the original's scripts were not run):
- The original's "ResNet" with [4, 4, 4] blocks has 25 conv layers, not 12; the row is called ResNet-12 (wide) after
  the papers it comes from. `blocks` and `widths` are options (arch.params.blocks / widths) for smaller variants.
- The original pools with AvgPool2d(10, stride 1) (1 x 1 only at 80 px) and MaxPool2d(5) (1 x 1 at 84 px); here
  ResNet12Wide pools globally (AdaptiveAvgPool2d(1): identical at 80 px, 640-d at any size), and ConvNet4FewShot
  keeps MaxPool(5) / Conv5x5-stride-5 but shrinks that kernel to the map when the map is smaller than 5 px (images
  under 80 px, e.g. 28-px Omniglot: a 1 x 1 map, so MaxPool(1) / Conv1x1). The pooled map is (side // k)^2 pixels
  (1 from 16 to 159 px), and its size times the last block's channels is embedding_dim (checked).
- arch.params.embedding_dim sets the last block's channels (ConvNet-4) or the last stage width (ResNet).
- In the spherized ResNet the BN comes after the last block's ReLU (as the original): the spherized vector's input
  is a BN-shifted, pooled post-activation, not a linear layer's pre-activation.
- No layer follows the embedding in the original (ProtoNet distances on it); here the method head reads it.
"""

from __future__ import annotations

from typing import List, Mapping, Optional, Sequence

import torch
from torch import nn

from vmf_embeddings.archs.spherization_nets import _SpherizableNet, spherization_options
from vmf_embeddings.errors import ConfigError
from vmf_embeddings.layers.spherization import Spherization


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels),
                         nn.ReLU(inplace=True), nn.MaxPool2d(2))


def convnet4_side(image_size: int, blocks: int = 4) -> tuple:
    """(kernel, side) of ConvNet-4's final pool: the map after four halvings is pooled by a kernel of 5 (stride 5),
    or of the map's own side when it is smaller; `side` is the pooled map's side."""
    side = int(image_size)
    for _ in range(int(blocks)):
        side //= 2
    kernel = min(5, side)
    return kernel, (side // kernel if kernel else 0)


class ConvNet4FewShot(_SpherizableNet):
    """FEAT's ConvNet-4 (84 px -> 64-d); spherized: Conv5x5/5 + BN instead of the final MaxPool(5), sph(64 -> 65)."""

    def __init__(self, embedding_dim: int = 64, in_channels: int = 3, image_size: int = 84, width: int = 64,
                 spherize: bool = False, spherization: Optional[Mapping] = None) -> None:
        super().__init__()
        self._set_dims("convnet4_fewshot", embedding_dim, spherize)
        kernel, side = convnet4_side(image_size)
        if side < 1 or self.embedding_dim % (side * side):
            raise ConfigError(
                f"arch=convnet4_fewshot pools {image_size}-px images to {side} x {side} maps (it needs >= 16 px); "
                f"arch.params.embedding_dim={embedding_dim} must be a multiple of {side * side} (the last block's "
                f"channels x {side * side})"
            )
        width, z_dim = int(width), self.embedding_dim // (side * side)
        self.encoder = nn.Sequential(_conv_block(int(in_channels), width), _conv_block(width, width),
                                     _conv_block(width, width), _conv_block(width, z_dim))
        if self.spherize:
            self.pool = nn.Sequential(nn.Conv2d(z_dim, z_dim, kernel_size=kernel, stride=kernel),
                                      nn.BatchNorm2d(z_dim))
            self.spherization = Spherization(self.embedding_dim, **spherization_options(spherization))
        else:
            self.pool = nn.MaxPool2d(kernel)
            self.spherization = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.pool(self.encoder(x)), 1)
        return self.spherization(x) if self.spherization is not None else x


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Conv3x3-BN-ReLU-Conv3x3-BN + shortcut -> ReLU (the original's BasicBlock, expansion 1)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv3x3(in_planes, planes, stride), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = _conv3x3(planes, planes), nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class ResNet12Wide(_SpherizableNet):
    """FEAT / SSL-FEW-SHOT's wide ResNet (160/320/640, [4, 4, 4] blocks, 80 px -> 640-d); spherized: BN ->
    average pool -> sph(640 -> 641)."""

    def __init__(self, embedding_dim: int = 640, in_channels: int = 3, image_size: int = 80,
                 widths: Sequence[int] = (160, 320, 640), blocks: Sequence[int] = (4, 4, 4),
                 spherize: bool = False, spherization: Optional[Mapping] = None) -> None:
        super().__init__()
        self._set_dims("resnet12_wide", embedding_dim, spherize)
        widths, blocks = [int(w) for w in widths], [int(b) for b in blocks]
        if not widths or len(widths) != len(blocks) or min(blocks) < 1:
            raise ConfigError(f"arch=resnet12_wide: arch.params.widths={widths} and blocks={blocks} must be lists of "
                              f"the same length, blocks >= 1")
        if self.embedding_dim != widths[-1]:
            raise ConfigError(f"arch=resnet12_wide gives {widths[-1]}-d embeddings (the last width); "
                              f"arch.params.embedding_dim={embedding_dim} must equal that")
        if int(image_size) < 2 ** len(widths):
            raise ConfigError(f"arch=resnet12_wide needs images of at least {2 ** len(widths)} px "
                              f"(dataset.image_size={image_size})")
        stem = widths[0] // 2
        self.stem = nn.Sequential(nn.Conv2d(int(in_channels), stem, kernel_size=3, stride=1, padding=1),
                                  nn.BatchNorm2d(stem), nn.ReLU(inplace=True))
        stages: List[nn.Module] = []
        planes = stem
        for width, n in zip(widths, blocks):
            layers = [BasicBlock(planes, width, stride=2)] + [BasicBlock(width, width) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            planes = width
        self.layers = nn.Sequential(*stages)
        self.bn_sph = nn.BatchNorm2d(widths[-1]) if self.spherize else None
        self.pool = nn.AdaptiveAvgPool2d(1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.spherization = (Spherization(self.embedding_dim, **spherization_options(spherization))
                             if self.spherize else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        if self.bn_sph is not None:
            x = self.bn_sph(x)
        x = torch.flatten(self.pool(x), 1)
        return self.spherization(x) if self.spherization is not None else x


__all__ = ["ConvNet4FewShot", "ResNet12Wide", "BasicBlock", "convnet4_side"]
