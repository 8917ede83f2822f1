"""VGG-BN of the spherization paper (Kim & Kim, NeurIPS 2022; github.com/GIST-IRR/spherization_layer, `models/vgg.py`)
as an embedding backbone (arch=vgg).

features (torchvision's cfgs A / B / D / E for depth 11 / 13 / 16 / 19, Conv3x3-BN-ReLU, 2x2 pools) -> flatten
(32 px -> 1 x 1, so the last width) -> Linear(w, 4096) -> ReLU -> Dropout -> Linear(4096, embedding_dim = 4096)
-> [ReLU -> Dropout (baseline) | Spherization(4096) (spherized: the pre-activation, no ReLU or Dropout)].
The method head (the paper's Linear(4096, C), bias-free in the spherized net) follows.

- `width` A..E: the four stage widths (stage 5 reuses the fourth), the paper's `--width` (CIFAR-100, Table 2):
  A 16/32/64/128, B 32/64/128/256, C 64/128/256/512 (standard VGG), D 128/256/512/1024, E 256/512/1024/1024.
- `one_channel`: the FashionMNIST variant (vgg11_bn_one): 1 input channel and AvgPool instead of MaxPool.
- Images smaller than 32 px (28-px MNIST-family data) are resized to 32 px, the paper's Resize(32) for FashionMNIST,
  done here on the device with F.interpolate (bilinear) inside forward.
- Initialisation as the paper: the features get torchvision's VGG init (Kaiming-normal fan-out convs, zero biases,
  BN 1 / 0); the classifier is rebuilt after it in the original, so it keeps PyTorch's default Linear init.
  torchvision's AdaptiveAvgPool(7) is skipped (the original flattens the features directly). No pretrained weights.

Departures: images larger than 32 px are not resized; the flattened width is then last width x (side // 32)^2.
"""

from __future__ import annotations

from typing import List, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.vgg import cfgs as TORCHVISION_CFGS

from vmf_embeddings.archs.spherization_nets import _SpherizableNet, embedding_tail
from vmf_embeddings.errors import ConfigError

#: depth -> torchvision cfg name
DEPTHS = {11: "A", 13: "B", 16: "D", 19: "E"}
#: width letter -> the four stage widths (stage 5 reuses the fourth)
WIDTHS = {
    "A": (16, 32, 64, 128),
    "B": (32, 64, 128, 256),
    "C": (64, 128, 256, 512),
    "D": (128, 256, 512, 1024),
    "E": (256, 512, 1024, 1024),
}
MIN_SIZE = 32  # five 2x2 pools: 32 px -> 1 x 1


def vgg_cfg(depth: int, width: str = "C") -> List[Union[int, str]]:
    """torchvision's cfg for `depth` with each stage's convs at the stage width of `width` ("M" = a pool)."""
    if depth not in DEPTHS:
        raise ConfigError(f"arch=vgg: arch.params.depth={depth!r} must be one of {sorted(DEPTHS)}")
    if width not in WIDTHS:
        raise ConfigError(f"arch=vgg: arch.params.width={width!r} must be one of {sorted(WIDTHS)}")
    widths, stage, cfg = WIDTHS[width], 0, []
    for v in TORCHVISION_CFGS[DEPTHS[depth]]:
        if v == "M":
            cfg.append("M")
            stage += 1
        else:
            cfg.append(widths[min(stage, len(widths) - 1)])
    return cfg


def make_vgg_layers(cfg: Sequence[Union[int, str]], in_channels: int = 3, avg_pool: bool = False) -> nn.Sequential:
    """torchvision's make_layers(cfg, batch_norm=True) with `in_channels` inputs and, optionally, AvgPool2d pools."""
    layers: List[nn.Module] = []
    channels = int(in_channels)
    for v in cfg:
        if v == "M":
            layers.append(nn.AvgPool2d(kernel_size=2, stride=2) if avg_pool else nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(v), kernel_size=3, padding=1), nn.BatchNorm2d(int(v)),
                       nn.ReLU(inplace=True)]
            channels = int(v)
    return nn.Sequential(*layers)


class VGG(_SpherizableNet):
    """VGG-{11,13,16,19}-BN with stage widths A..E; 1-channel / AvgPool variant with `one_channel`."""

    def __init__(self, embedding_dim: int = 4096, depth: int = 11, width: str = "C", one_channel: bool = False,
                 in_channels: int = 3, image_size: int = 32, hidden: int = 4096, dropout: float = 0.5,
                 spherize: bool = False, spherization: Optional[Mapping] = None) -> None:
        super().__init__()
        self._set_dims("vgg", embedding_dim, spherize)
        self.depth, self.width, self.one_channel = int(depth), str(width), bool(one_channel)
        cfg = vgg_cfg(self.depth, self.width)
        if self.one_channel and int(in_channels) != 1:
            raise ConfigError(f"arch=vgg: arch.params.one_channel=true is the 1-channel (FashionMNIST) variant, but "
                              f"dataset.channels={in_channels}; set arch.params.one_channel=false")
        # smaller images (28-px MNIST family) are resized to 32 px in forward, as the paper's FashionMNIST pipeline
        self.resize_to = MIN_SIZE if int(image_size) < MIN_SIZE else None
        side = max(int(image_size), MIN_SIZE)
        for _ in range(cfg.count("M")):
            side //= 2
        last = [v for v in cfg if v != "M"][-1]
        self.features = make_vgg_layers(cfg, in_channels, avg_pool=self.one_channel)
        self.flat_dim = int(last) * side * side
        # torchvision's VGG init reaches only the features: the original rebuilds the classifier afterwards
        for m in self.features.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.classifier = nn.Sequential(
            nn.Linear(self.flat_dim, int(hidden)),
            nn.ReLU(inplace=True),
            nn.Dropout(float(dropout)),
            *embedding_tail(int(hidden), self.embedding_dim, self.spherize, spherization,
                            after=[nn.ReLU(inplace=True), nn.Dropout(float(dropout))]),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resize_to is not None and tuple(x.shape[-2:]) != (self.resize_to, self.resize_to):
            x = F.interpolate(x, size=(self.resize_to, self.resize_to), mode="bilinear", align_corners=False)
        return self.classifier(torch.flatten(self.features(x), 1))


__all__ = ["VGG", "vgg_cfg", "make_vgg_layers", "DEPTHS", "WIDTHS"]
