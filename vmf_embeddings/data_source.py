"""Batches on the device from any split: in-memory tensors are indexed and augmented on the device;
file-backed splits are decoded by DataLoader workers. The training loop never sees the difference."""

from __future__ import annotations

from typing import Iterable, Iterator, Optional, Tuple

import torch
from torch.utils.data import DataLoader

from vmf_embeddings.datasets.augment import DeviceAugment
from vmf_embeddings.datasets.base import DataSplits, Split, TensorSplit
from vmf_embeddings.datasets.files import FileSplitDataset

Batch = Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]


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
        if isinstance(split, TensorSplit):
            # One copy on the device for the whole run: no per-batch host transfer.
            self.images = split.images.to(device)
            self.labels = split.labels.to(device)
            self.targets = split.targets.to(device) if split.targets is not None else None
            self.augment = DeviceAugment(augment, data.mean, data.std, **data.train_augment_params)

    def __len__(self) -> int:
        return len(self.split)

    def _from_memory(self, indices: torch.Tensor) -> Batch:
        indices = indices.to(self.device, non_blocking=True)
        x = self.augment(self.images[indices], generator=self.generator)
        targets = self.targets[indices] if self.targets is not None else None
        return x.contiguous(memory_format=self.memory_format), self.labels[indices], targets

    def batches(self, index_batches: Iterable[torch.Tensor]) -> Iterator[Batch]:
        """Training / evaluation batches for the given index batches (a sampler or `sequential`)."""
        if isinstance(self.split, TensorSplit):
            for indices in index_batches:
                yield self._from_memory(torch.as_tensor(indices))
            return
        has_targets = self.split.targets is not None
        loader = DataLoader(
            FileSplitDataset(self.split, with_targets=has_targets),
            batch_sampler=index_batches,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        for batch in loader:
            x = batch[0].to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
            y = batch[1].to(self.device, non_blocking=True)
            yield x, y, (batch[2].to(self.device, non_blocking=True).float() if has_targets else None)

    def sequential(self, batch_size: int) -> list:
        """Index batches covering the split in order (evaluation and extraction)."""
        return list(torch.arange(len(self.split)).split(batch_size))

    def generator_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_generator_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)
