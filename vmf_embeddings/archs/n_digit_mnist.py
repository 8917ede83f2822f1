"""The small LeNet-style network of Hedged Instance Embeddings, used for MNIST-family data."""

from __future__ import annotations

import torch
from torch import nn


class NDigitMNIST(nn.Module):
    """Conv5x5(6)-BN-ReLU-Pool, Conv5x5(16)-BN-ReLU-Pool, Linear(120)-BN-ReLU, Linear(embedding_dim).

    `n_digits` side-by-side digits widen the input (and the flattened features) n-fold, as the original.
    """

    #: the output is a linear layer's pre-activation: arch.spherize=true may append the spherization layer
    preactivation_output = True

    def __init__(
        self, embedding_dim: int = 3, n_digits: int = 1, in_channels: int = 1, image_size: int = 28
    ) -> None:
        super().__init__()
        self.embedding_dim = int(embedding_dim)
        side = image_size // 4
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=2),
            nn.BatchNorm2d(6),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5, padding=2),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Sequential(
            nn.Linear(16 * side * side * n_digits, 120),
            nn.BatchNorm1d(120),
            nn.ReLU(inplace=True),
            nn.Linear(120, self.embedding_dim),
        )
        # The original initialises the linear layers Xavier-uniform with zero bias.
        for module in self.head:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
