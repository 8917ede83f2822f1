"""ImageNet-200 (class folders, HPN and Tiny-ImageNet layouts) and OmniArt (CSV + images)."""

import pytest
import torch
from PIL import Image

import dataset_fakes
from vmf_embeddings.datasets.base import DatasetMissingError
from vmf_embeddings.datasets.imagenet200 import load_imagenet200
from vmf_embeddings.datasets.omniart import load_omniart

WNIDS = ["n01443537", "n01629819", "n01641577"]


def test_imagenet200_hpn_layout(tmp_path):
    dataset_fakes.write_image_folder(tmp_path / "train", WNIDS, per_class=10)
    dataset_fakes.write_image_folder(tmp_path / "test", WNIDS, per_class=2)
    data = load_imagenet200(str(tmp_path), image_size=8, seed=0)
    assert data.n_train_classes == 3 and data.class_names == WNIDS and not data.open_set
    assert (len(data.train), len(data.val), len(data.test)) == (27, 3, 6)
    assert torch.bincount(data.val.labels).tolist() == [1, 1, 1]  # stratified hold-out of train
    assert not set(data.train.paths) & set(data.val.paths)
    assert data.extras["test_source"] == "test/"
    assert all("/test/" in p for p in data.test.paths)
    assert data.test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    with Image.open(data.train.paths[0]) as img:
        assert data.train.transform(img).shape == (3, 8, 8) and data.test.transform(img).shape == (3, 8, 8)


def test_imagenet200_tiny_imagenet_layout(tmp_path):
    """Nested train/<wnid>/images/, labelled val via val_annotations.txt, unlabelled test/images/."""
    dataset_fakes.write_image_folder(tmp_path / "train", WNIDS, per_class=10, nested=True)
    dataset_fakes.write_image(tmp_path / "test" / "images" / "test_0.JPEG")
    lines = []
    for i, wnid in enumerate(WNIDS * 2):
        dataset_fakes.write_image(tmp_path / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t8\t8")
    (tmp_path / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    data = load_imagenet200(str(tmp_path), image_size=8)
    assert data.extras["test_source"] == "val/val_annotations.txt"
    assert len(data.train) + len(data.val) == 30 and len(data.test) == 6
    assert data.test.labels.tolist() == [0, 1, 2, 0, 1, 2]


def test_imagenet200_missing(tmp_path):
    with pytest.raises(DatasetMissingError) as err:
        load_imagenet200(str(tmp_path))
    assert "\n" not in str(err.value) and "train/<wnid>" in str(err.value) and str(tmp_path) in str(err.value)


def _omniart_rows():
    train = [(i, 1500 + 10 * i, "dutch") for i in range(6)]
    train += [(10 + i, 1800 + i, "french") for i in range(4)]
    train += [(20, 1650, "flemish")]  # single image: must stay in train
    train += [(21, "", "dutch")]  # no year: dropped
    test = [(30, 1610, "dutch"), (31, 1820, "french"), (32, 1900, "catalan")]  # catalan unseen in train
    return train, test


def test_omniart_targets_and_styles(tmp_path):
    train, test = _omniart_rows()
    dataset_fakes.write_omniart(tmp_path, train, test)
    data = load_omniart(str(tmp_path), image_size=8, val_fraction=0.2, seed=0)
    assert data.class_names == ["dutch", "flemish", "french"] and data.n_train_classes == 3
    assert len(data.train) + len(data.val) == 11 and len(data.val) == 2
    assert data.train.paths.count(str(tmp_path / "train" / "20.jpg")) == 1
    for split in (data.train, data.val, data.test):
        assert split.targets.dtype == torch.float32 and split.targets.shape == split.labels.shape
    assert data.test.targets.tolist() == [1610.0, 1820.0] and data.test.labels.tolist() == [0, 2]
    assert data.extras["unseen_test_styles"] == {"count": 1, "policy": "drop"}
    assert data.extras["rows_dropped"]["train"] == 1
    assert data.extras["year_range"] == (1500.0, 1803.0)
    # the year of each train image is the CSV's (raw years, never encoded)
    year_of = {str(tmp_path / "train" / f"{i}.jpg"): float(y) for i, y, _ in train if y != ""}
    assert all(year_of[p] == t for p, t in zip(data.train.paths, data.train.targets.tolist()))
    with Image.open(data.test.paths[0]) as img:
        assert data.test.transform(img).shape == (3, 8, 8)

    kept = load_omniart(str(tmp_path), image_size=8, val_fraction=0.2, unseen_test_styles="keep")
    assert kept.test.labels.tolist() == [0, 2, -1]


def test_omniart_missing(tmp_path):
    with pytest.raises(DatasetMissingError) as err:
        load_omniart(str(tmp_path))
    assert "\n" not in str(err.value) and "train_complete.csv" in str(err.value)
