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

kind="resized_crop_flip" is the ImageNet-style recipe of the file-backed datasets once their images are
decoded into a store (`datasets/store.py`): optional ColorJitter (per-sample factors and a per-sample random
order of the four adjustments, as torchvision's ColorJitter draws per image, computed on float values) ->
RandomResizedCrop(size, scale, ratio) (torchvision's parameter draw: ten tries of a log-uniform aspect ratio
and a uniform area fraction, else the clamped centre crop, vectorised over the batch) -> RandomHorizontalFlip.
Each sample's crop is resized with the antialiased bilinear filter of PIL and torchvision (`resized_crop`:
separable, two batched matmuls with per-sample weight matrices).
`size` also gives "none" (the evaluation path) its CenterCrop(size), torchvision's rounding of the offset.
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


PADDING_MODES = ("reflect", "zeros")


def random_crop_flip(x: torch.Tensor, padding: int, generator: Optional[torch.Generator] = None,
                     flip: bool = True, padding_mode: str = "reflect") -> torch.Tensor:
    """Per-sample random H x W crop of the padded batch plus random horizontal flip.

    The padding is never materialised: output pixel (r, c) of sample n reads input pixel
    (reflect(oy_n + r - p), reflect(ox_n + c - p)) with c reversed for flipped samples, gathered
    in one call (works for uint8 and float, any device). padding_mode="zeros" reads 0 outside the
    image instead, as torchvision's RandomCrop(padding=p) with its default fill=0 (black before
    normalisation).
    """
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode={padding_mode!r} must be one of {PADDING_MODES}")
    n, ch, h, w = x.shape
    dev = x.device
    oy = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator, device=dev)
    ox = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator, device=dev)
    cols = torch.arange(w, device=dev).expand(n, w)
    if flip:
        flipped = torch.rand(n, 1, generator=generator, device=dev) < 0.5
        cols = torch.where(flipped, w - 1 - cols, cols)
    rows = oy + torch.arange(h, device=dev) - padding  # n x h
    cols = ox + cols - padding  # n x w
    if padding_mode == "reflect":
        rows, cols = _reflect(rows, h), _reflect(cols, w)
        inside = None
    else:
        inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]  # n x h x w
        rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    flat = (rows[:, :, None] * w + cols[:, None, :]).reshape(n, 1, h * w).expand(n, ch, h * w)
    out = x.reshape(n, ch, h * w).gather(2, flat).reshape(n, ch, h, w)
    return out if inside is None else out.masked_fill(~inside[:, None], 0)


def centre_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """torchvision's CenterCrop(size) of a batch no smaller than size x size (offset int(round((H - size) / 2)))."""
    h, w = x.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"cannot centre-crop {h}x{w} images to {size}x{size}")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return x[..., top:top + size, left:left + size]


