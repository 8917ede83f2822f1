"""Containers every dataset loader returns, so the runner never branches on dataset names.

A loader is a plain function named in `conf/dataset/<name>.yaml` by `_target_`; it returns
`DataSplits`. Small datasets (digits, MNIST, CIFAR, synthetic) come back as `TensorSplit`s held
in memory as uint8 / float tensors and are augmented batch-wise on the device (see `augment.py`);
large image datasets (Cars196, CUB200, SOP, ImageNet-200, OmniArt) come back as `FileSplit`s
decoded by DataLoader workers with torchvision transforms, or, once `build.build_data` has decoded them into
a store (`dataset.store`, store.py), as `StoreSplit`s: uint8 rows augmented on the device like `TensorSplit`s.

Bad data is refused when the splits are built, as one line naming the file (`DatasetInvalidError`):
`check_split` (image/label counts, integer labels, labels inside the class range) runs on every split
of every `DataSplits` (in `__post_init__`) and, with file names, in the loaders on the raw arrays;
`files.check_image_files` checks that every image of a file-backed split exists and has a readable header.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

from vmf_embeddings.errors import UserError


class DatasetMissingError(UserError, FileNotFoundError):
    """Raised with a one-line message naming `dataset_path`, the expected files and the fix."""


class DatasetInvalidError(UserError, ValueError):
    """The dataset's files are there but hold bad data (counts that disagree, labels outside the class
    range, unreadable files); the one-line message names the file and the bad value.

    Raised inside a DataLoader worker, torch re-raises it in the main process as
    `DatasetInvalidError("Caught ... Original Traceback ...")`; the constructor takes the original
    one-line message back out of that, so the runner still prints one line.
    """

    def __init__(self, message: str = "") -> None:
        super().__init__(_original_message(str(message), type(self)))


def _original_message(message: str, cls: type) -> str:
    if "\n" not in message:
        return message
    prefix = f"{cls.__module__}.{cls.__qualname__}: "
    lines = [line for line in message.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith(prefix):
            return line[len(prefix):]
    return lines[-1] if lines else message


def missing_dataset(name: str, dataset_path: Union[str, Path], expected: str, prepare: str) -> DatasetMissingError:
    """Build the one-line error the runner prints when a dataset is not on disk."""
    return DatasetMissingError(
        f"dataset '{name}' not found under dataset.dataset_path={str(dataset_path)!r}: expected {expected}; "
        f"{prepare}"
    )


def _as_numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _is_integer_dtype(values: Any) -> bool:
    if isinstance(values, torch.Tensor):
        return not (values.dtype.is_floating_point or values.dtype.is_complex or values.dtype == torch.bool)
    dtype = np.asarray(values).dtype
    return dtype != np.bool_ and np.issubdtype(dtype, np.integer)


def _label_array(labels: Any, source: str) -> np.ndarray:
    """`labels` as a NumPy array, refused unless a 1-D array of integers."""
    if not _is_integer_dtype(labels):
        dtype = getattr(labels, "dtype", type(labels).__name__)
        raise DatasetInvalidError(f"{source}: labels must be integer class ids, got dtype {dtype}")
    array = _as_numpy(labels)
    if array.ndim != 1:
        raise DatasetInvalidError(f"{source}: labels must be a 1-D array of class ids, got shape {tuple(array.shape)}")
    return array


def check_labels(labels: Any, source: str, n_classes: Optional[int] = None, first_id: int = 0,
                 unseen_label: Optional[int] = None) -> None:
    """Refuse (one line naming `source`) labels that are not a 1-D integer array of ids
    `first_id..first_id+n_classes-1` (no upper bound when `n_classes` is None); `unseen_label`, when
    given, is allowed as well (OmniArt's test items of styles unseen in training)."""
    array = _label_array(labels, source)
    allowed = np.ones(array.shape, dtype=bool) if unseen_label is None else array != unseen_label
    low = allowed & (array < first_id)
    if low.any():
        i = int(np.argmax(low))
        what = "negative label(s)" if first_id == 0 else f"label(s) below {first_id}"
        raise DatasetInvalidError(f"{source}: {int(low.sum())} {what} (first {int(array[i])} at index {i}); "
                                  f"class ids start at {first_id}")
    if n_classes is not None:
        high = allowed & (array >= first_id + n_classes)
        if high.any():
            i = int(np.argmax(high))
            raise DatasetInvalidError(
                f"{source}: {int(high.sum())} label(s) outside the {n_classes} classes (first {int(array[i])} at "
                f"index {i}); class ids must be {first_id}..{first_id + n_classes - 1}"
            )


def check_split(split: "Split", n_classes: Optional[int], source: str, images_source: Optional[str] = None,
                unseen_label: Optional[int] = None, fix: str = "") -> None:
    """Refuse a split whose images (or paths, or targets) and labels differ in number, or whose labels
    fail `check_labels`, as one line naming `source` (the labels' file; `images_source` the images' file
    when they come from another one; `fix` is appended to a count mismatch). Called by the loaders on the
    raw arrays of each file, and by `DataSplits` on every split it holds, so every dataset gets the checks."""
    labels = split.labels
    n_labels = int(_label_array(labels, source).shape[0])
    if isinstance(split, TensorSplit):
        n_images = int(split.images.shape[0])
        if n_images != n_labels:
            if images_source is not None and images_source != source:
                raise DatasetInvalidError(
                    f"{images_source} holds {n_images} images but {source} holds {n_labels} labels; the files do "
                    "not belong together: replace both with the same release"
                )
            hint = f"; {fix}" if fix else ""
            raise DatasetInvalidError(f"{source}: {n_images} images but {n_labels} labels{hint}")
    else:
        if len(split.paths) != n_labels:
            raise DatasetInvalidError(f"{source}: {len(split.paths)} image paths but {n_labels} labels")
    targets = getattr(split, "targets", None)
    if targets is not None and int(targets.shape[0]) != n_labels:
        raise DatasetInvalidError(f"{source}: {int(targets.shape[0])} targets but {n_labels} labels")
    check_labels(labels, source, n_classes, unseen_label=unseen_label)


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
    """One split kept on disk as image files; `transform` maps a PIL image to a float C x H x W tensor.

    name: how decode errors name the split ("dataset 'cars196' train split"); `DataSplits` fills it in.
    """

    paths: Sequence[str]
    labels: torch.Tensor
    transform: Callable
    targets: Optional[torch.Tensor] = None
    name: str = ""

    def __len__(self) -> int:
        return int(self.labels.shape[0])


Split = Union[TensorSplit, FileSplit]


@dataclass
class DataSplits:
    """Train / validation / test splits plus the facts the runner and evaluation need.

    n_train_classes: width of the classifier (classes in `train`).
    open_set: True when val/test classes are disjoint from train classes (Cars196, CUB200, SOP):
        validation then uses Recall@1 instead of accuracy.
    mean/std: per-channel normalisation applied on the device after augmentation (TensorSplit and
        StoreSplit; FileSplit transforms normalise themselves).
    train_augment: name of the on-device augmentation for TensorSplit (and StoreSplit) training batches:
        "none" | "cifar" (reflect-pad-4 random crop, horizontal flip, 8x8 cutout) | "crop_flip" |
        "affine" (random rotation + zoom) | "resized_crop_flip" (the file-backed recipes on a store);
        `augment.DeviceAugment.KINDS`.
    train_augment_params: keyword arguments of `augment.DeviceAugment` for it (e.g. {"degrees": 40,
        "scale": (1.3, 1.3)} for "affine"); empty: the kind's defaults.
    unseen_label: label of val/test items whose class never occurs in training (OmniArt with
        `unseen_test_styles="keep"`: -1), exempt from the label-range check; None: no such items.

    Every split is checked when the object is built (`check_split`): labels are integer ids in
    0..n_train_classes-1 (train; val/test too unless open-set, where they only need to be >= 0) and
    as many as the images/paths/targets; anything else raises a one-line `DatasetInvalidError`.
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
    unseen_label: Optional[int] = None
    train_augment_params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split_name in ("train", "val", "test"):
            split = getattr(self, split_name)
            source = f"dataset '{self.name}' {split_name} split"
            if isinstance(split, FileSplit) and not split.name:
                split.name = source
            closed = split_name == "train" or not self.open_set
            check_split(split, int(self.n_train_classes) if closed else None, source,
                        unseen_label=None if split_name == "train" else self.unseen_label)
