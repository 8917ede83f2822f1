"""torchvision transform pipelines for the on-disk (`FileSplit`) datasets, one function per recipe.

Every pipeline starts with `ToRGB` because CUB, SOP and OmniArt contain a few grayscale/CMYK/
palette files that would otherwise give 1- or 4-channel tensors and break batching. All classes
here are module-level so DataLoader workers can pickle them under any start method.

`store_plan` reads a dataset's (train, eval) pipelines and says how its images go into a decoded-image
store (`store.py`) and which `augment.DeviceAugment` reproduces the rest on the device (see its docstring
for the rule and the departures it reports).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ToRGB:
    """PIL image -> 3-channel RGB PIL image."""

    def __call__(self, img: Image.Image) -> Image.Image:
        return img if img.mode == "RGB" else img.convert("RGB")

    def __repr__(self) -> str:
        return "ToRGB()"


def _resize_size(image_size: int) -> int:
    """The 256-for-224 resize of the DML recipes, scaled so tests can run at tiny sizes."""
    return int(round(image_size * 256 / 224))


def _finish() -> list:
    return [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


#: per-dataset augmentation of the vMF code: resize to a square first?, RandomResizedCrop aspect ratios,
#: ColorJitter (brightness, contrast, saturation, hue) or None
DML_RECIPES = {
    "cars196": {"square": True, "crop_ratio": (1.0, 1.0), "jitter": (0.3, 0.3, 0.3, 0.1)},
    "cub200": {"square": False, "crop_ratio": (3 / 4, 4 / 3), "jitter": (0.25, 0.25, 0.25, 0.0)},
    "sop": {"square": True, "crop_ratio": (3 / 4, 4 / 3), "jitter": None},
}


def dml_transforms(dataset: str, image_size: int = 224) -> Tuple[T.Compose, T.Compose]:
    """(train, eval) pipelines of the vMF code (google-research/vmf_embeddings) for 'cars196' | 'cub200' | 'sop'.

    Cars and SOP resize to a square first; CUB resizes the short side. Cars crops at a 1:1 ratio.
    """
    big = _resize_size(image_size)
    recipe = DML_RECIPES[dataset]
    resize = T.Resize((big, big)) if recipe["square"] else T.Resize(big)
    ratio = recipe["crop_ratio"]
    jitter = [T.ColorJitter(*recipe["jitter"])] if recipe["jitter"] else []
    train = T.Compose(
        [ToRGB(), resize, *jitter, T.RandomResizedCrop(image_size, scale=(0.16, 1.0), ratio=ratio),
         T.RandomHorizontalFlip(), *_finish()]
    )
    test = T.Compose([ToRGB(), resize, T.CenterCrop(image_size), *_finish()])
    return train, test


def hpn_transforms(image_size: int = 224) -> Tuple[T.Compose, T.Compose]:
    """(train, eval) pipelines of Hyperspherical Prototype Networks for CUB and OmniArt.

    Departure: HPN also evaluated with RandomResizedCrop (and random flips on OmniArt), which makes
    test accuracy stochastic; evaluation here is a deterministic resize + center crop instead.
    """
    train = T.Compose([ToRGB(), T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), *_finish()])
    test = T.Compose([ToRGB(), T.Resize(_resize_size(image_size)), T.CenterCrop(image_size), *_finish()])
    return train, test


def small_image_transforms(image_size: int = 64, padding: int = 4) -> Tuple[T.Compose, T.Compose]:
    """(train, eval) pipelines of HPN's ImageNet-200: zero-padded random crop + flip; eval untouched."""
    resize = [T.Resize((image_size, image_size))]
    train = T.Compose(
        [ToRGB(), *resize, T.RandomCrop(image_size, padding=padding), T.RandomHorizontalFlip(), *_finish()]
    )
    test = T.Compose([ToRGB(), *resize, *_finish()])
    return train, test


