"""Optimiser factories named by the `optimizer` config group (conf/optimizer/*.yaml)."""

from __future__ import annotations

from typing import Iterable

import torch


def sgd(params: Iterable, lr: float, momentum: float = 0.0, nesterov: bool = False,
        weight_decay: float = 0.0) -> torch.optim.SGD:
    """torch SGD with the vMF original's rule: Nesterov only when asked and 0 < momentum < 1
    (torch refuses Nesterov at momentum 0; the original silently dropped it)."""
    momentum = float(momentum)
    return torch.optim.SGD(params, lr=float(lr), momentum=momentum, nesterov=bool(nesterov) and 0.0 < momentum < 1.0,
                           weight_decay=float(weight_decay))
