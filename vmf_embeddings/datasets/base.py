"""Containers every dataset loader returns, so the runner never branches on dataset names.

A loader is a plain function named in `conf/dataset/<name>.yaml` by `_target_`; it returns
`DataSplits`. Small datasets (digits, MNIST, CIFAR, synthetic) come back as `TensorSplit`s held
in memory as uint8 / float tensors and are augmented batch-wise on the device (see `augment.py`);
large image datasets (Cars196, CUB200, SOP, ImageNet-200, OmniArt) come back as `FileSplit`s
decoded by DataLoader workers with torchvision transforms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch

from vmf_embeddings.errors import UserError


class DatasetMissingError(UserError, FileNotFoundError):
    """Raised with a one-line message naming `dataset_path`, the expected files and the fix."""


def missing_dataset(name: str, dataset_path: Union[str, Path], expected: str, prepare: str) -> DatasetMissingError:
    """Build the one-line error the runner prints when a dataset is not on disk."""
    return DatasetMissingError(
        f"dataset '{name}' not found under dataset.dataset_path={str(dataset_path)!r}: expected {expected}; "
        f"{prepare}"
    )


@dataclass
class TensorSplit:
    """One split held in memory.

    images: N x C x H x W, uint8 (0..255) for image data or float32 for already-scaled data.
    labels: N int64 class ids, 0..K-1 within this split's label space.
    targets: optional N float32 regression targets (e.g. OmniArt year); None for classification.
    """

    images: torch.Tensor
    labels: torch.Tensor
    targets: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class FileSplit:
    """One split kept on disk as image files; `transform` maps a PIL image to a float C x H x W tensor."""

    paths: Sequence[str]
    labels: torch.Tensor
    transform: Callable
    targets: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])


Split = Union[TensorSplit, FileSplit]


@dataclass
class DataSplits:
    """Train / validation / test splits plus the facts the runner and evaluation need.

    n_train_classes: width of the classifier (classes in `train`).
    open_set: True when val/test classes are disjoint from train classes (Cars196, CUB200, SOP):
        validation then uses Recall@1 instead of accuracy.
    mean/std: per-channel normalisation applied on the device after augmentation (TensorSplit only;
        FileSplit transforms normalise themselves).
    train_augment: name of the on-device augmentation for TensorSplit training batches:
        "none" | "cifar" (reflect-pad-4 random crop, horizontal flip, 8x8 cutout).
    """

    name: str
    train: Split
    val: Split
    test: Split
    n_train_classes: int
    open_set: bool = False
    channels: int = 1
    image_size: int = 28
    mean: Sequence[float] = (0.0,)
    std: Sequence[float] = (1.0,)
    train_augment: str = "none"
    class_names: Optional[Sequence[str]] = None
    extras: dict = field(default_factory=dict)
