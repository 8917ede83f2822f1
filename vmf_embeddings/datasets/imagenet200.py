"""ImageNet-200 of Hyperspherical Prototype Networks: 200 classes of 64x64 images, class folders.

Layout under `dataset_path` (HPN's `imagenet200/` or an extracted Tiny-ImageNet):
- `train/<wnid>/**/<image>` — every image below a class folder (Tiny-ImageNet nests `images/`);
- test = `test/<wnid>/...` when `test/` holds training-class folders (HPN layout), otherwise
  `val/<wnid>/...`, otherwise Tiny-ImageNet's `val/val_annotations.txt` + `val/images/`
  (Tiny-ImageNet's labelled val set is what HPN calls test; its own `test/` is unlabelled).
- validation = a seeded class-stratified `val_fraction` (default 10%: 50 of 500 per class, the size
  of the test split) of `train/`. HPN had no validation split and evaluated on test every 10 epochs;
  holding out training images keeps early stopping and LR plateaus off the test set.

Kept on disk (`FileSplit`), not in memory: decoding ~110k JPEGs single-threaded at every start
costs minutes and 1.2 GB of host memory per run (times the parallel sweep jobs), while DataLoader
workers decode lazily and in parallel; the HPN transforms (zero-padded random crop 64, flip) then
run exactly as torchvision defines them. `verify_files=True` (default) opens every image's header at
load time and refuses missing or unreadable files in one line (`files.check_image_files`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

from .base import DataSplits, FileSplit, missing_dataset
from .files import check_image_files
from .splits import stratified_split
from .transforms import IMAGENET_MEAN, IMAGENET_STD, small_image_transforms

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp")


def _images_below(folder: str) -> List[str]:
    found = []
    for dirpath, _, files in os.walk(folder):
        found.extend(os.path.join(dirpath, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS))
    return sorted(found)


def _class_dirs(folder: Path) -> List[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir()) if folder.is_dir() else []


def _folder_split(folder: Path, class_to_idx: dict) -> Tuple[List[str], List[int]]:
    paths, labels = [], []
    for wnid in _class_dirs(folder):
        if wnid not in class_to_idx:
            raise ValueError(f"imagenet200: class folder {folder / wnid} does not occur in train/")
        files = _images_below(str(folder / wnid))
        paths.extend(files)
        labels.extend([class_to_idx[wnid]] * len(files))
    return paths, labels


def _tiny_imagenet_val(folder: Path, class_to_idx: dict) -> Tuple[List[str], List[int]]:
    paths, labels = [], []
    with open(folder / "val_annotations.txt") as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 2 and parts[1] in class_to_idx:
                paths.append(str(folder / "images" / parts[0]))
                labels.append(class_to_idx[parts[1]])
    return paths, labels


def _test_split(root: Path, class_to_idx: dict) -> Optional[Tuple[List[str], List[int], str]]:
    if set(_class_dirs(root / "test")) & set(class_to_idx):
        return (*_folder_split(root / "test", class_to_idx), "test/")
    if set(_class_dirs(root / "val")) & set(class_to_idx):
        return (*_folder_split(root / "val", class_to_idx), "val/")
    if (root / "val" / "val_annotations.txt").is_file():
        return (*_tiny_imagenet_val(root / "val", class_to_idx), "val/val_annotations.txt")
    return None


def load_imagenet200(dataset_path: str, seed: int = 1234, image_size: int = 64, val_fraction: float = 0.1,
                     padding: int = 4, verify_files: bool = True) -> DataSplits:
    """Closed-set 200-way classification; labels = index of the sorted wnid folders of `train/`."""
    root = Path(dataset_path)
    classes = _class_dirs(root / "train")
    class_to_idx = {c: i for i, c in enumerate(classes)}
    test = _test_split(root, class_to_idx) if classes else None
    if test is None:
        raise missing_dataset(
            "imagenet200", dataset_path,
            "train/<wnid>/*.JPEG and test/<wnid>/ (or val/<wnid>/, or Tiny-ImageNet's val/val_annotations.txt)",
            "extract HPN's imagenet200 archive or Tiny-ImageNet into DIR and set dataset.dataset_path=DIR",
        )
    train_paths, train_labels = _folder_split(root / "train", class_to_idx)
    test_paths, test_labels, test_source = test
    train_paths, train_labels = np.array(train_paths, dtype=object), np.array(train_labels, dtype=np.int64)
    keep, val = stratified_split(train_labels, val_fraction, seed)
    keep, val = np.sort(keep), np.sort(val)
    train_tf, eval_tf = small_image_transforms(image_size, padding)

    def split(paths, labels, transform) -> FileSplit:
        return FileSplit(paths=list(paths), labels=torch.as_tensor(np.asarray(labels), dtype=torch.int64),
                         transform=transform)

    data = DataSplits(
        name="imagenet200",
        train=split(train_paths[keep], train_labels[keep], train_tf),
        val=split(train_paths[val], train_labels[val], eval_tf),
        test=split(test_paths, test_labels, eval_tf),
        n_train_classes=len(classes),
        open_set=False,
        channels=3,
        image_size=image_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        train_augment="none",
        class_names=classes,
        extras={"test_source": test_source},
    )
    if verify_files:
        check_image_files(data, dataset_path)
    return data
