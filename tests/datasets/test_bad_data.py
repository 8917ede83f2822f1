"""Bad data on disk is refused while the splits are built (or, for pixel data, when the batch is decoded)
with a one-line UserError naming the file: each case is written in the dataset's own on-disk format."""

import os
import pickle
from argparse import Namespace

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar as tv_cifar
from PIL import Image

import dataset_fakes
from vmf_embeddings.datasets.archives import read_cub200
from vmf_embeddings.datasets.base import (DatasetInvalidError, DatasetMissingError, DataSplits, FileSplit,
                                          TensorSplit)
from vmf_embeddings.datasets.files import FileSplitDataset, ImageDecodeError
from vmf_embeddings.datasets.image_lists import load_cars196, load_cub200, load_sop
from vmf_embeddings.datasets.imagenet200 import load_imagenet200
from vmf_embeddings.datasets.omniart import load_omniart
from vmf_embeddings.datasets.torchvision_sets import load_cifar10, load_cifar100, load_fashion_mnist, load_mnist
from vmf_embeddings.errors import UserError

WNIDS = ["n01443537", "n01629819", "n01641577"]


def _one_line(excinfo, *needles) -> str:
    """The error is a UserError whose message is one line containing every needle."""
    error = excinfo.value
    msg = str(error)
    assert isinstance(error, UserError), type(error)
    assert "\n" not in msg, msg
    for needle in needles:
        assert str(needle) in msg, (needle, msg)
    return msg


@pytest.fixture
def no_md5(monkeypatch):
    """As in test_torchvision_sets: the fakes cannot match the release md5s, so "intact" means "exists"."""
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


# ---------------------------------------------------------------- MNIST family (IDX files)
@pytest.mark.parametrize("loader, folder", [(load_mnist, "MNIST"), (load_fashion_mnist, "FashionMNIST")])
@pytest.mark.parametrize("prefix", ["train", "t10k"])
def test_idx_label_outside_class_range(tmp_path, loader, folder, prefix):
    written = dataset_fakes.write_mnist(tmp_path, folder, n_train=200, n_test=30)
    labels = written[prefix][1].copy()
    labels[[7, 9]] = 12  # a 10-class set
    labels_file = tmp_path / folder / "raw" / f"{prefix}-labels-idx1-ubyte"
    dataset_fakes.write_idx_labels(labels_file, labels)
    with pytest.raises(DatasetInvalidError) as err:
        loader(str(tmp_path), download=False)
    msg = _one_line(err, labels_file, "2 label(s) outside the 10 classes", "first 12 at index 7", "0..9")
    assert msg == f"{labels_file}: 2 label(s) outside the 10 classes (first 12 at index 7); class ids must be 0..9"


def test_idx_image_label_count_mismatch(tmp_path):
    """600 images and 500 labels: torchvision reads both whole, so training would silently drop 100 images."""
    dataset_fakes.write_mnist(tmp_path, "MNIST", n_train=10, n_test=10)
    raw = tmp_path / "MNIST" / "raw"
    dataset_fakes.write_idx_images(raw / "train-images-idx3-ubyte", np.zeros((600, 28, 28), np.uint8))
    dataset_fakes.write_idx_labels(raw / "train-labels-idx1-ubyte", np.arange(500) % 10)
    with pytest.raises(DatasetInvalidError) as err:
        load_mnist(str(tmp_path), download=False)
    _one_line(err, raw / "train-images-idx3-ubyte", "600 images", raw / "train-labels-idx1-ubyte", "500 labels")


def test_idx_file_truncated_is_named_not_reported_missing(tmp_path):
    dataset_fakes.write_mnist(tmp_path, "MNIST", n_train=200, n_test=30)
    labels_file = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    labels_file.write_bytes(labels_file.read_bytes()[:-50])
    with pytest.raises(DatasetInvalidError) as err:
        load_mnist(str(tmp_path), download=False)
    assert not isinstance(err.value, DatasetMissingError)
    _one_line(err, labels_file, "not a valid IDX label file", "declares 200 values (208 bytes)", "has 158")


def test_idx_wrong_magic(tmp_path):
    dataset_fakes.write_mnist(tmp_path, "MNIST", n_train=20, n_test=10)
    images_file = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    dataset_fakes.write_idx_labels(images_file, np.zeros(10, np.uint8))  # a labels file where images belong
    with pytest.raises(DatasetInvalidError) as err:
        load_mnist(str(tmp_path), download=False)
    _one_line(err, images_file, "not a valid IDX image file", "magic number 0x00000801, expected 0x00000803")


