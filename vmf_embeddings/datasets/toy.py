"""The spherization paper's toy task (Kim & Kim, NeurIPS 2022, github.com/GIST-IRR/spherization_layer): 100 points
near (0, 0) (class 0) and 100 near (1, 1) (class 1), each coordinate jittered uniformly by +-0.05.

A point is stored as a 1 x 1 x 2 float "image", so the runner's pipeline carries it unchanged (float input is taken
as already scaled; mean 0, std 1). The original has a training set only; validation and test here are independent
draws of the same size from the same distribution (seeds `seed + 1`, `seed + 2`)."""

from __future__ import annotations

import torch

from .base import DataSplits, TensorSplit


def _draw(n_per_class: int, jitter: float, seed: int) -> TensorSplit:
    generator = torch.Generator().manual_seed(int(seed))
    labels = torch.arange(2).repeat_interleave(int(n_per_class))
    centres = labels.float()[:, None].expand(-1, 2)  # (0, 0) and (1, 1)
    noise = (torch.rand(labels.shape[0], 2, generator=generator) * 2 - 1) * float(jitter)
    return TensorSplit(images=(centres + noise).view(-1, 1, 1, 2), labels=labels)


def load_toy_points(dataset_path: str = "", seed: int = 1, n_per_class: int = 100, jitter: float = 0.05) -> DataSplits:
    return DataSplits(name="toy_points", train=_draw(n_per_class, jitter, seed),
                      val=_draw(n_per_class, jitter, seed + 1), test=_draw(n_per_class, jitter, seed + 2),
                      n_train_classes=2, open_set=False, channels=1, image_size=2, mean=(0.0,), std=(1.0,),
                      train_augment="none")
