"""A torch `Dataset` view of a `FileSplit`, so DataLoader workers decode images in parallel, and the
build-time check of a file-backed dataset's images.

The batch samplers yield LongTensors of indices; this class accepts them whole through
`__getitems__` (torch >= 2.2 calls it with the index list of a batch) as well as one at a time.
A batch may come as a `SeededBatch` (indices plus a seed): the worker then seeds torch and `random` with it
before running the random transforms, so each batch's augmentation depends on its seed only, not on which
persistent worker (data_source.BatchSource keeps them across epochs) draws it or how many batches that
worker decoded before.

`check_image_files` (called by the on-disk loaders unless `verify_files=false`) opens every listed
image once — `PIL.Image.open` reads only the header, so this costs tens of microseconds per file, a few
seconds for SOP's 120k images from the page cache — and refuses missing files or unreadable headers in
one line. An image whose header is fine but whose pixel data is broken (e.g. truncated) can only be
found by decoding it: `FileSplitDataset` then raises `ImageDecodeError` naming the file and the split.
"""

from __future__ import annotations

import logging
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from .base import DatasetInvalidError, DatasetMissingError, DataSplits, FileSplit

log = logging.getLogger(__name__)

#: files checked in one thread; larger datasets are probed by a thread pool (the check is I/O bound cold)
_SERIAL_PROBES = 2000
_PROBE_THREADS = 8
_EXAMPLES = 3


class ImageDecodeError(DatasetInvalidError):
    """An image of a file-backed split cannot be decoded when its batch is loaded."""


def _reason(err: BaseException) -> str:
    if isinstance(err, UnidentifiedImageError):
        return "not a recognised image format"
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def load_image(path: str) -> Image.Image:
    """Open and fully decode an image as RGB, closing the file handle immediately."""
    with Image.open(path) as img:
        return img.convert("RGB")


class SeededBatch:
    """The index batch of a DataLoader worker with the seed its random transforms start from."""

    __slots__ = ("indices", "seed")

    def __init__(self, indices: Sequence[int], seed: int) -> None:
        self.indices, self.seed = indices, int(seed)

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        return iter(self.indices)


class FileSplitDataset(Dataset):
    """Items are (image C x H x W float32, label int64) or, with `with_targets`, plus the float target."""

    def __init__(self, split: FileSplit, with_targets: bool = False) -> None:
        self.split = split
        self.with_targets = with_targets and split.targets is not None

    def __len__(self) -> int:
        return len(self.split)

    def _load(self, path: str) -> Image.Image:
        try:
            return load_image(path)
        except Exception as err:  # noqa: BLE001 - any failure to open/decode is a bad file, named in one line
            where = f"{self.split.name}: " if getattr(self.split, "name", "") else ""
            raise ImageDecodeError(
                f"{where}cannot decode image {path} ({_reason(err)}); replace the file from the original archive"
            ) from err

    def __getitem__(self, index: Union[int, torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        i = int(index)
        image = self.split.transform(self._load(self.split.paths[i]))
        item = (image, self.split.labels[i])
        if self.with_targets:
            item = item + (self.split.targets[i],)
        return item

    def __getitems__(self, indices: Union[Sequence[int], SeededBatch]) -> list:
        if isinstance(indices, SeededBatch):  # in a DataLoader worker: its RNGs serve this batch alone
            torch.manual_seed(indices.seed)
            random.seed(indices.seed)
            indices = indices.indices
        return [self[i] for i in indices]


def _probe(path: str) -> Optional[BaseException]:
    """None when `path` opens as an image (header only), else the error (FileNotFoundError when absent)."""
    try:
        with Image.open(path):
            return None
    except Exception as err:  # noqa: BLE001 - reported, with the file, by check_image_files
        return err


def _breakdown(counts: Dict[str, int]) -> str:
    return ", ".join(f"{split} {n}" for split, n in counts.items() if n)


def check_image_files(data: DataSplits, dataset_path: str = "") -> None:
    """Refuse, in one line, a file-backed dataset with listed images that are missing (naming the count,
    per split, and the first few paths) or whose header PIL cannot read (the same, with the reason).

    Every file of every `FileSplit` is opened once, header only; the time taken is logged.
    """
    start = time.perf_counter()
    owner: Dict[str, str] = {}
    for split_name in ("train", "val", "test"):
        split = getattr(data, split_name)
        if isinstance(split, FileSplit):
            for path in split.paths:
                owner.setdefault(str(path), split_name)
    paths = list(owner)
    if len(paths) > _SERIAL_PROBES:
        with ThreadPoolExecutor(_PROBE_THREADS) as pool:
            errors = list(pool.map(_probe, paths, chunksize=256))
    else:
        errors = [_probe(p) for p in paths]

    missing: List[str] = []
    unreadable: List[Tuple[str, BaseException]] = []
    for path, err in zip(paths, errors):
        if err is None:
            continue
        if isinstance(err, FileNotFoundError) or (isinstance(err, OSError) and not os.path.exists(path)):
            missing.append(path)
        else:
            unreadable.append((path, err))
    where = f" under dataset.dataset_path={str(dataset_path)!r}" if dataset_path else ""
    if missing:
        counts = {s: 0 for s in ("train", "val", "test")}
        for path in missing:
            counts[owner[path]] += 1
        raise DatasetMissingError(
            f"dataset '{data.name}': {len(missing)} of {len(paths)} listed image files are missing "
            f"({_breakdown(counts)}), e.g. {', '.join(missing[:_EXAMPLES])}; extract the complete dataset{where}"
        )
    if unreadable:
        counts = {s: 0 for s in ("train", "val", "test")}
        for path, _ in unreadable:
            counts[owner[path]] += 1
        first, err = unreadable[0]
        others = [p for p, _ in unreadable[1:_EXAMPLES]]
        examples = ", ".join([f"{first} ({_reason(err)})"] + others)
        raise DatasetInvalidError(
            f"dataset '{data.name}': {len(unreadable)} of {len(paths)} image files cannot be read as images "
            f"({_breakdown(counts)}), e.g. {examples}; replace them from the original archive{where}"
        )
    log.info("dataset '%s': checked %d image files (present, headers readable) in %.1fs", data.name, len(paths),
             time.perf_counter() - start)