# ------------------------------------------------------------------------------------------ store plans
@dataclass(frozen=True)
class StorePlan:
    """How a file-backed dataset's images are stored once decoded, and what the device does with them.

    resize: the evaluation pipeline's `T.Resize` (PIL, the same pixels torchvision computes);
    square: after a shorter-side resize, the side of the centre square kept (the stored images must share one
    size); None after a fixed (h, w) resize. height x width: the stored image size.
    augment / augment_params: the `DeviceAugment` kind and keyword arguments that replace the training
    pipeline's random steps; augment_params["size"] also gives evaluation ("none") its CenterCrop.
    departures: where the device pipeline differs from the torchvision one, one sentence each.
    """

    resize: Callable
    square: Optional[int]
    height: int
    width: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    augment: str
    augment_params: Dict[str, Any]
    departures: Tuple[str, ...] = field(default=())

    def prepare(self, image: Image.Image) -> np.ndarray:
        """An RGB PIL image -> the stored H x W x 3 uint8 array (the evaluation resize, then the centre square)."""
        image = self.resize(image)
        if self.square is not None:
            image = TF.center_crop(image, [self.square, self.square])
        array = np.asarray(image, dtype=np.uint8)
        if array.shape != (self.height, self.width, 3):
            raise ValueError(f"prepared image has shape {array.shape}, expected {(self.height, self.width, 3)}")
        return array

    def describe(self) -> Dict[str, Any]:
        """The resolution as the store's manifest records it (JSON values)."""
        return {"resize": _resize_spec(self.resize), "square": self.square, "height": self.height,
                "width": self.width, "channels": 3}


def _resize_spec(step: T.Resize) -> Dict[str, Any]:
    size = step.size
    size = [int(v) for v in size] if isinstance(size, (list, tuple)) else int(size)
    return {"size": size, "interpolation": str(getattr(step.interpolation, "value", step.interpolation)),
            "max_size": step.max_size, "antialias": step.antialias}


def _steps(transform: Callable) -> List[Callable]:
    steps = list(transform.transforms) if isinstance(transform, T.Compose) else [transform]
    return [step for step in steps if not isinstance(step, ToRGB)]


def _square_size(size: Any) -> Optional[int]:
    """An int side for a square size (int, [s], (s, s)), else None."""
    if isinstance(size, int):
        return size
    values = list(size)
    return int(values[0]) if len(values) == 1 or (len(values) == 2 and values[0] == values[1]) else None


def _normalize(steps: List[Callable], what: str) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    if len(steps) != 2 or not isinstance(steps[0], T.ToTensor) or not isinstance(steps[1], T.Normalize):
        raise _Unsupported(f"the {what} pipeline does not end in ToTensor, Normalize")
    return tuple(float(v) for v in steps[1].mean), tuple(float(v) for v in steps[1].std)


class _Unsupported(ValueError):
    pass


def store_plan(train: Callable, evaluation: Callable) -> Tuple[Optional[StorePlan], str]:
    """(plan, "") for pipelines the store can serve, else (None, the reason).

    Rule: the stored image is the evaluation pipeline's Resize output; after a shorter-side Resize(s) (CUB, the
    HPN recipe) its centre s x s square, after a fixed Resize((h, w)) (Cars, SOP, ImageNet-200, the RepMet
    fine-grained sets) the whole h x w image. Evaluation then centre-crops on the device (CenterCrop(c) of a
    centre crop equals torchvision's single crop whenever s - c is a multiple of 4, e.g. 256 -> 224), so the
    store's evaluation batches are the torchvision pipeline's, bit for bit. The training pipeline, after the same
    Resize or none, may hold ColorJitter, then RandomResizedCrop (bilinear) or RandomCrop (zero or reflect
    padding) or neither, then RandomHorizontalFlip(0.5); these run on the device (`DeviceAugment`). Departures
    (listed in the plan): random crops are drawn from the stored image, so a training pipeline without the Resize
    (HPN's RandomResizedCrop of the original image) crops the s x s square instead of the full-resolution image,
    and a shorter-side Resize crops its centre square instead of the whole resized image; ColorJitter is computed
    on float values, not on 8-bit PIL images; the crop is resized with the same antialiased bilinear filter as
    PIL, on float values (no rounding to 8 bits).
    """
    try:
        return _plan(train, evaluation), ""
    except _Unsupported as why:
        return None, str(why)


