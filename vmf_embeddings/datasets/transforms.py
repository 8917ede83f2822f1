"""torchvision transform pipelines for the on-disk (`FileSplit`) datasets, one function per recipe.

Every pipeline starts with `ToRGB` because CUB, SOP and OmniArt contain a few grayscale/CMYK/
palette files that would otherwise give 1- or 4-channel tensors and break batching. All classes
here are module-level so DataLoader workers can pickle them under any start method.
"""

from __future__ import annotations

from typing import Tuple

from PIL import Image
from torchvision import transforms as T

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
