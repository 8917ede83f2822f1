"""MNIST, FashionMNIST, CIFAR10 and CIFAR100 through torchvision, held in memory as uint8 tensors.

torchvision only parses the files (its on-disk layout, its download); the arrays are then taken
whole from `.data`/`.targets`, so there is no per-sample PIL decoding. Augmentation and
normalisation happen batch-wise on the device (`augment.py`) with the mean/std given here.

Splits follow the vMF paper's code: the official training set is split 85/15, class-stratified,
with `random_state=seed` (51,000/9,000 for MNIST-family, 42,500/7,500 for CIFAR at seed 1234);
the official test set is the test split.

Bad files are refused at load time in one line naming the file (`DatasetInvalidError`): an IDX file
whose header disagrees with its size, an unreadable CIFAR pickle, an images file and a labels file
holding different counts (torchvision would silently train on the shorter), labels that are not
integers or fall outside the class range (e.g. 12 in MNIST's 10 classes). The checks run on the whole
arrays; only when one fails are the CIFAR batches re-read one by one to name the offending file.
"""

from __future__ import annotations

import os
import pickle
from typing import List, Optional, Sequence, Tuple, Type, Union
from urllib.error import URLError

import numpy as np
import torch

from .base import DatasetInvalidError, DataSplits, TensorSplit, check_split, missing_dataset
from .splits import stratified_split

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

_MNIST_FILES = "{folder}/raw/{{train,t10k}}-images-idx3-ubyte and {{train,t10k}}-labels-idx1-ubyte"
_CIFAR10_FILES = "cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}"
_CIFAR100_FILES = "cifar-100-python/{train,test,meta}"


def _arrays(ds) -> Tuple[torch.Tensor, np.ndarray]:
    """N x C x H x W uint8 images and the labels as parsed (dtype unchecked) from a torchvision dataset."""
    data = ds.data
    if isinstance(data, np.ndarray):  # CIFAR: N x H x W x C numpy
        images = torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()
    else:  # MNIST family: N x H x W uint8 tensor
        images = data.unsqueeze(1).contiguous()
    targets = ds.targets
    labels = targets.numpy() if isinstance(targets, torch.Tensor) else np.asarray(targets)
    return images, labels


# ---------------------------------------------------------------- files of each torchvision class
def _is_idx(cls: Type) -> bool:
    return hasattr(cls, "resources")  # MNIST family (IDX files); CIFAR classes list pickles instead


def _idx_files(cls: Type, root: str, train: bool) -> Tuple[str, str]:
    """(images file, labels file) of one MNIST-family split, as torchvision's `raw_folder` names them."""
    raw = os.path.join(root, cls.__name__, "raw")
    prefix = "train" if train else "t10k"
    return os.path.join(raw, f"{prefix}-images-idx3-ubyte"), os.path.join(raw, f"{prefix}-labels-idx1-ubyte")


def _cifar_files(cls: Type, root: str, train: bool) -> List[str]:
    return [os.path.join(root, cls.base_folder, name) for name, _ in (cls.train_list if train else cls.test_list)]