def _plan(train: Callable, evaluation: Callable) -> StorePlan:
    steps = _steps(evaluation)
    if not steps or not isinstance(steps[0], T.Resize):
        raise _Unsupported("the evaluation pipeline does not start with a Resize (the stored resolution)")
    resize, steps = steps[0], steps[1:]
    if resize.max_size is not None:
        raise _Unsupported("the evaluation Resize has a max_size")
    size = resize.size
    if isinstance(size, int) or len(list(size)) == 1:
        square = int(size if isinstance(size, int) else list(size)[0])
        height = width = square
    else:
        square = None
        height, width = (int(v) for v in size)
    eval_size: Optional[int] = None
    if steps and isinstance(steps[0], T.CenterCrop):
        eval_size = _square_size(steps[0].size)
        if eval_size is None or eval_size > min(height, width):
            raise _Unsupported(f"the evaluation CenterCrop{tuple(steps[0].size)} is not a square inside the stored "
                               f"{height}x{width} image")
        steps = steps[1:]
    mean, std = _normalize(steps, "evaluation")
    departures: List[str] = []
    if eval_size is not None and square is not None and (square - eval_size) % 4:
        departures.append(f"evaluation's CenterCrop({eval_size}) of the stored {square}-pixel square may sit one "
                          "pixel off torchvision's for odd margins")

    steps = _steps(train)
    if steps and isinstance(steps[0], T.Resize):
        if _resize_spec(steps[0]) != _resize_spec(resize):
            raise _Unsupported("the training and evaluation pipelines resize differently")
        steps = steps[1:]
        if square is not None:
            departures.append(f"training crops come from the centre {square}x{square} square of the shorter-side "
                              "resize, not from the whole resized image")
    else:
        departures.append(f"training crops come from the stored {height}x{width} image, not from the "
                          "full-resolution file")
    jitter = None
    if steps and isinstance(steps[0], T.ColorJitter):
        step = steps.pop(0)
        jitter = {key: (None if getattr(step, key) is None else [float(v) for v in getattr(step, key)])
                  for key in ("brightness", "contrast", "saturation", "hue")}
        departures.append("ColorJitter runs on float values, not on 8-bit PIL images")
    out_size = eval_size if eval_size is not None else _square_size((height, width))
    params: Dict[str, Any] = {"size": out_size}
    kind = "none"
    if steps and isinstance(steps[0], T.RandomResizedCrop):
        step = steps.pop(0)
        crop = _square_size(step.size)
        if crop is None or crop != out_size:
            raise _Unsupported(f"the training RandomResizedCrop{tuple(step.size)} and the evaluation output "
                               f"({out_size}) differ in size")
        if getattr(step.interpolation, "value", step.interpolation) != "bilinear":
            raise _Unsupported("the training RandomResizedCrop does not resample bilinearly")
        kind = "resized_crop_flip"
        params.update(crop_scale=[float(v) for v in step.scale], crop_ratio=[float(v) for v in step.ratio],
                      jitter=jitter, flip=False)
        departures.append("RandomResizedCrop resizes float values (torchvision's antialiased bilinear filter), "
                          "without PIL's rounding to 8 bits")
    elif steps and isinstance(steps[0], T.RandomCrop):
        step = steps.pop(0)
        padding = step.padding if step.padding is not None else 0
        pads = {int(padding)} if isinstance(padding, int) else {int(v) for v in padding}
        if (tuple(step.size) != (height, width) or len(pads) != 1 or step.pad_if_needed
                or step.padding_mode not in ("constant", "reflect")
                or (step.padding_mode == "constant" and step.fill != 0)):
            raise _Unsupported("the training RandomCrop is not a crop of the stored size with equal zero or reflect "
                               "padding")
        kind = "crop_flip"
        params.update(padding=pads.pop(), padding_mode="zeros" if step.padding_mode == "constant" else "reflect",
                      flip=False)
    if jitter is not None and kind != "resized_crop_flip":
        raise _Unsupported("ColorJitter without RandomResizedCrop has no device equivalent here")
    if steps and isinstance(steps[0], T.RandomHorizontalFlip):
        step = steps.pop(0)
        if float(step.p) != 0.5:
            raise _Unsupported(f"RandomHorizontalFlip(p={step.p}) is not the p=0.5 flip")
        if kind == "none":
            kind = "crop_flip"
            params.update(padding=0, padding_mode="reflect")
        params["flip"] = True
    if out_size is None and kind != "none":
        raise _Unsupported(f"the stored {height}x{width} images are not square and nothing crops them")
    train_mean, train_std = _normalize(steps, "training")
    if (train_mean, train_std) != (mean, std):
        raise _Unsupported("the training and evaluation pipelines normalise differently")
    return StorePlan(resize=resize, square=square, height=height, width=width, mean=mean, std=std, augment=kind,
                     augment_params=params, departures=tuple(departures))
