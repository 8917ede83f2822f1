"""MNIST / FashionMNIST / CIFAR loaders on tiny files in torchvision's own on-disk formats."""

import os
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar as tv_cifar

import dataset_fakes
from vmf_embeddings.datasets.base import DatasetMissingError
from vmf_embeddings.datasets.torchvision_sets import load_cifar10, load_cifar100, load_fashion_mnist, load_mnist


@pytest.fixture
def no_md5(monkeypatch):
    """torchvision's CIFAR checks the md5 of the real release files; the fakes cannot match it, so
    (in tests only) integrity means "the file exists" and the real parsing path runs unchanged."""
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


@pytest.mark.parametrize("loader, folder", [(load_mnist, "MNIST"), (load_fashion_mnist, "FashionMNIST")])
def test_mnist_family_from_idx_files(tmp_path, loader, folder):
    written = dataset_fakes.write_mnist(tmp_path, folder, n_train=200, n_test=30)
    data = loader(str(tmp_path), seed=1234, download=False)
    assert (len(data.train), len(data.val), len(data.test)) == (170, 30, 30)  # 85/15 of 200
    assert data.train.images.shape == (170, 1, 28, 28) and data.train.images.dtype == torch.uint8
    assert data.train.labels.dtype == torch.int64
    assert torch.bincount(data.val.labels).tolist() == [3] * 10  # stratified
    np.testing.assert_array_equal(data.test.images[:, 0].numpy(), written["t10k"][0])
    np.testing.assert_array_equal(data.test.labels.numpy(), written["t10k"][1])
    # train + val are exactly the official training images
    both = torch.cat([data.train.images, data.val.images]).flatten(1)
    ref = torch.from_numpy(written["train"][0]).flatten(1)
    assert torch.equal(torch.unique(both, dim=0), torch.unique(ref, dim=0))
    assert (data.n_train_classes, data.channels, data.image_size, data.train_augment) == (10, 1, 28, "none")
    assert tuple(data.mean) == (0.0,) and tuple(data.std) == (1.0,)


def test_cifar10_from_pickled_batches(tmp_path, no_md5):
    train_rows, train_labels = dataset_fakes.write_cifar10(tmp_path, per_batch=40, n_test=20)
    data = load_cifar10(str(tmp_path), seed=1234, download=False)
    assert (len(data.train), len(data.val), len(data.test)) == (170, 30, 20)
    assert data.train.images.shape == (170, 3, 32, 32) and data.train.images.dtype == torch.uint8
    # CHW layout: the first training row of the pickle, reshaped 3x32x32, is one of the images
    first = torch.from_numpy(train_rows[0].reshape(3, 32, 32))
    everything = torch.cat([data.train.images, data.val.images])
    assert (everything == first).flatten(1).all(1).any()
    assert data.train_augment == "cifar" and data.channels == 3 and data.image_size == 32
    assert data.mean == (0.4914, 0.4822, 0.4465) and data.std == (0.2470, 0.2435, 0.2616)
    assert data.class_names == [f"c{i}" for i in range(10)]


def test_cifar100_fine_labels(tmp_path, no_md5):
    dataset_fakes.write_cifar100(tmp_path, n_train=700, n_test=100)
    data = load_cifar100(str(tmp_path), seed=0, download=False)
    assert (len(data.train), len(data.val), len(data.test)) == (595, 105, 100)
    assert data.n_train_classes == 100 and int(data.test.labels.max()) == 99
    assert data.mean == (0.5071, 0.4865, 0.4409)


@pytest.mark.parametrize("loader, expected", [
    (load_mnist, "MNIST/raw/"), (load_cifar10, "cifar-10-batches-py/"), (load_cifar100, "cifar-100-python/"),
])
def test_missing_files_give_one_line_error(tmp_path, loader, expected):
    with pytest.raises(DatasetMissingError) as err:
        loader(str(tmp_path / "nowhere"), download=False)
    msg = str(err.value)
    assert "\n" not in msg
    assert "dataset.dataset_path=" in msg and str(tmp_path / "nowhere") in msg and expected in msg
    assert "dataset.loader.download=true" in msg


def test_failed_download_is_wrapped(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    with pytest.raises(DatasetMissingError, match="download failed") as err:
        load_cifar10(str(tmp_path), download=True)
    assert "\n" not in str(err.value) and isinstance(err.value.__cause__, URLError)
