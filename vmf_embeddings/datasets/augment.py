"""Batched on-device augmentation and normalisation for in-memory (`TensorSplit`) batches.

Per-sample torchvision transforms on PIL images would bottleneck small-image training on a GPU;
here a whole N x C x H x W batch is cropped, flipped and cut out with one gather and a few
broadcasts, drawing from a caller-owned `torch.Generator` (on the batch's device).

kind="cifar" reproduces the vMF code's CIFAR pipeline in its order: RandomCrop(32, padding=4,
reflect) -> RandomHorizontalFlip -> ToTensor -> Normalize -> Cutout (one 8x8 square set to 0,
centre uniform over the image, clipped at the border as in DeVries & Taylor's Cutout).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float32 0..1 (ToTensor); float input is taken as already scaled."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def _channel_stats(values: Sequence[float], x: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)


def eval_transform(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Scale (uint8 -> [0, 1]) and normalise a batch: the evaluation path."""
    x = _as_float(x)
    return (x - _channel_stats(mean, x)) / _channel_stats(std, x)


def _reflect(i: torch.Tensor, size: int) -> torch.Tensor:
    """Reflect out-of-range coordinates like F.pad(mode='reflect') (edge pixel not repeated)."""
    i = i.abs()
    return torch.where(i >= size, 2 * (size - 1) - i, i)


def random_crop_flip(x: torch.Tensor, padding: int, generator: Optional[torch.Generator] = None,
                     flip: bool = True) -> torch.Tensor:
    """Per-sample random H x W crop of the reflect-padded batch plus random horizontal flip.

    The padding is never materialised: output pixel (r, c) of sample n reads input pixel
    (reflect(oy_n + r - p), reflect(ox_n + c - p)) with c reversed for flipped samples, gathered
    in one call (works for uint8 and float, any device).
    """
    n, ch, h, w = x.shape
    dev = x.device
    oy = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator, device=dev)
    ox = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator, device=dev)
    cols = torch.arange(w, device=dev).expand(n, w)
    if flip:
        flipped = torch.rand(n, 1, generator=generator, device=dev) < 0.5
        cols = torch.where(flipped, w - 1 - cols, cols)
    rows = _reflect(oy + torch.arange(h, device=dev) - padding, h)  # n x h
    cols = _reflect(ox + cols - padding, w)  # n x w
    flat = (rows[:, :, None] * w + cols[:, None, :]).reshape(n, 1, h * w).expand(n, ch, h * w)
    return x.reshape(n, ch, h * w).gather(2, flat).reshape(n, ch, h, w)


def cutout(x: torch.Tensor, size: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Zero a size x size square (clipped at the border) at a uniform random centre, per sample."""
    n, _, h, w = x.shape
    dev = x.device
    cy = torch.randint(0, h, (n, 1), generator=generator, device=dev)
    cx = torch.randint(0, w, (n, 1), generator=generator, device=dev)
    r = torch.arange(h, device=dev)
    c = torch.arange(w, device=dev)
    in_rows = (r >= cy - size // 2) & (r < cy - size // 2 + size)  # n x h
    in_cols = (c >= cx - size // 2) & (c < cx - size // 2 + size)  # n x w
    mask = in_rows[:, None, :, None] & in_cols[:, None, None, :]
    return x.masked_fill(mask, 0.0)


class DeviceAugment:
    """Training-batch transform: uint8/float N x C x H x W on any device -> normalised float32.

    kind: "none" (scale + normalise) | "cifar" (reflect-pad crop, flip, normalise, cutout) |
        "crop_flip" (the same without cutout: HPN's CIFAR recipe).
    `padding` and `cutout_size` (0 disables either) default to the CIFAR recipe's 4 and 8.
    """

    KINDS = ("none", "cifar", "crop_flip")

    def __init__(self, kind: str, mean: Sequence[float], std: Sequence[float], padding: int = 4,
                 cutout_size: int = 8) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"augmentation kind must be one of {self.KINDS}, got {kind!r}")
        self.kind = kind
        self.mean, self.std = tuple(mean), tuple(std)
        self.padding, self.cutout_size = int(padding), int(cutout_size)

    def __call__(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        if self.kind in ("cifar", "crop_flip"):
            x = random_crop_flip(x, self.padding, generator)
        x = eval_transform(x, self.mean, self.std)
        if self.kind == "cifar" and self.cutout_size > 0:
            x = cutout(x, self.cutout_size, generator)
        return x

    def __repr__(self) -> str:
        return f"DeviceAugment(kind={self.kind!r}, padding={self.padding}, cutout_size={self.cutout_size})"