def resized_crop_params(n: int, height: int, width: int, scale: Sequence[float], ratio: Sequence[float],
                        generator: Optional[torch.Generator] = None, device: Optional[torch.device] = None,
                        tries: int = 10) -> torch.Tensor:
    """n crop boxes (top, left, height, width) as torchvision's `RandomResizedCrop.get_params` draws them, all
    samples at once: `tries` candidates of area fraction ~ U(scale) and aspect ~ exp(U(log ratio)), sides rounded
    half to even, the first that fits taken with a uniform offset; none fitting, the centre crop of the whole
    image with its aspect clamped to `ratio`. int64 tensor n x 4 on `device`."""
    area = float(height * width)
    fractions = torch.rand(n, tries, generator=generator, device=device) * (scale[1] - scale[0]) + scale[0]
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspects = torch.exp(torch.rand(n, tries, generator=generator, device=device) * (log_high - log_low) + log_low)
    w = torch.round(torch.sqrt(area * fractions * aspects)).long()
    h = torch.round(torch.sqrt(area * fractions / aspects)).long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.long().argmax(1, keepdim=True)  # index of the first fitting try (0 when none fits)
    w, h, found = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0], fits.any(1)
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(height * max(ratio))), height
    else:
        fw, fh = width, height
    w, h = torch.where(found, w, fw), torch.where(found, h, fh)
    offsets = torch.rand(n, 2, generator=generator, device=device)
    top = torch.where(found, (offsets[:, 0] * (height - h + 1)).long().clamp(max=height - h), (height - fh) // 2)
    left = torch.where(found, (offsets[:, 1] * (width - w + 1)).long().clamp(max=width - w), (width - fw) // 2)
    return torch.stack([top, left, h, w], 1)


def _resample_taps(start: torch.Tensor, length: torch.Tensor, size: int,
                   taps: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Indices and weights (n x size x taps) that resample the interval [start, start + length) of each sample to
    `size` points with the antialiased bilinear filter of PIL and of `F.interpolate(antialias=True)`: output j is
    centred at (j + 0.5) * scale inside the interval (scale = length / size), takes the inputs within
    max(scale, 1) of it with triangle weights 1 - |x - centre + 0.5| / max(scale, 1), clipped to the interval
    (the crop is cut out before it is resized, as torchvision's resized_crop) and normalised to sum 1."""
    dev = start.device
    length = length.to(torch.float64)
    scale = length / size
    support = scale.clamp(min=1.0)
    centre = (torch.arange(size, device=dev, dtype=torch.float64) + 0.5)[None] * scale[:, None]  # n x size
    low = torch.floor(centre - support[:, None] + 0.5).clamp(min=0)
    high = torch.minimum(torch.floor(centre + support[:, None] + 0.5), length[:, None])
    x = low[..., None] + torch.arange(taps, device=dev, dtype=torch.float64)  # n x size x taps
    weight = (1.0 - ((x - centre[..., None] + 0.5) / support[:, None, None]).abs()).clamp(min=0)
    weight = weight * (x < high[..., None])
    weight = weight / weight.sum(-1, keepdim=True)
    index = start.to(torch.float64)[:, None, None] + torch.minimum(x, length[:, None, None] - 1)
    return index.long(), weight.float()


def _resample_matrix(start: torch.Tensor, length: torch.Tensor, size: int, extent: int) -> torch.Tensor:
    """n x size x extent float32: row j of sample n holds the `_resample_taps` weights of output j over the
    extent input positions (zero outside the sample's interval)."""
    taps = int(math.ceil(2 * max(1.0, extent / size))) + 1  # enough for the longest interval the images allow
    index, weight = _resample_taps(start, length, size, taps)
    matrix = torch.zeros(start.shape[0], size, extent, device=start.device)
    return matrix.scatter_add_(2, index, weight)


def resized_crop(x: torch.Tensor, boxes: torch.Tensor, size: int,
                 flipped: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Crop box n = (top, left, height, width) of sample n out of a float batch and resize it to size x size with
    the antialiased bilinear filter (torchvision's `resized_crop(..., antialias=True)`, PIL's BILINEAR up to 8-bit
    rounding), mirrored left-right where `flipped` (n bools) is true. Separable: one batched matmul with each
    sample's row weights (size x H), one with its column weights (W x size, in reverse order for a mirrored
    sample); every sample has its own box, and no per-sample loop runs."""
    n, ch, h, w = x.shape
    top, left, height, width = boxes.to(x.device).long().unbind(1)
    rows = _resample_matrix(top, height, size, h).to(x.dtype)  # n x size x H
    cols = _resample_matrix(left, width, size, w).to(x.dtype)  # n x size x W
    if flipped is not None:
        cols = torch.where(flipped.view(-1, 1, 1), cols.flip(1), cols)
    out = torch.bmm(rows, x.permute(0, 2, 1, 3).reshape(n, h, ch * w))  # n x size x (C W)
    out = torch.bmm(out.reshape(n, size * ch, w), cols.transpose(1, 2))  # n x (size C) x size
    return out.reshape(n, size, ch, size).permute(0, 2, 1, 3).contiguous()


_LUMA = (0.2989, 0.587, 0.114)


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma of an N x 3 x H x W batch, N x 1 x H x W (torchvision's rgb_to_grayscale weights)."""
    luma = x[:, 0:1] * _LUMA[0]
    return luma.add_(x[:, 1:2], alpha=_LUMA[1]).add_(x[:, 2:3], alpha=_LUMA[2])


def _shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Add shift[n] (in turns, -0.5..0.5) to the hue of sample n, through HSV as torchvision's adjust_hue: hue,
    saturation and value as its `_rgb2hsv`; back to RGB with the closed form of the sector table,
    channel = v - v s clamp(min(k, 4 - k), 0, 1), k = (m + 6 hue) mod 6 with m = 5, 3, 1 for R, G, B."""
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    r, g, b = x.unbind(1)
    delta = maxc - minc
    gray = delta == 0
    sat = delta / torch.where(gray, torch.ones_like(maxc), maxc)
    safe = torch.where(gray, torch.ones_like(delta), delta)
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    hue = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.where(gray, torch.zeros_like(hue), hue)
    hue6 = torch.remainder(hue / 6.0 + shift.view(-1, 1, 1), 1.0) * 6.0
    chroma = maxc * sat
    channels = []
    for m in (5.0, 3.0, 1.0):
        k = torch.remainder(m + hue6, 6.0)
        channels.append(maxc - chroma * torch.minimum(k, 4.0 - k).clamp(0, 1))
    return torch.stack(channels, 1).clamp(0, 1)


JITTER_KEYS = ("brightness", "contrast", "saturation", "hue")


def color_jitter(x: torch.Tensor, ranges: dict, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """torchvision's ColorJitter on each sample of a float [0, 1] N x 3 x H x W batch with its own factors and its
    own random order of the four adjustments; `ranges` maps brightness / contrast / saturation / hue to a
    (min, max) factor range (hue: a shift in turns) or None (skipped), as ColorJitter stores them.

    Brightness, contrast and saturation are one blend f x + (1 - f) t, clamped to [0, 1], with t = 0, the image's
    mean luma and its luma per pixel: at each of the four positions of the per-sample permutation, one fused blend
    applies to every sample the adjustment its permutation puts there (f = 1, the identity, for a skipped one);
    the hue rotation (HSV) is applied to the samples whose permutation puts it there.
    """
    n, dev = x.shape[0], x.device
    order = torch.rand(n, 4, generator=generator, device=dev).argsort(1)
    factors = {}
    for key in JITTER_KEYS:
        bounds = ranges.get(key)
        if bounds is not None:
            low, high = float(bounds[0]), float(bounds[1])
            factors[key] = torch.rand(n, generator=generator, device=dev) * (high - low) + low
    if not factors:
        return x
    blends = [key for key in JITTER_KEYS[:3] if key in factors]
    for position in range(4):
        op = order[:, position]
        if blends:
            f = torch.ones(n, device=dev, dtype=x.dtype)
            for k, key in enumerate(JITTER_KEYS[:3]):
                if key in factors:
                    f = torch.where(op == k, factors[key].to(x.dtype), f)
            f = f.view(-1, 1, 1, 1)
            if "contrast" in factors or "saturation" in factors:
                # (1 - f) t with t the luma (saturation), its mean (contrast) or 0 (brightness), as one addcmul
                luma = _grayscale(x)
                keep = 1 - f
                saturate = keep * (op == 2).view(-1, 1, 1, 1).to(x.dtype)
                contrast = keep * (op == 1).view(-1, 1, 1, 1).to(x.dtype) * luma.mean((2, 3), keepdim=True)
                x = torch.addcmul(torch.addcmul(contrast, luma, saturate), x, f).clamp_(0, 1)
            else:
                x = (x * f).clamp_(0, 1)
        if "hue" in factors:
            here = op == 3
            if x.device.type == "cpu":  # only the samples that rotate here (on CUDA that would wait for the device)
                index = here.nonzero()[:, 0]
                x = x.index_copy(0, index, _shift_hue(x[index], factors["hue"][index]))
            else:
                x = torch.where(here.view(-1, 1, 1, 1), _shift_hue(x, factors["hue"]), x)
    return x


def random_resized_crop_flip(x: torch.Tensor, size: int, scale: Sequence[float], ratio: Sequence[float],
                             generator: Optional[torch.Generator] = None, flip: bool = True) -> torch.Tensor:
    """RandomResizedCrop(size, scale, ratio) -> RandomHorizontalFlip on a float batch, per sample (the flip is a
    reversal of the sample's column weights, so it costs no pass over the images)."""
    boxes = resized_crop_params(x.shape[0], x.shape[-2], x.shape[-1], scale, ratio, generator, x.device)
    flipped = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5 if flip else None
    return resized_crop(x, boxes, size, flipped)


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

    kind: "none" (scale + normalise; CenterCrop(size) first when `size` is given) | "cifar" (pad, crop, flip,
        normalise, cutout) | "crop_flip" (the same without cutout: HPN's CIFAR recipe; with padding 0 a flip
        only) | "affine" (random rotation + zoom, then normalise: RandomAffine(degrees, scale=scale),
        metric-guided prototypes' MNIST recipe) | "crop_flip_rotate" (crop, flip, then RandomRotation(degrees):
        the spherization paper's CIFAR-100 recipe) | "resized_crop_flip" (optional ColorJitter(**jitter), then
        RandomResizedCrop(size, scale=crop_scale, ratio=crop_ratio), RandomHorizontalFlip when `flip`: the
        file-backed datasets' recipes on their decoded-image store).
    `padding` and `cutout_size` (0 disables either) default to the CIFAR recipe's 4 and 8, `padding_mode` to
    "reflect" ("zeros": RandomCrop's zero fill); `degrees` (d: angles in (-d, d), or a (min, max) pair; None: 40
    for "affine", 15 for "crop_flip_rotate") and `scale` ((min, max) zoom, "affine" only) to the MNIST recipe's
    (1.3, 1.3); `crop_scale` and `crop_ratio` to RandomResizedCrop's (0.08, 1) and (3/4, 4/3); `jitter` maps
    brightness / contrast / saturation / hue to (min, max) ranges or None. Each kind ignores the other kinds'
    parameters.
    """

    KINDS = ("none", "cifar", "crop_flip", "affine", "crop_flip_rotate", "resized_crop_flip")
    DEFAULT_DEGREES = {"affine": 40.0, "crop_flip_rotate": 15.0}

    def __init__(self, kind: str, mean: Sequence[float], std: Sequence[float], padding: int = 4,
                 cutout_size: int = 8, degrees: Optional[Degrees] = None, scale: Sequence[float] = (1.3, 1.3),
                 size: Optional[int] = None, crop_scale: Sequence[float] = (0.08, 1.0),
                 crop_ratio: Sequence[float] = (3 / 4, 4 / 3), jitter: Optional[dict] = None,
                 padding_mode: str = "reflect", flip: bool = True) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"augmentation kind must be one of {self.KINDS}, got {kind!r}")
        self.kind = kind
        self.mean, self.std = tuple(mean), tuple(std)
        self.padding, self.cutout_size = int(padding), int(cutout_size)
        if degrees is None:
            degrees = self.DEFAULT_DEGREES.get(kind, 40.0)
        self.degrees, self.scale = affine_ranges(degrees, scale if kind == "affine" else (1.0, 1.0))
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode={padding_mode!r} must be one of {PADDING_MODES}")
        self.padding_mode, self.flip = padding_mode, bool(flip)
        self.size = None if size is None else int(size)
        if kind == "resized_crop_flip" and (self.size is None or self.size < 1):
            raise ValueError(f"kind='resized_crop_flip' needs an output size >= 1, got size={size!r}")
        self.crop_scale, self.crop_ratio = _pair(crop_scale, "crop_scale"), _pair(crop_ratio, "crop_ratio")
        if self.crop_scale[0] <= 0 or self.crop_ratio[0] <= 0:
            raise ValueError(f"crop_scale={list(self.crop_scale)} and crop_ratio={list(self.crop_ratio)} must be "
                             "(min, max) pairs of numbers > 0")
        unknown = sorted(set(jitter or {}) - set(JITTER_KEYS))
        if unknown:
            raise ValueError(f"jitter key {unknown[0]!r} is not one of {JITTER_KEYS}")
        self.jitter = {k: (None if v is None else _pair(v, f"jitter.{k}")) for k, v in (jitter or {}).items()}

    def __call__(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        if self.kind == "none" and self.size is not None:
            x = centre_crop(x, self.size)
        if self.kind == "resized_crop_flip":
            x = _as_float(x)
            if any(v is not None for v in self.jitter.values()):
                x = color_jitter(x, self.jitter, generator)
            x = random_resized_crop_flip(x, self.size, self.crop_scale, self.crop_ratio, generator, self.flip)
        if self.kind in ("cifar", "crop_flip", "crop_flip_rotate"):
            x = random_crop_flip(x, self.padding, generator, flip=self.flip, padding_mode=self.padding_mode)
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
        if self.kind == "resized_crop_flip":
            return (f"DeviceAugment(kind={self.kind!r}, size={self.size}, crop_scale={self.crop_scale}, "
                    f"crop_ratio={self.crop_ratio}, jitter={self.jitter}, flip={self.flip})")
        if self.kind == "none":
            return f"DeviceAugment(kind='none', size={self.size})"
        return (f"DeviceAugment(kind={self.kind!r}, padding={self.padding}, padding_mode={self.padding_mode!r}, "
                f"cutout_size={self.cutout_size})")
