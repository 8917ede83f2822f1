"""Batches on the device from any split: in-memory tensors are indexed and augmented on the device;
decoded-image stores (`StoreSplit`, datasets/store.py) are read as uint8 batches and augmented on the device the
same way; other file-backed splits are decoded by DataLoader workers. The training loop never sees the difference.

A split that needs a DataLoader (a store's rows, or the image files) gets one per `BatchSource`, built on first
use, whose workers persist for the whole run (`persistent_workers=True`): its batch sampler is an `_EpochFeed`
that each pass (an epoch, a validation or embedding pass) hands the pass's index batches to, so the workers are
started once instead of once per pass. Workers decoding files get a seed per batch (`files.SeededBatch`, from one
draw of the global torch RNG per pass, as a fresh DataLoader made before), so their random transforms do not
depend on which worker serves a batch, and a resumed run draws what the uninterrupted one drew.

Store batches are augmented on an accelerator in the main process, from the source's generator. On a CPU
device the CPU is the device, and its parallel hands are the DataLoader workers: there each batch is augmented
(the same `DeviceAugment`) where it is read, from a generator seeded per batch from one draw of the source's
generator per pass, so the batches are the same with any number of workers, and `last.pt` (which carries that
generator) resumes them.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Optional, Tuple

import torch
from torch.utils.data import DataLoader

from vmf_embeddings.datasets.augment import DeviceAugment
from vmf_embeddings.datasets.base import DataSplits, Split, TensorSplit
from vmf_embeddings.datasets.files import FileSplitDataset, SeededBatch
from vmf_embeddings.datasets.store import StoreBatches, StoreSplit, collate_batched

Batch = Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]


class _EpochFeed:
    """Batch sampler of a persistent DataLoader: each pass over the loader iterates the index batches given to
    the latest `feed` (once), wrapped with their seeds when a base seed is given."""

    def __init__(self) -> None:
        self._batches: Optional[Iterable] = None
        self._seed: Optional[int] = None

    def feed(self, index_batches: Iterable, seed: Optional[int] = None) -> None:
        self._batches, self._seed = index_batches, seed

    def __iter__(self) -> Iterator:
        batches, seed = self._batches, self._seed
        self._batches = None
        if batches is None:
            return
        for b, indices in enumerate(batches):
            yield indices if seed is None else SeededBatch(indices, (seed + b) % (1 << 63))

    def __len__(self) -> int:
        return len(self._batches) if hasattr(self._batches, "__len__") else 0


class BatchSource:
    """Yields (images, labels, targets|None) on `device` for the index batches of a sampler."""

    def __init__(
        self,
        split: Split,
        data: DataSplits,
        device: torch.device,
        augment: str = "none",
        num_workers: int = 0,
        channels_last: bool = False,
        seed: int = 0,
    ) -> None:
        self.split = split
        self.device = device
        self.num_workers = num_workers
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        self._loader: Optional[DataLoader] = None
        self._feed = _EpochFeed()
        self._pass = 0
        if isinstance(split, TensorSplit):
            # One copy on the device for the whole run: no per-batch host transfer.
            self.images = split.images.to(device)
            self.labels = split.labels.to(device)
            self.targets = split.targets.to(device) if split.targets is not None else None
            self.augment = DeviceAugment(augment, data.mean, data.std, **data.train_augment_params)
        elif isinstance(split, StoreSplit):
            # uint8 rows at the stored resolution; crops, flips, jitter and normalisation on the device
            self.augment = DeviceAugment(augment, data.mean, data.std, **data.train_augment_params)

    def __len__(self) -> int:
        return len(self.split)

    def _from_memory(self, indices: torch.Tensor) -> Batch:
        indices = indices.to(self.device, non_blocking=True)
        x = self.augment(self.images[indices], generator=self.generator)
        targets = self.targets[indices] if self.targets is not None else None
        return x.contiguous(memory_format=self.memory_format), self.labels[indices], targets

    def _augments_in_loader(self) -> bool:
        """Store batches augmented where they are read (CPU device), not on the device afterwards."""
        return isinstance(self.split, StoreSplit) and self.device.type == "cpu"

    def _data_loader(self) -> DataLoader:
        """This source's DataLoader (built once; its workers persist across passes)."""
        if self._loader is None:
            has_targets = self.split.targets is not None
            store = isinstance(self.split, StoreSplit)
            if store:
                dataset = StoreBatches(self.split, has_targets, self.augment if self._augments_in_loader() else None)
            else:
                dataset = FileSplitDataset(self.split, has_targets)
            workers = int(self.num_workers)
            self._loader = DataLoader(
                dataset,
                batch_sampler=self._feed,
                num_workers=workers,
                collate_fn=collate_batched if store else None,
                pin_memory=self.device.type == "cuda",
                persistent_workers=workers > 0,
                # the loader's own seed draw must not move the global RNG (a resumed run starts its workers later)
                generator=torch.Generator().manual_seed(0),
            )
        return self._loader

    def batches(self, index_batches: Iterable[torch.Tensor]) -> Iterator[Batch]:
        """Training / evaluation batches for the given index batches (a sampler or `sequential`).

        One pass at a time per source: starting a pass ends an unfinished earlier one (its generator then
        raises if resumed).
        """
        if isinstance(self.split, TensorSplit):
            for indices in index_batches:
                yield self._from_memory(torch.as_tensor(indices))
            return
        store = isinstance(self.split, StoreSplit)
        in_loader = self._augments_in_loader()
        if in_loader:  # per-batch seeds from the source's (checkpointed) generator
            seed = int(torch.randint(0, 1 << 62, (), generator=self.generator))
        elif not store:  # one draw per pass, as the DataLoader this replaces drew its base seed
            seed = int(torch.empty((), dtype=torch.int64).random_().item())
            seed = seed if self.num_workers > 0 else None
        else:
            seed = None
        loader = self._data_loader()
        self._pass += 1
        this_pass = self._pass
        self._feed.feed(index_batches, seed)
        has_targets = self.split.targets is not None
        for batch in loader:
            if self._pass != this_pass:
                raise RuntimeError("BatchSource.batches: a later pass over this source started before this one "
                                   "finished; use one BatchSource per concurrent pass")
            x = batch[0].to(self.device, non_blocking=True)
            if store and not in_loader:
                x = self.augment(x, generator=self.generator)
            x = x.contiguous(memory_format=self.memory_format)
            y = batch[1].to(self.device, non_blocking=True)
            yield x, y, (batch[2].to(self.device, non_blocking=True).float() if has_targets else None)

    def sequential(self, batch_size: int, rows: Optional[range] = None) -> list:
        """Index batches covering the split (or `rows` of it) in order (evaluation and extraction)."""
        rows = range(len(self.split)) if rows is None else rows
        return list(torch.arange(rows.start, rows.stop).split(batch_size))

    def generator_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_generator_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)
