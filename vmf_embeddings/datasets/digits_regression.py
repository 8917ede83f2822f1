"""sklearn digits with a scalar regression target, so the HPN regression and joint heads can be trained
and tested offline in seconds (the OmniArt year task needs a large download).

Targets (float32 per split, in their own units):
  value  the digit itself, 0..9 (default). Like OmniArt's creation year it is ordinal, semantic (it must
         be read off the image, not computed from pixel sums) and has bounds known a priori ([0, 9] as
         [1000, 1932]), and a constant predictor's MAE (about 2.5) gives a clear baseline.
  ink    mean pixel intensity of the 28x28 image in [0, 1]: a smooth function of the image that varies
         within a class, so a joint run's two tasks are not redundant; set dataset.target_lower=0 and
         dataset.target_upper=1 with it.
"""

from __future__ import annotations

import dataclasses

import torch

from .base import DataSplits, TensorSplit
from .digits import load_digits

TARGETS = ("value", "ink")


def _with_targets(split: TensorSplit, target: str) -> TensorSplit:
    if target == "value":
        values = split.labels.to(torch.float32)
    else:
        values = split.images.to(torch.float32).mean(dim=(1, 2, 3)) / 255.0
    return dataclasses.replace(split, targets=values.contiguous())


def load_digits_regression(dataset_path: str = "", seed: int = 1234, target: str = "value", **options) -> DataSplits:
    """`load_digits` splits (same seed, same images and labels) plus a float32 `targets` per split."""
    if target not in TARGETS:
        raise ValueError(f"digits_regression target must be one of {TARGETS}, got {target!r}")
    data = load_digits(dataset_path, seed, **options)
    return dataclasses.replace(
        data,
        name="digits_regression",
        train=_with_targets(data.train, target),
        val=_with_targets(data.val, target),
        test=_with_targets(data.test, target),
    )