# ---------------------------------------------------------------- CIFAR (pickled batches)
def _rewrite_pickle(path, **changes):
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    entry.update(changes)
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)


def test_cifar10_label_out_of_range_names_the_batch(tmp_path, no_md5):
    dataset_fakes.write_cifar10(tmp_path, per_batch=40, n_test=20)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    _rewrite_pickle(batch, labels=[i % 10 for i in range(39)] + [10])
    with pytest.raises(DatasetInvalidError) as err:
        load_cifar10(str(tmp_path), download=False)
    msg = _one_line(err, batch, "1 label(s) outside the 10 classes (first 10 at index 39)")
    assert msg.startswith(f"{batch}: ")


def test_cifar10_batch_with_fewer_labels_than_images(tmp_path, no_md5):
    dataset_fakes.write_cifar10(tmp_path, per_batch=40, n_test=20)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    _rewrite_pickle(batch, labels=[i % 10 for i in range(35)])
    with pytest.raises(DatasetInvalidError) as err:
        load_cifar10(str(tmp_path), download=False)
    assert _one_line(err) == f"{batch}: 40 images but 35 labels; replace it with the release's file"


def test_cifar10_negative_label_in_test_batch(tmp_path, no_md5):
    dataset_fakes.write_cifar10(tmp_path, per_batch=40, n_test=20)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    _rewrite_pickle(batch, labels=[-1] + [i % 10 for i in range(1, 20)])
    with pytest.raises(DatasetInvalidError) as err:
        load_cifar10(str(tmp_path), download=False)
    _one_line(err, f"{batch}: 1 negative label(s) (first -1 at index 0); class ids start at 0")


def test_cifar100_float_labels(tmp_path, no_md5):
    dataset_fakes.write_cifar100(tmp_path, n_train=700, n_test=100)
    train = tmp_path / "cifar-100-python" / "train"
    _rewrite_pickle(train, fine_labels=[float(i % 100) + 0.5 for i in range(700)])
    with pytest.raises(DatasetInvalidError) as err:
        load_cifar100(str(tmp_path), download=False)
    _one_line(err, f"{train}: labels must be integer class ids, got dtype float64")


def test_cifar10_unreadable_batch(tmp_path, no_md5):
    dataset_fakes.write_cifar10(tmp_path, per_batch=40, n_test=20)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(b"this is not a pickle" * 10)
    with pytest.raises(DatasetInvalidError) as err:
        load_cifar10(str(tmp_path), download=False)
    _one_line(err, batch, "not a readable CIFAR batch")


# ---------------------------------------------------------------- file-backed splits: images
def _noise_jpeg(path, size=64, seed=0):
    """A JPEG large enough that cutting its tail leaves the header intact but the pixel data short."""
    rng = np.random.RandomState(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.randint(0, 256, size=(size, size, 3)).astype(np.uint8)).save(path, format="JPEG")
    return path


def _imagenet200(root):
    dataset_fakes.write_image_folder(root / "train", WNIDS, per_class=4)
    dataset_fakes.write_image_folder(root / "test", WNIDS, per_class=1)
    return sorted((root / "train").rglob("*.JPEG"))


def test_partly_extracted_archive_lists_missing_files(tmp_path):
    dataset_fakes.write_cars196(tmp_path, n_images=4)  # 392 images listed, 4 on disk
    with pytest.raises(DatasetMissingError) as err:
        load_cars196(str(tmp_path), image_size=8)
    msg = _one_line(err, "388 of 392 listed image files are missing", "car_ims/000005.jpg", "car_ims/000006.jpg",
                    f"dataset.dataset_path={str(tmp_path)!r}")
    assert "car_ims/000008.jpg" not in msg  # only the first few paths
    assert "(train 162, val 30, test 196)" in msg
    # the check can be switched off (the loader then only reads metadata)
    assert len(load_cars196(str(tmp_path), image_size=8, verify_files=False).train) == 166


def test_omniart_missing_image(tmp_path):
    train = [(i, 1500 + i, "dutch" if i % 2 else "french") for i in range(6)]
    dataset_fakes.write_omniart(tmp_path, train, [(30, 1610, "dutch")])
    (tmp_path / "train" / "3.jpg").unlink()
    with pytest.raises(DatasetMissingError) as err:
        load_omniart(str(tmp_path), image_size=8, val_fraction=0.5)
    _one_line(err, "1 of 7 listed image files are missing", str(tmp_path / "train" / "3.jpg"))


