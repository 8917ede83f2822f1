"""A torch `Dataset` view of a `FileSplit`, so DataLoader workers decode images in parallel.

The batch samplers yield LongTensors of indices; this class accepts them whole through
`__getitems__` (torch >= 2.2 calls it with the index list of a batch) as well as one at a time.
"""

from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch
from PIL import Image
from torch.utils.data import Dataset

from .base import FileSplit


def load_image(path: str) -> Image.Image:
    """Open and fully decode an image as RGB, closing the file handle immediately."""
    with Image.open(path) as img:
        return img.convert("RGB")


class FileSplitDataset(Dataset):
    """Items are (image C x H x W float32, label int64) or, with `with_targets`, plus the float target."""

    def __init__(self, split: FileSplit, with_targets: bool = False) -> None:
        self.split = split
        self.with_targets = with_targets and split.targets is not None

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: Union[int, torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        i = int(index)
        image = self.split.transform(load_image(self.split.paths[i]))
        item = (image, self.split.labels[i])
        if self.with_targets:
            item = item + (self.split.targets[i],)
        return item

    def __getitems__(self, indices: Sequence[int]) -> list:
        return [self[i] for i in indices]
