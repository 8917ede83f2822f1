"""Conv-4 of Prototypical Networks (Snell et al. 2017; Vinyals et al. 2016): four blocks of
Conv3x3(64, padding 1) -> BatchNorm -> ReLU -> MaxPool2x2, flattened. No FC head, no normalisation.
1 x 28 x 28 -> 64-d (111,936 parameters); 3 x 84 x 84 -> 1600-d (113,088)."""

from __future__ import annotations

import torch
from torch import nn

from vmf_embeddings.errors import ConfigError


def conv4_dim(image_size: int, width: int = 64, blocks: int = 4) -> int:
    """Flattened output size: each block halves the side (floor), e.g. 28 -> 1, 84 -> 5."""
    side = int(image_size)
    for _ in range(int(blocks)):
        side //= 2
    return int(width) * side * side


class Conv4(nn.Module):
    def __init__(self, embedding_dim: int, in_channels: int = 1, image_size: int = 28, width: int = 64,
                 blocks: int = 4) -> None:
        super().__init__()
        expected = conv4_dim(image_size, width, blocks)
        if int(embedding_dim) != expected or expected == 0:
            raise ConfigError(
                f"arch=conv4 gives {expected}-d embeddings on {image_size}-px images (width {width}, {blocks} blocks); "
                f"arch.params.embedding_dim={embedding_dim} must equal that (leave it at its default)"
            )
        self.embedding_dim = expected
        layers, channels = [], int(in_channels)
        for _ in range(int(blocks)):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            channels = width
        self.features = nn.Sequential(*layers, nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)
