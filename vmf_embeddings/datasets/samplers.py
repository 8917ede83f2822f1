"""Seeded batch samplers yielding LongTensors of dataset indices.

Both work as `DataLoader(dataset, batch_sampler=...)` and directly (`for idx in sampler:
images[idx]`) for in-memory splits. Departures from the original code: each sampler owns a
`torch.Generator` (the original episodic sampler drew from global `np.random`, so any other
NumPy call changed the batches), and its `state_dict()` lets a resumed run replay the same batches.

Epoch semantics: every pass draws one seed from the sampler's generator when its first batch is
requested and builds that epoch's batches from it. A pass that is abandoned early (smoke runs) or
never started (DataLoader with workers calls `iter()` twice on its first epoch) therefore does not
shift later epochs, and a `state_dict()` saved after epoch e replays epoch e+1 exactly.

Distributed: with `world_size > 1` every rank builds the same global sequence from the shared seed
and keeps its own share (episodes `rank::world_size`; for the random pass, DistributedSampler-style
interleaving padded to equal length), so all ranks run the same number of steps.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch


class _SeededBatchSampler:
    """Generator, epoch counter and (de)serialisation shared by the samplers."""

    def __init__(self, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.seed = int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch = 0
        self.generator = torch.Generator().manual_seed(self.seed)

    def _next_epoch_generator(self) -> torch.Generator:
        epoch_seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        self.epoch += 1
        return torch.Generator().manual_seed(epoch_seed)

    def state_dict(self) -> dict:
        """Generator state + completed-epoch counter (put it in the checkpoint)."""
        return {"seed": self.seed, "epoch": self.epoch, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        self.generator.set_state(torch.as_tensor(state["generator"], dtype=torch.uint8).cpu())


class EpisodicSampler(_SeededBatchSampler):
    """`n_episodes` batches of `n_classes` classes x `n_samples` images, all without replacement.

    Each batch holds min(n_classes, K) distinct classes (uniform) and, per class, min(n_samples,
    class size) distinct images (uniform). Vectorised: the class-major index table is padded to the
    largest class; one random key per slot of the chosen rows (padding gets -1, so it ranks last) and
    a top-k pick the images, with no per-sample Python.
    """

    def __init__(self, labels: torch.Tensor, n_episodes: int, n_classes: int, n_samples: int, seed: int,
                 rank: int = 0, world_size: int = 1) -> None:
        super().__init__(seed, rank, world_size)
        labels = torch.as_tensor(labels).reshape(-1).cpu().long()
        if labels.numel() == 0:
            raise ValueError("EpisodicSampler needs at least one labelled example")
        _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        order = torch.argsort(inverse, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(labels.numel()) - starts[inverse[order]]
        table = torch.full((counts.numel(), int(counts.max())), -1, dtype=torch.long)
        table[inverse[order], slot] = order
        self.table = table  # K x max_count, dataset indices, -1 = padding
        self.n_episodes = int(n_episodes)
        self.n_way = min(int(n_classes), counts.numel())
        self.k_shot = min(int(n_samples), int(counts.max()))

    def __len__(self) -> int:
        return self.n_episodes

    def _episode(self, g: torch.Generator) -> torch.Tensor:
        rows = self.table[torch.randperm(self.table.shape[0], generator=g)[: self.n_way]]
        keys = torch.rand(rows.shape, generator=g).masked_fill_(rows < 0, -1.0)
        picked = rows.gather(1, keys.topk(self.k_shot, dim=1).indices)
        return picked[picked >= 0]  # classes smaller than k_shot contribute all their images

    def __iter__(self) -> Iterator[torch.Tensor]:
        g = self._next_epoch_generator()
        for i in range(self.n_episodes * self.world_size):
            batch = self._episode(g)
            if i % self.world_size == self.rank:
                yield batch


class RandomSampler(_SeededBatchSampler):
    """One seeded shuffled pass over the split per epoch, cut into `batch_size` batches."""

    def __init__(self, labels: torch.Tensor, batch_size: int, seed: int, drop_last: bool = False,
                 rank: int = 0, world_size: int = 1) -> None:
        super().__init__(seed, rank, world_size)
        self.n = int(torch.as_tensor(labels).reshape(-1).shape[0])
        self.batch_size = int(batch_size)
        self.drop_last = bool(drop_last)
        self.per_rank = math.ceil(self.n / self.world_size)

    def __len__(self) -> int:
        if self.drop_last:
            return self.per_rank // self.batch_size
        return math.ceil(self.per_rank / self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        g = self._next_epoch_generator()
        perm = torch.randperm(self.n, generator=g)
        if self.world_size > 1:  # pad by wrapping around so every rank gets per_rank indices
            perm = torch.cat([perm, perm[: self.per_rank * self.world_size - self.n]])[self.rank :: self.world_size]
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield perm[start : start + self.batch_size]


class FewShotSampler(_SeededBatchSampler):
    """`n_episodes` N-way K-shot Q-query episodes (Prototypical Networks, Snell et al. 2017).

    Each episode draws `n_way` distinct classes among those with at least K + Q images, and K + Q distinct
    images of each, all uniformly and without replacement, from the sampler's own generator. The batch
    is laid out supports first, then queries, each class-major:
    [class 0: K supports, class 1: K supports, ..., class 0: Q queries, class 1: Q queries, ...], so
    support and query go through one forward pass and a head splits them by position
    (`episode_layout`). Vectorised like EpisodicSampler: one random key per slot and a top-k.
    """

    def __init__(self, labels: torch.Tensor, n_way: int, k_shot: int, n_query: int, n_episodes: int, seed: int,
                 rank: int = 0, world_size: int = 1) -> None:
        super().__init__(seed, rank, world_size)
        labels = torch.as_tensor(labels).reshape(-1).cpu().long()
        self.n_way, self.k_shot, self.n_query = int(n_way), int(k_shot), int(n_query)
        self.n_episodes = int(n_episodes)
        if min(self.n_way, self.k_shot, self.n_query, self.n_episodes) < 1:
            raise ValueError(f"few-shot episodes need n_way, k_shot, n_query, n_episodes >= 1, got "
                             f"{self.n_way}, {self.k_shot}, {self.n_query}, {self.n_episodes}")
        _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        order = torch.argsort(inverse, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(labels.numel()) - starts[inverse[order]]
        table = torch.full((counts.numel(), int(counts.max())), -1, dtype=torch.long)
        table[inverse[order], slot] = order
        self.eligible = torch.nonzero(counts >= self.k_shot + self.n_query).reshape(-1)
        if self.eligible.numel() < self.n_way:
            raise ValueError(
                f"{self.n_way}-way {self.k_shot}-shot {self.n_query}-query episodes need {self.n_way} classes with "
                f">= {self.k_shot + self.n_query} images; the split has {self.eligible.numel()}"
            )
        self.table = table[self.eligible]

    @property
    def episode_layout(self) -> tuple:
        """(n_way, k_shot, n_query) of every batch."""
        return self.n_way, self.k_shot, self.n_query

    def __len__(self) -> int:
        return self.n_episodes

    def _episode(self, g: torch.Generator) -> torch.Tensor:
        rows = self.table[torch.randperm(self.table.shape[0], generator=g)[: self.n_way]]
        keys = torch.rand(rows.shape, generator=g).masked_fill_(rows < 0, -1.0)
        picked = rows.gather(1, keys.topk(self.k_shot + self.n_query, dim=1).indices)  # every pick is a real image
        return torch.cat([picked[:, : self.k_shot].reshape(-1), picked[:, self.k_shot :].reshape(-1)])

    def __iter__(self) -> Iterator[torch.Tensor]:
        g = self._next_epoch_generator()
        for i in range(self.n_episodes * self.world_size):
            batch = self._episode(g)
            if i % self.world_size == self.rank:
                yield batch