def test_corrupt_image_header_refused_at_build_time(tmp_path):
    bad = _imagenet200(tmp_path)[5]
    bad.write_bytes(b"\xff\xd8 not really a jpeg" * 8)
    with pytest.raises(DatasetInvalidError) as err:
        load_imagenet200(str(tmp_path), image_size=8, val_fraction=0.25)
    msg = _one_line(err, "1 of 15 image files cannot be read as images", f"{bad} (not a recognised image format)")
    assert msg.startswith("dataset 'imagenet200': ")


def test_truncated_pixel_data_named_when_the_batch_is_decoded(tmp_path):
    bad = _noise_jpeg(_imagenet200(tmp_path)[5])
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) * 2 // 3])
    with Image.open(bad) as img:  # the header is fine, so the build-time check passes ...
        assert img.size == (64, 64)
    loaded = load_imagenet200(str(tmp_path), image_size=8, val_fraction=0.25)
    split_name = "train" if str(bad) in loaded.train.paths else "val"
    split = getattr(loaded, split_name)
    dataset = FileSplitDataset(split)
    i = split.paths.index(str(bad))
    assert dataset[(i + 1) % len(split)][0].shape == (3, 8, 8)
    with pytest.raises(ImageDecodeError) as err:  # ... and decoding the batch names the file and the split
        dataset.__getitems__([i])
    msg = _one_line(err, f"dataset 'imagenet200' {split_name} split: cannot decode image {bad}",
                    "image file is truncated")
    assert isinstance(err.value, DatasetInvalidError)

    # Raised in a DataLoader worker, torch wraps it (ExceptionWrapper) and re-raises it in the main process
    # as ImageDecodeError("Caught ... Original Traceback ..."): the message is still the same one line.
    # (Done here without a worker process: a real one that raised takes torch 5 s to shut down.)
    from torch._utils import ExceptionWrapper

    try:
        dataset[i]
    except ImageDecodeError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(ImageDecodeError) as worker_err:
        wrapped.reraise()
    assert _one_line(worker_err) == msg


def test_decode_error_of_a_bare_file_split(tmp_path):
    path = tmp_path / "x.jpg"
    path.write_bytes(b"garbage")
    split = FileSplit(paths=[str(path)], labels=torch.zeros(1, dtype=torch.int64), transform=lambda im: im)
    with pytest.raises(ImageDecodeError) as err:
        FileSplitDataset(split)[0]
    assert _one_line(err).startswith(f"cannot decode image {path} (not a recognised image format)")


# ---------------------------------------------------------------- file-backed splits: label files
def test_cub_class_id_zero(tmp_path):
    dataset_fakes.write_cub200(tmp_path, n_classes=4, per_class=2, n_images=0)
    labels_file = tmp_path / "CUB_200_2011" / "image_class_labels.txt"
    lines = labels_file.read_text().splitlines()
    lines[2] = "3 0"
    labels_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetInvalidError) as err:
        load_cub200(str(tmp_path), image_size=8)
    assert _one_line(err) == f"{labels_file}:3: class id 0 is below 1 (class ids in this file start at 1)"


def test_cub_class_id_not_an_integer(tmp_path):
    dataset_fakes.write_cub200(tmp_path, n_classes=4, per_class=2, n_images=0)
    labels_file = tmp_path / "CUB_200_2011" / "image_class_labels.txt"
    labels_file.write_text(labels_file.read_text().replace("4 2\n", "4 2.5\n"))
    with pytest.raises(DatasetInvalidError) as err:
        load_cub200(str(tmp_path), image_size=8)
    assert _one_line(err) == f"{labels_file}:4: class id '2.5' is not an integer"


def test_sop_class_id_zero(tmp_path):
    dataset_fakes.write_sop(tmp_path, n_train_classes=6, n_test_classes=4, n_images=0)
    ebay = tmp_path / "Stanford_Online_Products" / "Ebay_train.txt"
    lines = ebay.read_text().splitlines()
    lines[3] = lines[3].replace(" 3 ", " 0 ", 1)
    ebay.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetInvalidError) as err:
        load_sop(str(tmp_path), image_size=8)
    _one_line(err, f"{ebay}:4: class id 0 is below 1")


def test_cars_class_zero_in_annotations(tmp_path):
    from scipy.io import loadmat, savemat

    dataset_fakes.write_cars196(tmp_path, n_classes=4, n_images=0)
    mat_path = tmp_path / "cars_annos.mat"
    mat = loadmat(str(mat_path))
    mat["annotations"][0, 2]["class"] = np.array([[0]], dtype=np.uint8)
    savemat(str(mat_path), {"annotations": mat["annotations"], "class_names": mat["class_names"]})
    with pytest.raises(DatasetInvalidError) as err:
        load_cars196(str(tmp_path), image_size=8)
    _one_line(err, f"{mat_path} (annotations.class): 1 label(s) below 1 (first 0 at index 2)")


