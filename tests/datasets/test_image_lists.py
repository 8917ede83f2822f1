"""Cars196 / CUB200 / SOP on stand-ins in the release layouts: protocol, class counts, fixed
validation classes of the vMF code, transforms, list fallback, missing-data errors."""

import numpy as np
import pytest
import torch
from PIL import Image

import dataset_fakes
from vmf_embeddings.datasets.base import DatasetMissingError, FileSplit
from vmf_embeddings.datasets.files import FileSplitDataset
from vmf_embeddings.datasets.image_lists import load_cars196, load_cub200, load_sop

CARS_VAL = [29, 33, 36, 39, 40, 44, 54, 55, 57, 61, 62, 63, 78, 85, 92]
CUB_VAL = [27, 33, 35, 39, 40, 42, 56, 59, 61, 63, 68, 81, 85, 94, 98]


def _classes(data, split):
    return set(data.extras["original_labels"][split].tolist())


def _check_open_set(data, n_train, n_val, n_test):
    assert data.open_set and data.n_train_classes == n_train
    counts = {s: len(_classes(data, s)) for s in ("train", "val", "test")}
    assert counts == {"train": n_train, "val": n_val, "test": n_test}
    assert not (_classes(data, "train") & _classes(data, "val"))
    assert not (_classes(data, "train") & _classes(data, "test"))
    assert not (_classes(data, "val") & _classes(data, "test"))
    for split, k in (("train", n_train), ("val", n_val), ("test", n_test)):
        labels = getattr(data, split).labels
        assert labels.dtype == torch.int64 and labels.unique().tolist() == list(range(k))  # re-indexed 0..K-1


def test_cars196_protocol_and_transforms(cars_root):
    data = load_cars196(str(cars_root), image_size=8)
    _check_open_set(data, 83, 15, 98)
    assert sorted(_classes(data, "val")) == CARS_VAL
    assert _classes(data, "test") == set(range(98, 196))
    assert isinstance(data.train, FileSplit) and len(data.train) == 83 * 2
    assert data.class_names[0] == "Make Model 1" and len(data.class_names) == 83
    # the first image is grayscale: both pipelines still give 3 x 8 x 8 normalised float tensors
    with Image.open(data.train.paths[0]) as img:
        assert img.mode == "L"
        for transform in (data.train.transform, data.test.transform):
            x = transform(img)
            assert x.shape == (3, 8, 8) and x.dtype == torch.float32
    assert data.extras["layout"] == "archive"


def test_cub200_dml_protocol(cub_root):
    data = load_cub200(str(cub_root), image_size=8)
    _check_open_set(data, 85, 15, 100)
    assert sorted(_classes(data, "val")) == CUB_VAL
    assert len(data.train) == 85 * 4
    # CUB resizes the short side, then center-crops: a non-square image still ends up 8 x 8
    assert data.test.transform(Image.new("RGB", (20, 14))).shape == (3, 8, 8)
    assert data.train.transform(Image.new("RGB", (20, 14))).shape == (3, 8, 8)


def test_cub200_low_sample_is_seeded(cub_root):
    a = load_cub200(str(cub_root), image_size=8, samples_per_class=2, seed=5)
    assert torch.bincount(a.train.labels).tolist() == [2] * 85
    assert len(a.val) == 15 * 4 and len(a.test) == 100 * 4  # untouched
    b = load_cub200(str(cub_root), image_size=8, samples_per_class=2, seed=5)
    assert a.train.paths == b.train.paths
    others = [load_cub200(str(cub_root), image_size=8, samples_per_class=2, seed=s).train.paths for s in (6, 7, 8)]
    assert any(p != a.train.paths for p in others)


def test_cub200_classification_protocol(cub_root):
    data = load_cub200(str(cub_root), image_size=8, protocol="classification", val_fraction=1 / 3)
    assert not data.open_set and data.n_train_classes == 200
    # official train = 3 images per class -> 2 train + 1 val; official test = the 4th image
    assert torch.bincount(data.train.labels).tolist() == [2] * 200
    assert torch.bincount(data.val.labels).tolist() == [1] * 200
    assert torch.bincount(data.test.labels).tolist() == [1] * 200
    assert all(p.endswith("_0003.jpg") for p in data.test.paths)
    # closed set: one label space, equal to the original class ids here
    assert torch.equal(data.test.labels, data.extras["original_labels"]["test"])
    low = load_cub200(str(cub_root), image_size=8, protocol="classification", val_fraction=1 / 3,
                      samples_per_class=1)
    assert len(low.train) == 200 and len(low.val) == 200
    with pytest.raises(ValueError):
        load_cub200(str(cub_root), protocol="nope")


def test_sop_protocol_full_class_counts(tmp_path):
    dataset_fakes.write_sop(tmp_path)  # 11,318 + 11,316 classes, one listed image each (2 written)
    data = load_sop(str(tmp_path), image_size=8, verify_files=False)
    _check_open_set(data, 9620, 1698, 11316)
    val = np.array(sorted(_classes(data, "val")))
    assert val[:10].tolist() == [1, 2, 5, 6, 14, 18, 19, 25, 26, 43] and int(val.sum()) == 9_654_213
    x = data.train.transform(Image.open(data.train.paths[0]))
    assert x.shape == (3, 8, 8)


def test_lists_fallback_matches_archive(tmp_path):
    from vmf_embeddings.datasets.archives import read_cars196, write_lists
    from vmf_embeddings.datasets.image_lists import dml_lists

    dataset_fakes.write_cars196(tmp_path, n_images=None)
    from_archive = load_cars196(str(tmp_path), image_size=8)
    write_lists(tmp_path, dml_lists("cars196", read_cars196(tmp_path)))
    assert (tmp_path / "train.txt").read_text().splitlines()[0] == "car_ims/000001.jpg,0"  # relative paths
    (tmp_path / "cars_annos.mat").unlink()
    from_lists = load_cars196(str(tmp_path), image_size=8)
    assert from_lists.extras["layout"] == "lists"
    for split in ("train", "val", "test"):
        a, b = getattr(from_archive, split), getattr(from_lists, split)
        assert a.paths == b.paths and torch.equal(a.labels, b.labels)


@pytest.mark.parametrize("loader, name, expected", [
    (load_cars196, "cars196", "cars_annos.mat"),
    (load_cub200, "cub200", "CUB_200_2011/images.txt"),
    (load_sop, "sop", "Ebay_train.txt"),
])
def test_missing_dataset_error_is_one_line(tmp_path, loader, name, expected):
    with pytest.raises(DatasetMissingError) as err:
        loader(str(tmp_path))
    msg = str(err.value)
    assert "\n" not in msg
    assert f"dataset.dataset_path={str(tmp_path)!r}" in msg
    assert expected in msg and "train.txt" in msg
    assert f"python scripts/prepare_{name}.py DIR" in msg


def test_file_split_dataset_in_a_dataloader(cars_root):
    from vmf_embeddings.datasets.samplers import EpisodicSampler

    data = load_cars196(str(cars_root), image_size=8)
    # sample among the first 4 images
    head = FileSplit(paths=data.train.paths[:4], labels=data.train.labels[:4], transform=data.train.transform)
    sampler = EpisodicSampler(head.labels, n_episodes=3, n_classes=2, n_samples=2, seed=0)
    loader = torch.utils.data.DataLoader(FileSplitDataset(head), batch_sampler=sampler, num_workers=0)
    batches = list(loader)
    assert len(batches) == 3
    images, labels = batches[0]
    assert images.shape == (4, 3, 8, 8) and labels.tolist().count(labels[0].item()) == 2
