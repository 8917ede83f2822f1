"""Cars196, CUB200-2011 and Stanford Online Products: class-disjoint retrieval splits on disk.

Primary layout: the standard extracted archive under `dataset_path` (see `archives.py`:
Cars196 `cars_annos.mat` + `car_ims/`; CUB `CUB_200_2011/images.txt`, `image_class_labels.txt`,
`images/`; SOP `Stanford_Online_Products/Ebay_train.txt`, `Ebay_test.txt`). The splits are computed
from it at load time (cheap: only metadata is read). When no archive is found, `train.txt`,
`val.txt`, `test.txt` `path,label` lists in `dataset_path` are read instead — what
`scripts/prepare_<name>.py` writes next to the archive and what the original code consumed.

Protocol (google-research/vmf_embeddings' preparation scripts): the first half of the classes forms the
training pool, the second half the test set; validation = a class-disjoint subset of the pool drawn with the frozen
`RandomState(1234).choice` (15 of 98 Cars classes, 15 of 100 CUB classes, 1,698 of 11,318 SOP
classes), leaving 83 / 85 / 9,620 training classes. Labels are re-indexed 0..K-1 per split; the
dataset's own 0-based class ids are kept in `extras["original_labels"][split]`.

CUB also offers HPN's closed-set classification protocol (`protocol="classification"`: official
train/test split, all 200 classes) and its low-sample variant (`samples_per_class`).

`verify_files=True` (default) opens every listed image's header at load time (`files.check_image_files`)
and refuses missing or unreadable files in one line; `+dataset.loader.verify_files=false` skips it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch

from .archives import ImageTable, read_cars196, read_cub200, read_lists, read_sop
from .base import DataSplits, FileSplit, missing_dataset
from .files import check_image_files
from .splits import (VALIDATION_CLASS_SEED, reindex, reindex_to, stratified_split, subsample_per_class,
                     validation_classes)
from .transforms import IMAGENET_MEAN, IMAGENET_STD, dml_transforms, hpn_transforms

Lists = Dict[str, Tuple[np.ndarray, np.ndarray]]

# name -> (archive reader, expected files for the error message, default n_val_classes)
_DATASETS: Dict[str, Tuple[Callable[[Path], Optional[ImageTable]], str, int]] = {
    "cars196": (read_cars196, "cars_annos.mat and car_ims/ (extracted Stanford Cars archive)", 15),
    "cub200": (
        read_cub200,
        "CUB_200_2011/images.txt, image_class_labels.txt, train_test_split.txt and images/ (extracted CUB archive)",
        15,
    ),
    "sop": (read_sop, "Stanford_Online_Products/Ebay_train.txt, Ebay_test.txt and the image folders", 1698),
}


#: datasets whose training pool is the official train list (SOP's Ebay_train), not the first half of the classes
POOL_FROM_TRAIN_LIST = {"sop"}


def pool_mask(name: str, table: ImageTable) -> np.ndarray:
    """Images of the training pool: the first half of the class ids (Cars, CUB) or Ebay_train (SOP)."""
    if name in POOL_FROM_TRAIN_LIST:
        return ~table.is_test
    n_classes = int(table.labels.max()) + 1
    return table.labels < n_classes // 2


def dml_lists(name: str, table: ImageTable, n_val_classes: Optional[int] = None,
              val_class_seed: int = VALIDATION_CLASS_SEED) -> Lists:
    """{split: (paths, original labels)} of the class-disjoint protocol; shared with the prepare scripts."""
    n_val = _DATASETS[name][2] if n_val_classes is None else n_val_classes
    pool = pool_mask(name, table)
    pool_classes = np.unique(table.labels[pool])
    if n_val >= len(pool_classes):
        raise ValueError(f"{name}: {n_val} validation classes requested but the training pool has only "
                         f"{len(pool_classes)} classes")
    val_classes = pool_classes[validation_classes(len(pool_classes), n_val, val_class_seed)]
    is_val = pool & np.isin(table.labels, val_classes)
    index = {"train": np.flatnonzero(pool & ~is_val), "val": np.flatnonzero(is_val), "test": np.flatnonzero(~pool)}
    return {split: (table.paths[i], table.labels[i]) for split, i in index.items()}


def _missing(name: str, dataset_path: str) -> Exception:
    expected = f"{_DATASETS[name][1]}, or train.txt/val.txt/test.txt path,label lists"
    fix = f"run `python scripts/prepare_{name}.py DIR` and set dataset.dataset_path=DIR"
    return missing_dataset(name, dataset_path, expected, fix)


def _file_splits(
    name: str,
    lists: Lists,
    transforms: Tuple[Callable, Callable],
    image_size: int,
    open_set: bool,
    class_names: Optional[list],
    extras: dict,
    dataset_path: str,
    verify_files: bool,
) -> DataSplits:
    train_tf, eval_tf = transforms
    train_classes = np.unique(lists["train"][1])
    splits, originals = {}, {}
    for split, (paths, labels) in lists.items():
        # Open-set splits get their own 0..K-1; closed-set splits share the training label space.
        new_labels = reindex(labels)[0] if open_set else reindex_to(labels, train_classes)
        transform = train_tf if split == "train" else eval_tf
        splits[split] = FileSplit(paths=list(paths), labels=new_labels, transform=transform)
        originals[split] = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    names = [class_names[c] for c in train_classes] if class_names else None
    data = DataSplits(
        name=name,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        n_train_classes=len(train_classes),
        open_set=open_set,
        channels=3,
        image_size=image_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        train_augment="none",
        class_names=names,
        extras={"original_labels": originals, **extras},
    )
    if verify_files:
        check_image_files(data, dataset_path)
    return data


def _subsample_train(lists: Lists, samples_per_class: Optional[int], seed: int) -> Lists:
    if samples_per_class is None:
        return lists
    paths, labels = lists["train"]
    keep = subsample_per_class(labels, int(samples_per_class), seed)
    return {**lists, "train": (paths[keep], labels[keep])}


def _load_open_set(name: str, dataset_path: str, seed: int, image_size: int, n_val_classes: Optional[int],
                   val_class_seed: int, samples_per_class: Optional[int] = None,
                   verify_files: bool = True) -> DataSplits:
    root = Path(dataset_path)
    table = _DATASETS[name][0](root)
    if table is not None:
        lists, layout, class_names = dml_lists(name, table, n_val_classes, val_class_seed), "archive", table.class_names
    else:
        lists, layout, class_names = read_lists(root), "lists", None
        if lists is None:
            raise _missing(name, dataset_path)
    lists = _subsample_train(lists, samples_per_class, seed)
    return _file_splits(name, lists, dml_transforms(name, image_size), image_size, True, class_names,
                        {"layout": layout}, dataset_path, verify_files)


def load_cars196(dataset_path: str, seed: int = 1234, image_size: int = 224, n_val_classes: int = 15,
                 val_class_seed: int = VALIDATION_CLASS_SEED, verify_files: bool = True) -> DataSplits:
    """Cars196: 83 train / 15 val / 98 test classes (class-disjoint)."""
    return _load_open_set("cars196", dataset_path, seed, image_size, n_val_classes, val_class_seed,
                          verify_files=verify_files)


def load_sop(dataset_path: str, seed: int = 1234, image_size: int = 224, n_val_classes: int = 1698,
             val_class_seed: int = VALIDATION_CLASS_SEED, verify_files: bool = True) -> DataSplits:
    """Stanford Online Products: 9,620 train / 1,698 val / 11,316 test classes (class-disjoint)."""
    return _load_open_set("sop", dataset_path, seed, image_size, n_val_classes, val_class_seed,
                          verify_files=verify_files)


def load_cub200(
    dataset_path: str,
    seed: int = 1234,
    image_size: int = 224,
    protocol: str = "dml",
    samples_per_class: Optional[int] = None,
    n_val_classes: int = 15,
    val_class_seed: int = VALIDATION_CLASS_SEED,
    val_fraction: float = 0.1,
    verify_files: bool = True,
) -> DataSplits:
    """CUB200-2011 under one of two protocols.

    protocol="dml" (vMF paper): 85 train / 15 val / 100 test classes, class-disjoint, open-set.
    protocol="classification" (HPN): official train/test images of all 200 classes; validation is a
        seeded stratified `val_fraction` of the official train images (HPN had none and looked at test).
    samples_per_class: keep at most this many (seeded) training images per class — HPN's low-sample
        experiment; validation and test are untouched.
    """
    if protocol == "dml":
        return _load_open_set("cub200", dataset_path, seed, image_size, n_val_classes, val_class_seed,
                              samples_per_class, verify_files)
    if protocol != "classification":
        raise ValueError(f"cub200 protocol must be 'dml' or 'classification', got {protocol!r}")
    table = read_cub200(Path(dataset_path))
    if table is None or not table.is_test.any():
        raise missing_dataset(
            "cub200", dataset_path,
            _DATASETS["cub200"][1] + " (the classification protocol needs train_test_split.txt)",
            "run `python scripts/prepare_cub200.py DIR` and set dataset.dataset_path=DIR",
        )
    official_train = np.flatnonzero(~table.is_test)
    keep, val = stratified_split(table.labels[official_train], val_fraction, seed)
    index = {"train": official_train[np.sort(keep)], "val": official_train[np.sort(val)],
             "test": np.flatnonzero(table.is_test)}
    lists = {split: (table.paths[i], table.labels[i]) for split, i in index.items()}
    lists = _subsample_train(lists, samples_per_class, seed)
    return _file_splits("cub200", lists, hpn_transforms(image_size), image_size, False, table.class_names,
                        {"layout": "archive", "protocol": "classification"}, dataset_path, verify_files)
