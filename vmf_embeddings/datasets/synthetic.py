"""Synthetic image-like clusters for tests and smoke runs: no files, built in milliseconds.

Each class is a smooth random 1 x 28 x 28 pattern (a 7 x 7 grid of random intensities, bilinearly
upscaled); an image is its class pattern plus isotropic Gaussian pixel noise, clipped to 0..255 uint8.
After flattening and L2-normalising, every class is a concentrated cluster around its own mean
direction — vMF-like — and the images fit the MNIST architecture unchanged.

`open_set=True` adds `n_heldout_classes` further patterns for validation and as many for test
(class-disjoint, labels re-indexed 0..K-1 per split), exercising the Recall@1 path of the runner.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import DataSplits, TensorSplit


def _patterns(n: int, image_size: int, generator: torch.Generator) -> torch.Tensor:
    grid = torch.rand(n, 1, 7, 7, generator=generator)
    return F.interpolate(grid, size=(image_size, image_size), mode="bilinear", align_corners=False)


def _sample(patterns: torch.Tensor, n_per_class: int, noise: float, generator: torch.Generator) -> TensorSplit:
    k = patterns.shape[0]
    labels = torch.arange(k).repeat_interleave(n_per_class)
    x = patterns[labels] + noise * torch.randn(labels.shape[0], *patterns.shape[1:], generator=generator)
    images = (x * 255.0).round().clamp_(0, 255).to(torch.uint8)
    return TensorSplit(images=images, labels=labels)


def load_synthetic(
    dataset_path: str = "",
    seed: int = 1234,
    n_classes: int = 10,
    n_per_class: int = 20,
    noise: float = 0.25,
    image_size: int = 28,
    open_set: bool = False,
    n_heldout_classes: int = 5,
) -> DataSplits:
    """`n_per_class` images of each class in each of train/val/test; `dataset_path` is ignored.

    Closed-set: all splits share the `n_classes` patterns. Open-set: train has `n_classes`, val and
    test each `n_heldout_classes` unseen patterns. `n_train_classes` is `n_classes` either way.
    """
    g = torch.Generator().manual_seed(seed)
    n_extra = 2 * n_heldout_classes if open_set else 0
    patterns = _patterns(n_classes + n_extra, image_size, g)
    train_p = patterns[:n_classes]
    if open_set:
        val_p = patterns[n_classes:n_classes + n_heldout_classes]
        test_p = patterns[n_classes + n_heldout_classes:]
    else:
        val_p = test_p = train_p
    return DataSplits(
        name="synthetic",
        train=_sample(train_p, n_per_class, noise, g),
        val=_sample(val_p, n_per_class, noise, g),
        test=_sample(test_p, n_per_class, noise, g),
        n_train_classes=n_classes,
        open_set=open_set,
        channels=1,
        image_size=image_size,
        mean=(0.0,),
        std=(1.0,),
        train_augment="none",
        class_names=[f"pattern_{i}" for i in range(n_classes)],
    )