def _idx_problem(path: str, ndim: int) -> Optional[str]:
    """Why `path` is not a uint8 IDX file of `ndim` dimensions whose size matches its header (None: it is)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(4 + 4 * ndim)
    if len(head) < 4:
        return f"{size} bytes, too short for an IDX header"
    magic = int.from_bytes(head[:4], "big")
    if magic != 0x0800 + ndim:
        return f"magic number 0x{magic:08x}, expected 0x{0x0800 + ndim:08x} (uint8, {ndim}-D)"
    if len(head) < 4 + 4 * ndim:
        return f"{size} bytes, too short for a {ndim}-D IDX header"
    dims = [int.from_bytes(head[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if size != expected:
        return f"the header declares {' x '.join(map(str, dims))} values ({expected} bytes) but the file has {size}"
    return None


def _read_cifar_batch(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """(data rows, labels) of one CIFAR pickle as torchvision reads it; one-line error when unreadable."""
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        data = np.asarray(entry["data"])
        labels = entry["labels"] if "labels" in entry else entry["fine_labels"]
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        reason = f"no {err} entry" if isinstance(err, KeyError) else " ".join(f"{type(err).__name__}: {err}".split())
        raise DatasetInvalidError(f"{path}: not a readable CIFAR batch ({reason}); replace it with the release's "
                                  "file") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetInvalidError(f"{path}: 'data' has shape {tuple(data.shape)}, expected N x 3072 (32x32 RGB rows); "
                                  "replace it with the release's file")
    return data, np.asarray(labels)


def _diagnose(cls: Type, root: str) -> Optional[DatasetInvalidError]:
    """After torchvision failed: the one-line error of the first file that is present but malformed."""
    try:
        for train in (True, False):
            if _is_idx(cls):
                for path, ndim in zip(_idx_files(cls, root, train), (3, 1)):
                    problem = _idx_problem(path, ndim) if os.path.isfile(path) else None
                    if problem is not None:
                        kind = "image" if ndim == 3 else "label"
                        return DatasetInvalidError(f"{path}: not a valid IDX {kind} file: {problem}; replace it "
                                                   "(delete it and rerun with dataset.loader.download=true)")
            else:
                for path in _cifar_files(cls, root, train):
                    if os.path.isfile(path):
                        _read_cifar_batch(path)
    except DatasetInvalidError as err:
        return err
    except OSError:
        return None
    return None


def _check_files(ds, images: torch.Tensor, labels: np.ndarray, n_classes: int) -> None:
    """Counts and labels of one official split, the error naming its file(s)."""
    cls, root = type(ds), ds.root
    if _is_idx(cls):
        images_file, labels_file = _idx_files(cls, root, ds.train)
        check_split(TensorSplit(images=images, labels=labels), n_classes, labels_file, images_source=images_file)
        return
    files = _cifar_files(cls, root, ds.train)
    try:
        check_split(TensorSplit(images=images, labels=labels), n_classes,
                    f"{os.path.join(root, cls.base_folder)} ({', '.join(os.path.basename(f) for f in files)})")
    except DatasetInvalidError:
        for path in files:  # name the batch file at fault (only on this error path: re-reads the pickles)
            data, batch_labels = _read_cifar_batch(path)
            check_split(TensorSplit(images=data, labels=batch_labels), n_classes, path,
                        fix="replace it with the release's file")
        raise


def _load(
    cls: Type,
    name: str,
    dataset_path: str,
    seed: int,
    download: bool,
    expected: str,
    mean: Sequence[float],
    std: Sequence[float],
    train_augment: str,
    val_fraction: float,
    train_augment_params: Optional[dict] = None,
) -> DataSplits:
    try:
        train_set = cls(root=dataset_path, train=True, download=download)
        test_set = cls(root=dataset_path, train=False, download=False)
    except (RuntimeError, URLError, OSError) as err:
        # A file that is present but malformed is named as such (torchvision reports "not found").
        bad = _diagnose(cls, os.path.expanduser(str(dataset_path)))
        if bad is not None:
            raise bad from err
        # torchvision's messages span lines and suggest download=True even when that just failed;
        # the runner prints one line naming the config keys instead (original error chained).
        fix = (
            "the download failed (offline?): put the files there and set dataset.dataset_path=DIR"
            if download
            else "set dataset.dataset_path=DIR holding them, or run online with dataset.loader.download=true"
        )
        raise missing_dataset(name, dataset_path, expected, fix) from err
    except (AssertionError, TypeError, ValueError, KeyError, IndexError, EOFError, pickle.UnpicklingError) as err:
        bad = _diagnose(cls, os.path.expanduser(str(dataset_path)))
        if bad is not None:
            raise bad from err
        reason = " ".join(f"{type(err).__name__}: {err}".split())
        raise DatasetInvalidError(f"dataset '{name}': the files under dataset.dataset_path={dataset_path!r} cannot "
                                  f"be parsed ({reason}); replace them with the release's") from err

    n_classes = len(train_set.classes)
    images, raw_labels = _arrays(train_set)
    _check_files(train_set, images, raw_labels, n_classes)
    test_images, raw_test_labels = _arrays(test_set)
    _check_files(test_set, test_images, raw_test_labels, n_classes)
    labels = torch.from_numpy(raw_labels.astype(np.int64))
    test_labels = torch.from_numpy(raw_test_labels.astype(np.int64))
    keep, val = stratified_split(labels.numpy(), val_fraction, seed)
    keep_t, val_t = torch.from_numpy(keep), torch.from_numpy(val)
    return DataSplits(
        name=name,
        train=TensorSplit(images=images[keep_t], labels=labels[keep_t]),
        val=TensorSplit(images=images[val_t], labels=labels[val_t]),
        test=TensorSplit(images=test_images, labels=test_labels),
        n_train_classes=n_classes,
        open_set=False,
        channels=int(images.shape[1]),
        image_size=int(images.shape[-1]),
        mean=tuple(mean),
        std=tuple(std),
        train_augment=train_augment,
        train_augment_params=dict(train_augment_params or {}),
        class_names=list(train_set.classes),
    )


def load_mnist(
    dataset_path: str,
    seed: int = 1234,
    download: bool = True,
    val_fraction: float = 0.15,
    augment: str = "none",
    affine_degrees: Union[float, Sequence[float]] = 40.0,
    affine_scale: Sequence[float] = (1.3, 1.3),
) -> DataSplits:
    """MNIST from `<dataset_path>/MNIST/raw/` (torchvision layout); pixels/255, no normalisation.
    augment: "none" (default) or "affine" (RandomAffine(affine_degrees, scale=affine_scale) on the device;
    the defaults are metric-guided prototypes' MNIST recipe), or any other `DeviceAugment` kind."""
    from torchvision.datasets import MNIST

    params = _check_augment(augment, affine_degrees, affine_scale)
    return _load(MNIST, "mnist", dataset_path, seed, download, _MNIST_FILES.format(folder="MNIST"),
                 (0.0,), (1.0,), augment, val_fraction, params)


def load_fashion_mnist(
    dataset_path: str,
    seed: int = 1234,
    download: bool = True,
    val_fraction: float = 0.15,
    augment: str = "none",
    affine_degrees: Union[float, Sequence[float]] = 40.0,
    affine_scale: Sequence[float] = (1.3, 1.3),
) -> DataSplits:
    """FashionMNIST from `<dataset_path>/FashionMNIST/raw/`; pixels/255, no normalisation; augment as load_mnist's."""
    from torchvision.datasets import FashionMNIST

    params = _check_augment(augment, affine_degrees, affine_scale)
    return _load(FashionMNIST, "fashion_mnist", dataset_path, seed, download,
                 _MNIST_FILES.format(folder="FashionMNIST"), (0.0,), (1.0,), augment, val_fraction, params)


def _check_augment(augment: str, affine_degrees: Union[float, Sequence[float], None] = None,
                   affine_scale: Optional[Sequence[float]] = None) -> dict:
    """Refuse an unknown `dataset.loader.augment` (and, for "affine", bad affine_degrees / affine_scale) in one
    line; return the `DeviceAugment` keyword arguments the loader's DataSplits carries (`train_augment_params`)."""
    from vmf_embeddings.datasets.augment import DeviceAugment, affine_ranges
    from vmf_embeddings.errors import ConfigError

    if augment not in DeviceAugment.KINDS:
        raise ConfigError(f"dataset.loader.augment={augment!r} is not one of {DeviceAugment.KINDS}")
    if augment != "affine" or (affine_degrees is None and affine_scale is None):
        return {}
    try:
        degrees, scale = affine_ranges(affine_degrees, affine_scale)
    except ValueError as err:
        raise ConfigError(f"dataset.loader.affine_{err}") from None
    return {"degrees": degrees, "scale": scale}


def load_cifar10(
    dataset_path: str, seed: int = 1234, download: bool = True, val_fraction: float = 0.15, augment: str = "cifar"
) -> DataSplits:
    """CIFAR10 from `<dataset_path>/cifar-10-batches-py/`; augmentation on the device: "cifar" (crop, flip,
    cutout: the vMF paper's recipe), "crop_flip" (HPN's, no cutout) or "none"."""
    from torchvision.datasets import CIFAR10

    _check_augment(augment)

    return _load(CIFAR10, "cifar10", dataset_path, seed, download, _CIFAR10_FILES,
                 CIFAR10_MEAN, CIFAR10_STD, augment, val_fraction)


def load_cifar100(
    dataset_path: str, seed: int = 1234, download: bool = True, val_fraction: float = 0.15, augment: str = "cifar"
) -> DataSplits:
    """CIFAR100 (fine labels) from `<dataset_path>/cifar-100-python/`; augmentation as load_cifar10's."""
    from torchvision.datasets import CIFAR100

    _check_augment(augment)

    return _load(CIFAR100, "cifar100", dataset_path, seed, download, _CIFAR100_FILES,
                 CIFAR100_MEAN, CIFAR100_STD, augment, val_fraction)