@pytest.mark.parametrize("label, expected", [
    ("-2", "train.txt:2: class id -2 is below 0 (class ids in this file start at 0)"),
    ("three", "train.txt:2: class id 'three' is not an integer"),
])
def test_list_file_bad_label(tmp_path, label, expected):
    for split in ("train", "val", "test"):
        (tmp_path / f"{split}.txt").write_text("a.jpg,0\n")
    (tmp_path / "train.txt").write_text(f"a.jpg,0\nb.jpg,{label}\n")
    with pytest.raises(DatasetInvalidError) as err:
        load_cars196(str(tmp_path), image_size=8, verify_files=False)
    assert _one_line(err) == f"{tmp_path / expected}"


def test_prepare_script_prints_bad_label_file_in_one_line(tmp_path, capsys):
    from vmf_embeddings.datasets import prepare

    dataset_fakes.write_cub200(tmp_path, n_classes=4, per_class=2, n_images=0)
    labels_file = tmp_path / "CUB_200_2011" / "image_class_labels.txt"
    labels_file.write_text(labels_file.read_text().replace("1 1\n", "1 x\n"))
    args = Namespace(root=tmp_path, url=None, archive=None, skip_download=True, no_verify=False)
    assert prepare.run(args, "cub200", [], read_cub200, "CUB_200_2011/images.txt") == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: {labels_file}:1: class id 'x' is not an integer"]


# ---------------------------------------------------------------- every DataSplits, whatever its loader
def _tensor(labels, n_images=None, dtype=torch.int64):
    labels = torch.as_tensor(labels, dtype=dtype)
    n = len(labels) if n_images is None else n_images
    return TensorSplit(images=torch.zeros(n, 1, 2, 2, dtype=torch.uint8), labels=labels)


def _splits(train=None, val=None, test=None, **kwargs):
    ok = _tensor([0, 1, 2])
    return DataSplits(name="toy", train=train or ok, val=val or ok, test=test or ok, n_train_classes=3, **kwargs)


@pytest.mark.parametrize("split, kwargs, expected", [
    ("train", {"labels": [0.0, 1.0, 2.0], "dtype": torch.float32},
     "dataset 'toy' train split: labels must be integer class ids, got dtype torch.float32"),
    ("val", {"labels": [0, 3, 1]},
     "dataset 'toy' val split: 1 label(s) outside the 3 classes (first 3 at index 1); class ids must be 0..2"),
    ("test", {"labels": [0, -1, -4]},
     "dataset 'toy' test split: 2 negative label(s) (first -1 at index 1); class ids start at 0"),
    ("test", {"labels": [0, 1], "n_images": 3},
     "dataset 'toy' test split: 3 images but 2 labels"),
])
def test_datasplits_checks_every_split(split, kwargs, expected):
    with pytest.raises(DatasetInvalidError) as err:
        _splits(**{split: _tensor(**kwargs)})
    assert _one_line(err) == expected


def test_datasplits_open_set_and_unseen_label():
    wide = _tensor([0, 5, 9])  # open-set val/test have their own label space
    assert len(_splits(val=wide, test=wide, open_set=True).test) == 3
    with pytest.raises(DatasetInvalidError):
        _splits(test=_tensor([0, -1]), open_set=True)
    kept = _splits(test=_tensor([0, -1, 2]), unseen_label=-1)  # OmniArt's unseen_test_styles="keep"
    assert kept.test.labels.tolist() == [0, -1, 2]
    with pytest.raises(DatasetInvalidError):
        _splits(train=_tensor([0, -1, 2]), unseen_label=-1)  # never in train


def test_datasplits_file_split_counts_and_name():
    split = FileSplit(paths=["a.jpg", "b.jpg"], labels=torch.tensor([0, 1, 2]), transform=lambda im: im)
    with pytest.raises(DatasetInvalidError) as err:
        _splits(val=split)
    assert _one_line(err) == "dataset 'toy' val split: 2 image paths but 3 labels"
    good = FileSplit(paths=["a.jpg"], labels=torch.tensor([1]), transform=lambda im: im,
                     targets=torch.tensor([1.0]))
    assert _splits(train=good).train.name == "dataset 'toy' train split"
