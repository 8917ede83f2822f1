"""The official placement rule, for faithful reproduction (github.com/psmmettes/hpn `prototypes.py`).

Projected gradient descent on L_HP = mean_i max_{j != i} cos(p_i, p_j): Gaussian init seeded like the
official script (torch.manual_seed(seed); torch.randn(K, D)), lr 0.1, 10,000 full-batch steps, rows
renormalised after every step.

The official loop re-creates its SGD(momentum=0.9) object after each projection, so the momentum
buffer never survives a step: the update is plain projected GD. We implement that directly (see
docs/departures.md); `momentum` is accepted for the record and has no effect. Arithmetic is float64 NumPy
(the official code ran float32 torch); the reference values in tests/prototypes/test_placement.py were
measured the same way.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from vmf_embeddings.prototypes.geometry import normalize_rows, single_threaded
from vmf_embeddings.prototypes.privileged import RankingPrior


def official_init(n_classes: int, dim: int, seed: int) -> np.ndarray:
    """The official script's starting point: torch's seeded standard normal, rows normalised."""
    generator = torch.Generator().manual_seed(int(seed))
    return normalize_rows(torch.randn(n_classes, dim, generator=generator).double().numpy())


def separation_grad(prototypes: np.ndarray) -> np.ndarray:
    """Gradient of L_HP: each prototype receives (1/K) x (its nearest neighbour + every prototype whose
    nearest neighbour it is). Ties are broken by the lowest index, as torch's max."""
    n_classes = prototypes.shape[0]
    cos = prototypes @ prototypes.T
    np.fill_diagonal(cos, -np.inf)
    nearest = cos.argmax(axis=1)
    grad = prototypes[nearest].copy()
    np.add.at(grad, nearest, prototypes)
    return grad / n_classes


@single_threaded
def paper_rule(n_classes: int, dim: int, seed: int = 300, learning_rate: float = 0.1, steps: int = 10000,
               momentum: float = 0.9, prior: Optional[RankingPrior] = None) -> np.ndarray:
    """Prototypes from the official rule (the paper's text says 1,000 steps; the script runs 10,000).

    With `prior`, the paper's L_PI is added with weight prior.weight (the code's path is broken, see
    `privileged`). `momentum` is inert, exactly as in the official loop.
    """
    del momentum  # re-created optimiser each step: the buffer never survives (documented above)
    p = official_init(n_classes, dim, seed)
    if n_classes < 2:
        return p
    for _ in range(int(steps)):
        grad = separation_grad(p)
        if prior is not None:
            grad = grad + prior.loss_and_grad(p)[1]
        p = normalize_rows(p - learning_rate * grad)
    return p
