"""The MNIST networks of the spherization paper (Kim & Kim, "Spherization Layer: Representation Using Only Angles",
NeurIPS 2022; github.com/GIST-IRR/spherization_layer, `models/basic.py`), as embedding backbones.

Each network ends in the paper's penultimate layer; its output is the embedding the method head (the paper's output
layer, e.g. `unnormalized_sce`'s bias-free Linear) reads:

- `SimpleFNN` (arch=simple_fnn): flatten -> Linear(784, 500) -> ReLU -> Linear(500, 300).
- `LeNet5` (arch=lenet5): Conv5x5(1->6, pad 2) -> ReLU -> MaxPool2 -> Conv5x5(6->16) -> ReLU -> MaxPool2 -> flatten
  (400) -> Linear(400, 120) -> ReLU -> Linear(120, 84). No BatchNorm (unlike arch=n_digit_mnist).
- `VisCNN` (arch=vis_cnn): 6 x (Conv3x3 -> BN -> ReLU), widths 32, 32, pool, 64, 64, pool, 128, 128 -> flatten (6272)
  -> Linear(6272, 256) -> ReLU -> Linear(256, 2 or 3).

The baseline applies a ReLU after the embedding layer (the paper's "... -> 300 -> ReLU -> 10"), so the head sees a
post-activation. `spherize=True` (arch.spherize=true) is the paper's spherized network: that ReLU is dropped and the
embedding layer's pre-activation goes through `Spherization(embedding_dim, **spherization)`, so the head sees
embedding_dim + 1 dimensions on the radius-r sphere (build_model gives the head embedding_dim + 1 inputs). These
backbones build that tail themselves (`handles_spherize = True`).

Departures: the paper's output layer has a bias in the baseline; here it is the method head (bias-free for
`unnormalized_sce`). The image sizes are read from the dataset (28 px gives the paper's 784 / 400 / 6272 inputs);
other sizes change only the flattened width. The paper's visualisation run uses s = r = 1
(`spherization.scaling=1 spherization.radius=1`); the global default is the retention runs' s = r = 5.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from vmf_embeddings.errors import ConfigError
from vmf_embeddings.layers.spherization import Spherization


def spherization_options(spherization: Optional[Mapping[str, Any]]) -> dict:
    """The `spherization:` config node (a DictConfig from Hydra, or a dict) as plain keyword arguments."""
    if spherization is None:
        return {}
    if isinstance(spherization, DictConfig):
        return dict(OmegaConf.to_container(spherization, resolve=True))
    return dict(spherization)


def embedding_tail(in_features: int, embedding_dim: int, spherize: bool, spherization: Optional[Mapping],
                   after: Optional[List[nn.Module]] = None) -> List[nn.Module]:
    """Linear(in_features, embedding_dim), then either the baseline's activation modules `after` (default: ReLU) or,
    spherized, `Spherization(embedding_dim)` straight on the pre-activation."""
    layers: List[nn.Module] = [nn.Linear(int(in_features), int(embedding_dim))]
    if spherize:
        layers.append(Spherization(int(embedding_dim), **spherization_options(spherization)))
    else:
        layers.extend(after if after is not None else [nn.ReLU(inplace=True)])
    return layers


def _check_dim(arch: str, embedding_dim: int) -> int:
    if isinstance(embedding_dim, bool) or int(embedding_dim) != embedding_dim or int(embedding_dim) < 1:
        raise ConfigError(f"arch={arch}: arch.params.embedding_dim={embedding_dim!r} must be an integer >= 1")
    return int(embedding_dim)


class _SpherizableNet(nn.Module):
    """Shared attributes: `embedding_dim` (before spherization), `spherize`, `output_dim` (what the head sees)."""

    #: builds its own spherized tail (the baseline's ReLU after the embedding must go, not just be followed)
    handles_spherize = True

    def _set_dims(self, arch: str, embedding_dim: int, spherize: bool) -> None:
        self.embedding_dim = _check_dim(arch, embedding_dim)
        self.spherize = bool(spherize)
        self.output_dim = self.embedding_dim + int(self.spherize)


class SimpleFNN(_SpherizableNet):
    """784 -> 500 ReLU -> 300 [ReLU | Spherization(300)]: the paper's MNIST MLP (SimpleFNN / sph_fnn)."""

    def __init__(self, embedding_dim: int = 300, hidden: int = 500, in_channels: int = 1, image_size: int = 28,
                 spherize: bool = False, spherization: Optional[Mapping] = None) -> None:
        super().__init__()
        self._set_dims("simple_fnn", embedding_dim, spherize)
        self.in_features = int(in_channels) * int(image_size) * int(image_size)
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(self.in_features, int(hidden)),
            nn.ReLU(inplace=True),
            *embedding_tail(int(hidden), self.embedding_dim, self.spherize, spherization),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1:].numel() != self.in_features:
            raise ValueError(f"SimpleFNN expects {self.in_features} values per image (dataset.channels x "
                             f"dataset.image_size^2), got shape {tuple(x.shape)}")
        return self.net(x)


def lenet5_side(image_size: int) -> int:
    """Side of LeNet-5's last feature map: conv(pad 2) keeps the size, pool halves, conv(no pad) -4, pool halves."""
    return (int(image_size) // 2 - 4) // 2


class LeNet5(_SpherizableNet):
    """The paper's LeNet-5 (ReLU, max-pool, no BatchNorm): ... 400 -> 120 ReLU -> 84 [ReLU | Spherization(84)]."""

    def __init__(self, embedding_dim: int = 84, in_channels: int = 1, image_size: int = 28,
                 spherize: bool = False, spherization: Optional[Mapping] = None) -> None:
        super().__init__()
        self._set_dims("lenet5", embedding_dim, spherize)
        side = lenet5_side(image_size)
        if side < 1:
            raise ConfigError(f"arch=lenet5 needs images of at least 12 px (dataset.image_size={image_size})")
        self.features = nn.Sequential(
            nn.Conv2d(int(in_channels), 6, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Sequential(
            nn.Linear(16 * side * side, 120),
            nn.ReLU(inplace=True),
            *embedding_tail(120, self.embedding_dim, self.spherize, spherization),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class VisCNN(_SpherizableNet):
    """The paper's MNIST visualisation CNN (simple_cnn_{2d,3d} / sph_cnn_3d): 6 Conv3x3-BN-ReLU
    (32, 32, pool, 64, 64, pool, 128, 128) -> 6272 -> 256 ReLU -> embedding_dim [ReLU | Spherization]."""

    def __init__(self, embedding_dim: int = 2, in_channels: int = 1, image_size: int = 28, hidden: int = 256,
                 spherize: bool = False, spherization: Optional[Mapping] = None) -> None:
        super().__init__()
        self._set_dims("vis_cnn", embedding_dim, spherize)
        side = int(image_size) // 4
        if side < 1:
            raise ConfigError(f"arch=vis_cnn needs images of at least 4 px (dataset.image_size={image_size})")
        layers: List[nn.Module] = []
        channels = int(in_channels)
        for v in (32, 32, "M", 64, 64, "M", 128, 128):
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            layers += [nn.Conv2d(channels, int(v), kernel_size=3, padding=1), nn.BatchNorm2d(int(v)),
                       nn.ReLU(inplace=True)]
            channels = int(v)
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Sequential(
            nn.Linear(128 * side * side, int(hidden)),
            nn.ReLU(inplace=True),
            *embedding_tail(int(hidden), self.embedding_dim, self.spherize, spherization),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


__all__ = ["SimpleFNN", "LeNet5", "VisCNN", "embedding_tail", "spherization_options", "lenet5_side"]
