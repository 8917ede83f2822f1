"""Batched on-device augmentation and normalisation for in-memory (`TensorSplit`) batches.

Per-sample torchvision transforms on PIL images would bottleneck small-image training on a GPU;
here a whole N x C x H x W batch is cropped, flipped and cut out with one gather and a few
broadcasts, drawing from a caller-owned `torch.Generator` (on the batch's device).

kind="cifar" reproduces the vMF code's CIFAR pipeline in its order: RandomCrop(32, padding=4,
reflect) -> RandomHorizontalFlip -> ToTensor -> Normalize -> Cutout (one 8x8 square set to 0,
centre uniform over the image, clipped at the border as in DeVries & Taylor's Cutout).

kind="affine" is torchvision's RandomAffine(degrees, scale=(min, max)) -> ToTensor -> Normalize, the
MNIST augmentation of Metric-Guided Prototype Learning (Garnot & Landrieu, BMVC 2021; its notebook uses
RandomAffine(degrees=40, scale=(1.3, 1.3))): per sample an angle ~ U(-degrees, degrees) and a zoom
~ U(min, max), about the image centre, nearest-neighbour sampling (RandomAffine's default), zero fill;
the whole batch is resampled with one `F.affine_grid` + `F.grid_sample` call.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F


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


Degrees = Union[float, Sequence[float]]


def affine_ranges(degrees: Degrees, scale: Sequence[float]) -> Tuple[Tuple[float, float], Tuple[float, float]]:
    """((min angle, max angle), (min zoom, max zoom)) as RandomAffine reads them: a number d means (-d, d)
    (d >= 0), a pair is taken as is; `scale` is a (min, max) pair, 0 < min <= max. ValueError (one line)
    otherwise."""
    if isinstance(degrees, (int, float)) and not isinstance(degrees, bool):
        if degrees < 0 or not math.isfinite(degrees):
            raise ValueError(f"degrees={degrees!r} must be a finite number >= 0 (angles drawn from (-d, d)) or a "
                             "(min, max) pair")
        angles = (-float(degrees), float(degrees))
    else:
        angles = _pair(degrees, "degrees")
    zooms = _pair(scale, "scale")
    if zooms[0] <= 0:
        raise ValueError(f"scale={list(zooms)} must be a (min, max) pair of zoom factors > 0")
    return angles, zooms


def _pair(value, name: str) -> Tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} must be a (min, max) pair of numbers") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ValueError(f"{name}={[low, high]} must be a finite (min, max) pair with min <= max")
    return low, high


def sample_affine_params(n: int, degrees: Tuple[float, float], scale: Tuple[float, float],
                         generator: Optional[torch.Generator] = None,
                         device: Optional[torch.device] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """n angles (degrees) ~ U(degrees) and n zoom factors ~ U(scale), float32 on `device`, angles drawn first."""
    angles = torch.rand(n, generator=generator, device=device) * (degrees[1] - degrees[0]) + degrees[0]
    zooms = torch.rand(n, generator=generator, device=device) * (scale[1] - scale[0]) + scale[0]
    return angles, zooms


def affine_transform(x: torch.Tensor, angles: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Rotate sample n of a float N x C x H x W batch by angles[n] degrees (clockwise, as torchvision's
    `F.affine`) and zoom it by scales[n] about the image centre; nearest-neighbour, zero outside.

    Output pixel p (centre-relative pixel coordinates) reads input pixel M^-1 p with M^-1 the inverse of
    rotation times zoom: torchvision's tensor `F.affine` with translate=0 and shear=0 (`_get_inverse_affine_matrix`),
    rescaled to grid_sample's [-1, 1] coordinates (align_corners=False), for the whole batch at once.
    """
    n, _, h, w = x.shape
    rad = torch.deg2rad(angles.to(device=x.device, dtype=torch.float64))
    inv = 1.0 / scales.to(device=x.device, dtype=torch.float64)
    cos, sin = torch.cos(rad) * inv, torch.sin(rad) * inv
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, sin * (h / w), zero], 1),
                         torch.stack([-sin * (w / h), cos, zero], 1)], 1).to(x.dtype)
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def random_affine(x: torch.Tensor, degrees: Tuple[float, float], scale: Tuple[float, float],
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """RandomAffine(degrees, scale=scale) on every sample independently (float batch in, float batch out)."""
    angles, scales = sample_affine_params(x.shape[0], degrees, scale, generator, x.device)
    return affine_transform(x, angles, scales)


class DeviceAugment:
    """Training-batch transform: uint8/float N x C x H x W on any device -> normalised float32.

    kind: "none" (scale + normalise) | "cifar" (reflect-pad crop, flip, normalise, cutout) |
        "crop_flip" (the same without cutout: HPN's CIFAR recipe) | "affine" (random rotation + zoom,
        then normalise: RandomAffine(degrees, scale=scale), metric-guided prototypes' MNIST recipe) |
        "crop_flip_rotate" (crop, flip, then RandomRotation(degrees): the spherization paper's CIFAR-100 recipe).
    `padding` and `cutout_size` (0 disables either) default to the CIFAR recipe's 4 and 8; `degrees`
    (d: angles in (-d, d), or a (min, max) pair; None: 40 for "affine", 15 for "crop_flip_rotate") and `scale`
    ((min, max) zoom, "affine" only) to the MNIST recipe's (1.3, 1.3). Each kind ignores the other kinds' parameters.
    """

    KINDS = ("none", "cifar", "crop_flip", "affine", "crop_flip_rotate")
    DEFAULT_DEGREES = {"affine": 40.0, "crop_flip_rotate": 15.0}

    def __init__(self, kind: str, mean: Sequence[float], std: Sequence[float], padding: int = 4,
                 cutout_size: int = 8, degrees: Optional[Degrees] = None, scale: Sequence[float] = (1.3, 1.3)) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"augmentation kind must be one of {self.KINDS}, got {kind!r}")
        self.kind = kind
        self.mean, self.std = tuple(mean), tuple(std)
        self.padding, self.cutout_size = int(padding), int(cutout_size)
        if degrees is None:
            degrees = self.DEFAULT_DEGREES.get(kind, 40.0)
        self.degrees, self.scale = affine_ranges(degrees, scale if kind == "affine" else (1.0, 1.0))

    def __call__(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        if self.kind in ("cifar", "crop_flip", "crop_flip_rotate"):
            x = random_crop_flip(x, self.padding, generator)
        if self.kind == "crop_flip_rotate":  # zero fill on [0, 1] values, as RandomRotation(fill=0) before ToTensor
            x = random_affine(_as_float(x), self.degrees, self.scale, generator)
        elif self.kind == "affine":  # on [0, 1] values, so the zero fill is black as RandomAffine's fill=0
            x = random_affine(_as_float(x), self.degrees, self.scale, generator)
        x = eval_transform(x, self.mean, self.std)
        if self.kind == "cifar" and self.cutout_size > 0:
            x = cutout(x, self.cutout_size, generator)
        return x

    def __repr__(self) -> str:
        if self.kind in ("affine", "crop_flip_rotate"):
            return f"DeviceAugment(kind={self.kind!r}, degrees={self.degrees}, scale={self.scale})"
        return f"DeviceAugment(kind={self.kind!r}, padding={self.padding}, cutout_size={self.cutout_size})"
