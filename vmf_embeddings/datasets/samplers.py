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
and keeps its own share, so all ranks run the same number of steps. Episodic samplers: each rank takes
episodes `rank::world_size` of a sequence world_size times as long (a step averages world_size episodes).
Random pass: `batch_size` stays the global batch; each rank takes every world_size-th index of the
shuffled pass (DistributedSampler-style, padded to equal length), so the ranks' parts of step i are
exactly the one-process batch i and a run resumes under any number of processes.
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

    def _episodes(self) -> Iterator[torch.Tensor]:
        """`n_episodes` batches of `_episode` per epoch; with several ranks each keeps every world_size-th one."""
        g = self._next_epoch_generator()
        for i in range(self.n_episodes * self.world_size):
            batch = self._episode(g)
            if i % self.world_size == self.rank:
                yield batch


def class_table(labels: torch.Tensor):
    """(K x max_count table of dataset indices per class, -1 = padding; per-class counts), with no Python loop."""
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    order = torch.argsort(inverse, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(labels.numel()) - starts[inverse[order]]
    table = torch.full((counts.numel(), int(counts.max())), -1, dtype=torch.long)
    table[inverse[order], slot] = order
    return table, counts


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
        table, counts = class_table(labels)
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
        return self._episodes()



class RandomSampler(_SeededBatchSampler):
    """One seeded shuffled pass over the split per epoch, cut into `batch_size` batches."""

    def __init__(self, labels: torch.Tensor, batch_size: int, seed: int, drop_last: bool = False,
                 rank: int = 0, world_size: int = 1) -> None:
        super().__init__(seed, rank, world_size)
        self.n = int(torch.as_tensor(labels).reshape(-1).shape[0])
        if int(batch_size) % self.world_size:
            raise ValueError(f"sampler.batch_size={batch_size} is the global batch, shared by {self.world_size} "
                             f"processes: make it a multiple of {self.world_size}")
        self.batch_size = int(batch_size) // self.world_size  # this rank's part of every step
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
        table, counts = class_table(labels)
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
        return self._episodes()



class MagnetSampler(_SeededBatchSampler):
    """Magnet loss's neighbourhood batches (Rippel et al. 2016): M clusters x D examples, seed cluster first.

    The cluster index comes from the head (`attach(head)`: its `assignments`, `centroids`, `cluster_class` and
    `example_losses`). Per batch: a seed cluster drawn in proportion to the mean recorded loss of its members
    (uniformly until any loss is recorded; clusters without a recorded loss keep a small share, so they can
    be seeds again: the reference code let them drop out for good), its M-1 nearest centroids of other
    classes, and D members of each drawn without replacement (with replacement from a cluster smaller than
    D, where the reference implementations failed). `last_batch` holds the indices just yielded, so the head
    can record their losses. Reading the head's loss record costs one small device-to-host copy per batch.
    """

    def __init__(self, labels: torch.Tensor, m_clusters: int, d_per_cluster: int, n_episodes: int, seed: int,
                 rank: int = 0, world_size: int = 1) -> None:
        super().__init__(seed, rank, world_size)
        self.n = int(torch.as_tensor(labels).reshape(-1).shape[0])
        self.m, self.d, self.n_episodes = int(m_clusters), int(d_per_cluster), int(n_episodes)
        self.source = None
        self.last_batch = None

    def attach(self, source) -> None:
        self.source = source

    def __len__(self) -> int:
        return self.n_episodes

    def _batch(self, g: torch.Generator, assignments, centroids, cluster_class, cluster_loss) -> torch.Tensor:
        sizes = torch.bincount(assignments, minlength=centroids.shape[0])
        alive = sizes > 0
        weights = torch.where(alive, cluster_loss, torch.zeros_like(cluster_loss))
        if float(weights.sum()) <= 0:
            weights = alive.double()
        else:
            weights = weights + alive.double() * 1e-3 * float(weights[alive].mean())
        seed_cluster = int(torch.multinomial(weights, 1, generator=g))
        distance = (centroids - centroids[seed_cluster]).pow(2).sum(1)
        distance[(cluster_class == cluster_class[seed_cluster]) | ~alive] = float("inf")
        impostors = torch.argsort(distance)[: self.m - 1]
        if not torch.isfinite(distance[impostors]).all() or impostors.numel() < self.m - 1:
            raise ValueError(f"sampler=magnet needs {self.m - 1} non-empty clusters of other classes; lower "
                             f"method.params.m_clusters")
        blocks = []
        for cluster in [seed_cluster] + impostors.tolist():
            members = torch.nonzero(assignments == cluster).reshape(-1)
            if members.numel() >= self.d:
                pick = members[torch.randperm(members.numel(), generator=g)[: self.d]]
            else:
                pick = members[torch.randint(0, members.numel(), (self.d,), generator=g)]
            blocks.append(pick)
        return torch.cat(blocks)

    def __iter__(self) -> Iterator[torch.Tensor]:
        if self.source is None:
            raise ValueError("sampler=magnet draws from method=magnet's cluster index; use method=magnet")
        g = self._next_epoch_generator()
        for i in range(self.n_episodes * self.world_size):
            assignments = self.source.assignments.detach().cpu()
            centroids = self.source.centroids.detach().cpu().double()
            cluster_class = self.source.cluster_class.detach().cpu()
            losses = self.source.example_losses.detach().cpu().double()
            totals = torch.zeros(centroids.shape[0], dtype=torch.float64).index_add_(0, assignments, losses)
            counts = torch.bincount(assignments, minlength=centroids.shape[0]).double()
            batch = self._batch(g, assignments, centroids, cluster_class, totals / counts.clamp_min(1))
            if i % self.world_size == self.rank:
                self.last_batch = batch
                yield batch
