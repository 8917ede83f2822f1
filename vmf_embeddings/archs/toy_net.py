"""The spherization paper's toy network (Kim & Kim, NeurIPS 2022): baseline Linear(2, 2) -> sigmoid (the method
head adds the output layer); spherized: Linear(2, 1, no bias) -> Spherization(n=1) = r (cos phi, sin phi), so the
bias-free output layer draws its decision lines through the origin. Input: the 1 x 1 x 2 points of `toy_points`."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from vmf_embeddings.layers.spherization import Spherization


class ToyNet(nn.Module):
    #: builds its own spherized tail (a bias-free first layer, no sigmoid)
    handles_spherize = True

    def __init__(self, embedding_dim: int = 2, in_features: int = 2, spherize: bool = False,
                 spherization: Optional[dict] = None) -> None:
        super().__init__()
        self.embedding_dim = int(embedding_dim)
        self.fc = nn.Linear(int(in_features), self.embedding_dim, bias=not spherize)
        self.tail = Spherization(self.embedding_dim, **(spherization or {})) if spherize else nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.fc(x.flatten(1)))
