"""miniImageNet for few-shot learning (Ravi & Larochelle's split, as used by Prototypical Networks).

On disk, under `<dataset_path>/miniimagenet/`: `train.csv`, `val.csv`, `test.csv` (header
`filename,label`, label = the ImageNet wnid) and `images/<filename>`. The images come from ImageNet
under its license and cannot be downloaded here: `python scripts/prepare_miniimagenet.py DIR --images
JPGS --csv-dir CSVS` checks a copy you have, resizes it to 84x84 and lays it out. Sizes: 64 / 16 / 20
classes, 600 images per class.

Held in memory as uint8 N x 3 x S x S (60,000 x 3 x 84 x 84 is 1.3 GB); labels are re-indexed
0..K-1 within each split in the order the classes first appear in its CSV, `class_names` holds the
training wnids and `extras["split_class_names"]` every split's. Images not already S x S are resized
(LANCZOS, as Ravi & Larochelle's script). Decoded images are cached under
`<dataset_path>/miniimagenet/.cache/<key>.pt` (`omniglot.cached_tensors`), the key hashing the three
CSVs, `image_size` and the listed files' names and sizes.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch

from .base import DatasetInvalidError, DataSplits, TensorSplit, missing_dataset
from .omniglot import cache_key, cached_tensors
from .transforms import IMAGENET_MEAN, IMAGENET_STD

NAME = "miniimagenet"
SPLITS = ("train", "val", "test")
CACHE_FORMAT = 1
EXPECTED = "miniimagenet/{train,val,test}.csv (filename,label) and miniimagenet/images/<filename>"
PREPARE = ("run `python scripts/prepare_miniimagenet.py DIR --images JPGS --csv-dir CSVS` on your copy of the "
           "images and set dataset.dataset_path=DIR")


def read_csv(path: Path) -> List[Tuple[str, str]]:
    """(filename, wnid) rows of one Ravi-Larochelle CSV; one-line DatasetInvalidError on a bad header/row."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip() for c in rows[0]] != ["filename", "label"]:
        head = ",".join(rows[0]) if rows else "an empty file"
        raise DatasetInvalidError(f"{path}: header is {head!r}, expected 'filename,label'")
    out = []
    for n, row in enumerate(rows[1:], 2):
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise DatasetInvalidError(f"{path}:{n}: {','.join(row)!r} is not 'filename,label'")
        filename = row[0].strip()
        if "/" in filename or "\\" in filename or filename in (".", ".."):
            raise DatasetInvalidError(f"{path}:{n}: {filename!r} must be a bare file name inside images/")
        out.append((filename, row[1].strip()))
    return out


def decode_image(path: str, image_size: int) -> np.ndarray:
    """One image file -> image_size x image_size x 3 uint8 RGB."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (image_size, image_size):
            im = im.resize((image_size, image_size), Image.LANCZOS)
        return np.asarray(im, dtype=np.uint8)


def _decode_split(rows: List[Tuple[str, str]], images_dir: Path, image_size: int) -> torch.Tensor:
    out = np.empty((len(rows), image_size, image_size, 3), dtype=np.uint8)
    for i, (filename, _) in enumerate(rows):
        path = images_dir / filename
        try:
            out[i] = decode_image(str(path), image_size)
        except (OSError, ValueError) as err:
            raise DatasetInvalidError(f"dataset '{NAME}': {path} cannot be decoded "
                                      f"({' '.join(str(err).split())}); replace it and rerun") from err
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def load_miniimagenet(dataset_path: str, image_size: int = 84, cache: bool = True) -> DataSplits:
    """The Ravi-Larochelle train/val/test CSVs as class-disjoint in-memory `TensorSplit`s (module docstring).

    `cache=False` decodes the images and neither reads nor writes the cache.
    """
    image_size = int(image_size)
    if image_size < 1:
        raise DatasetInvalidError(f"dataset '{NAME}': image_size={image_size} must be >= 1")
    root = Path(os.path.expanduser(str(dataset_path))) / NAME
    images_dir = root / "images"
    csvs = {s: root / f"{s}.csv" for s in SPLITS}
    if not images_dir.is_dir() or not all(p.is_file() for p in csvs.values()):
        raise missing_dataset(NAME, dataset_path, EXPECTED, PREPARE)

    rows = {s: read_csv(p) for s, p in csvs.items()}
    owner: Dict[str, str] = {}
    sizes: Dict[str, List[int]] = {}
    for s in SPLITS:
        for wnid in dict.fromkeys(w for _, w in rows[s]):
            if wnid in owner:
                raise DatasetInvalidError(f"{csvs[owner[wnid]]} and {csvs[s]} both hold class {wnid}; "
                                          "few-shot splits must be class-disjoint")
            owner[wnid] = s
        listed = []
        for n, (filename, _) in enumerate(rows[s], 2):
            try:
                listed.append(os.stat(images_dir / filename).st_size)
            except OSError:
                raise DatasetInvalidError(f"{csvs[s]}:{n}: {images_dir / filename} is missing; {PREPARE}") from None
        sizes[s] = listed

    def build() -> Dict[str, object]:
        return {f"{s}_images": _decode_split(rows[s], images_dir, image_size) for s in SPLITS}

    if cache:
        key = cache_key(NAME, CACHE_FORMAT, image_size, *[(s, csvs[s].read_bytes(), sizes[s]) for s in SPLITS])
        decoded = cached_tensors(root / ".cache", key, build)
    else:
        decoded = build()

    splits, names = {}, {}
    for s in SPLITS:
        classes = list(dict.fromkeys(w for _, w in rows[s]))
        ids = {w: i for i, w in enumerate(classes)}
        labels = torch.tensor([ids[w] for _, w in rows[s]], dtype=torch.int64)
        splits[s] = TensorSplit(images=decoded[f"{s}_images"], labels=labels)
        names[s] = classes
    return DataSplits(
        name=NAME,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        n_train_classes=len(names["train"]),
        open_set=True,
        channels=3,
        image_size=image_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        train_augment="none",
        class_names=names["train"],
        extras={"split_class_names": names},
    )
