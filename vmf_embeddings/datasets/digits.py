"""sklearn's 8x8 digits as a 28x28 MNIST stand-in: the default dataset because it ships with
scikit-learn, so smoke tests and first runs need no download and load in well under a second."""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from .base import DataSplits, TensorSplit
from .splits import stratified_split


def _upscale(pixels: np.ndarray, image_size: int) -> torch.Tensor:
    """N x 64 values in 0..16 -> N x 1 x S x S uint8 in 0..255 (bilinear), the MNIST input contract."""
    x = torch.from_numpy(pixels.astype(np.float32)).reshape(-1, 1, 8, 8) / 16.0
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return (x * 255.0).round().clamp_(0, 255).to(torch.uint8)


def load_digits(
    dataset_path: str = "",
    seed: int = 1234,
    image_size: int = 28,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    augment: str = "none",
    affine_degrees: Union[float, Sequence[float]] = 40.0,
    affine_scale: Sequence[float] = (1.3, 1.3),
) -> DataSplits:
    """Seeded class-stratified train/val/test split (70/15/15 by default) of the 1,797 sklearn digits.

    `dataset_path` is accepted for the common loader signature and ignored (the data is bundled).
    `augment`, `affine_degrees`, `affine_scale`: the training batches' on-device augmentation, as
    `torchvision_sets.load_mnist`'s ("none" by default; "affine": RandomAffine(40, scale=(1.3, 1.3))).
    """
    from sklearn.datasets import load_digits as sk_load_digits

    from .torchvision_sets import _check_augment

    augment_params = _check_augment(augment, affine_degrees, affine_scale)

    bunch = sk_load_digits()
    images = _upscale(bunch.data, image_size)
    labels = np.asarray(bunch.target, dtype=np.int64)

    rest, test = stratified_split(labels, test_fraction, seed)
    # val_fraction is of the whole set, so rescale it to the remainder.
    keep, val = stratified_split(labels[rest], val_fraction / (1.0 - test_fraction), seed)
    train, val = rest[keep], rest[val]

    def split(index: np.ndarray) -> TensorSplit:
        idx = torch.from_numpy(index)
        return TensorSplit(images=images[idx].contiguous(), labels=torch.from_numpy(labels[index]))

    return DataSplits(
        name="digits",
        train=split(train),
        val=split(val),
        test=split(test),
        n_train_classes=10,
        open_set=False,
        channels=1,
        image_size=image_size,
        mean=(0.0,),
        std=(1.0,),
        train_augment=augment,
        train_augment_params=augment_params,
        class_names=[str(i) for i in range(10)],
    )


def load_digits_fewshot(
    dataset_path: str = "",
    seed: int = 1234,
    image_size: int = 28,
    train_classes: int = 5,
) -> DataSplits:
    """Class-disjoint few-shot digits: train on digits 0..train_classes-1, evaluate on the others.

    The held-out digits' images are split in half (stratified, seeded): validation episodes draw from one
    half, test episodes from the other. Ten classes leave no room for separate validation *classes*, so
    validation and test share their classes but never an image. Labels are re-indexed 0..K-1 per split;
    `extras["original_labels"]` keeps the digits.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = _upscale(bunch.data, image_size)
    labels = np.asarray(bunch.target, dtype=np.int64)
    if not 2 <= int(train_classes) <= 8:
        raise ValueError(f"dataset.loader.train_classes={train_classes} must lie in 2..8 (10 digits in all)")
    seen = labels < int(train_classes)
    train = np.flatnonzero(seen)
    held_out = np.flatnonzero(~seen)
    val_part, test_part = stratified_split(labels[held_out], 0.5, seed)
    val, test = held_out[val_part], held_out[test_part]

    def split(index: np.ndarray) -> TensorSplit:
        original = labels[index]
        _, reindexed = np.unique(original, return_inverse=True)
        return TensorSplit(images=images[torch.from_numpy(index)].contiguous(),
                           labels=torch.from_numpy(reindexed.astype(np.int64)))

    return DataSplits(
        name="digits_fewshot",
        train=split(train),
        val=split(val),
        test=split(test),
        n_train_classes=int(train_classes),
        open_set=True,
        channels=1,
        image_size=image_size,
        class_names=[str(i) for i in range(int(train_classes))],
        extras={"original_labels": {"train": labels[train], "val": labels[val], "test": labels[test]}},
    )
