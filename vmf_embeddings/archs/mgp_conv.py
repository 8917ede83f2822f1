"""The small CNN of Metric-Guided Prototype Learning's MNIST toy experiment (Garnot & Landrieu, BMVC 2021;
github.com/VSainteuf/metric-guided-prototypes-pytorch, `mgp.ipynb`), whose 2-d embeddings the paper plots
(Figure 1) and tabulates: three blocks of Conv3x3(padding 1) -> BatchNorm -> ReLU with 1 -> 16 -> 16 -> 32
channels, a 2x2 max-pool after the first two, a global spatial max-pool, then Linear(32, 64) ->
Linear(64, embedding_dim) with no nonlinearity between them. No normalisation of the output.
9,490 parameters at embedding_dim 2 on 1-channel input; any image size (the global pool removes it).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class MGPConv(nn.Module):

    #: the output is a linear layer's pre-activation: arch.spherize=true may append the spherization layer
    preactivation_output = True
    def __init__(self, embedding_dim: int = 2, in_channels: int = 1, widths: Sequence[int] = (16, 16, 32),
                 hidden: int = 64) -> None:
        super().__init__()
        self.embedding_dim = int(embedding_dim)
        layers, channels = [], int(in_channels)
        for i, width in enumerate(widths):
            layers += [nn.Conv2d(channels, int(width), 3, padding=1), nn.BatchNorm2d(int(width)), nn.ReLU(inplace=True)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            channels = int(width)
        self.features = nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(channels, int(hidden)), nn.Linear(int(hidden), self.embedding_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
