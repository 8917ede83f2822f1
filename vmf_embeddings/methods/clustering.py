"""Class means and seeded k-means in torch (on the embeddings' device): ProtoNet / DeepNCM prototypes, the cluster
index of Magnet loss and the representative initialisation of RepMet."""

from __future__ import annotations

from typing import Tuple

import torch


def class_means(x: torch.Tensor, labels: torch.Tensor, n_classes: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(C x D mean of each class's rows, zero for an absent class; C per-class counts), with no Python loop."""
    sums = torch.zeros(n_classes, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, labels, x)
    counts = torch.bincount(labels, minlength=n_classes).to(x.dtype)
    return sums / counts.clamp_min(1)[:, None], counts


def kmeans(x: torch.Tensor, k: int, iterations: int = 20, generator: torch.Generator = None) -> torch.Tensor:
    """k x D centres of `x` (N x D): k-means++ seeding, then Lloyd iterations (empty clusters keep their centre).

    With N <= k every point is a centre (padded by repeating points), as the reference code's fallback.
    """
    n = x.shape[0]
    if n == 0:
        raise ValueError("k-means of an empty set")
    if n <= k:
        return x[torch.arange(k, device=x.device) % n].clone()
    first = torch.randint(0, n, (1,), generator=generator, device="cpu").to(x.device)
    centres = [x[first[0]]]
    closest = (x - centres[0]).pow(2).sum(1)
    for _ in range(1, k):
        weights = closest.clamp_min(0).cpu().double()
        if float(weights.sum()) <= 0:
            pick = int(torch.randint(0, n, (1,), generator=generator))
        else:
            pick = int(torch.multinomial(weights, 1, generator=generator))
        centres.append(x[pick])
        closest = torch.minimum(closest, (x - x[pick]).pow(2).sum(1))
    c = torch.stack(centres)
    for _ in range(int(iterations)):
        assign = torch.cdist(x, c).argmin(1)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        moved = sums / counts.clamp_min(1)[:, None]
        c = torch.where(counts[:, None] > 0, moved, c)
    return c


def per_class_kmeans(x: torch.Tensor, labels: torch.Tensor, n_classes: int, k: int, seed: int = 0,
                     iterations: int = 20) -> Tuple[torch.Tensor, torch.Tensor]:
    """(centres C*k x D with row c*k + j = class c's j-th centre, assignment N: the global id of each point's
    nearest own-class centre). Classes without points keep zero centres."""
    generator = torch.Generator().manual_seed(int(seed))
    centres = torch.zeros(n_classes * k, x.shape[1], dtype=x.dtype, device=x.device)
    assignment = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    for c in range(n_classes):
        members = torch.nonzero(labels == c).reshape(-1)
        if members.numel() == 0:
            continue
        own = kmeans(x[members], k, iterations, generator)
        centres[c * k:(c + 1) * k] = own
        assignment[members] = c * k + torch.cdist(x[members], own).argmin(1)
    return centres, assignment
