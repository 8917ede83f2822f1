"""MNIST, FashionMNIST, CIFAR10 and CIFAR100 through torchvision, held in memory as uint8 tensors.

torchvision only parses the files (its on-disk layout, its download); the arrays are then taken
whole from `.data`/`.targets`, so there is no per-sample PIL decoding. Augmentation and
normalisation happen batch-wise on the device (`augment.py`) with the mean/std given here.

Splits follow the vMF paper's code: the official training set is split 85/15, class-stratified,
with `random_state=seed` (51,000/9,000 for MNIST-family, 42,500/7,500 for CIFAR at seed 1234);
the official test set is the test split.
"""

from __future__ import annotations

from typing import Sequence, Tuple, Type
from urllib.error import URLError

import numpy as np
import torch

from .base import DataSplits, TensorSplit, missing_dataset
from .splits import stratified_split

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

_MNIST_FILES = "{folder}/raw/{{train,t10k}}-images-idx3-ubyte and {{train,t10k}}-labels-idx1-ubyte"
_CIFAR10_FILES = "cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}"
_CIFAR100_FILES = "cifar-100-python/{train,test,meta}"


def _to_tensors(ds) -> Tuple[torch.Tensor, torch.Tensor]:
    """N x C x H x W uint8 images and int64 labels from a torchvision dataset's whole arrays."""
    data = ds.data
    if isinstance(data, np.ndarray):  # CIFAR: N x H x W x C numpy
        images = torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()
    else:  # MNIST family: N x H x W uint8 tensor
        images = data.unsqueeze(1).contiguous()
    labels = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
    return images, labels


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
) -> DataSplits:
    try:
        train_set = cls(root=dataset_path, train=True, download=download)
        test_set = cls(root=dataset_path, train=False, download=False)
    except (RuntimeError, URLError, OSError) as err:
        # torchvision's messages span lines and suggest download=True even when that just failed;
        # the runner prints one line naming the config keys instead (original error chained).
        fix = (
            "the download failed (offline?): put the files there and set dataset.dataset_path=DIR"
            if download
            else "set dataset.dataset_path=DIR holding them, or run online with dataset.loader.download=true"
        )
        raise missing_dataset(name, dataset_path, expected, fix) from err

    images, labels = _to_tensors(train_set)
    test_images, test_labels = _to_tensors(test_set)
    keep, val = stratified_split(labels.numpy(), val_fraction, seed)
    keep_t, val_t = torch.from_numpy(keep), torch.from_numpy(val)
    return DataSplits(
        name=name,
        train=TensorSplit(images=images[keep_t], labels=labels[keep_t]),
        val=TensorSplit(images=images[val_t], labels=labels[val_t]),
        test=TensorSplit(images=test_images, labels=test_labels),
        n_train_classes=len(train_set.classes),
        open_set=False,
        channels=int(images.shape[1]),
        image_size=int(images.shape[-1]),
        mean=tuple(mean),
        std=tuple(std),
        train_augment=train_augment,
        class_names=list(train_set.classes),
    )


def load_mnist(dataset_path: str, seed: int = 1234, download: bool = True, val_fraction: float = 0.15) -> DataSplits:
    """MNIST from `<dataset_path>/MNIST/raw/` (torchvision layout); pixels/255, no normalisation."""
    from torchvision.datasets import MNIST

    return _load(MNIST, "mnist", dataset_path, seed, download, _MNIST_FILES.format(folder="MNIST"),
                 (0.0,), (1.0,), "none", val_fraction)


def load_fashion_mnist(
    dataset_path: str, seed: int = 1234, download: bool = True, val_fraction: float = 0.15
) -> DataSplits:
    """FashionMNIST from `<dataset_path>/FashionMNIST/raw/`; pixels/255, no normalisation."""
    from torchvision.datasets import FashionMNIST

    return _load(FashionMNIST, "fashion_mnist", dataset_path, seed, download,
                 _MNIST_FILES.format(folder="FashionMNIST"), (0.0,), (1.0,), "none", val_fraction)


def _check_augment(augment: str) -> None:
    from vmf_embeddings.datasets.augment import DeviceAugment
    from vmf_embeddings.errors import ConfigError

    if augment not in DeviceAugment.KINDS:
        raise ConfigError(f"dataset.loader.augment={augment!r} is not one of {DeviceAugment.KINDS}")


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
