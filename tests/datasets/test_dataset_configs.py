"""conf/dataset/*.yaml and conf/sampler/*.yaml: required keys, `_target_`s, and that every loader
returns what its yaml declares (n_train_classes, open_set, channels, image_size)."""

import inspect
import os
from pathlib import Path

import pytest
import torch
import torchvision.datasets.cifar as tv_cifar
from hydra.utils import get_method, instantiate
from omegaconf import OmegaConf

import dataset_fakes

CONF = Path(__file__).resolve().parents[2] / "conf"
DATASETS = sorted(p.stem for p in (CONF / "dataset").glob("*.yaml"))
REQUIRED = {"digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "cars196", "cub200", "sop",
            "imagenet200", "omniart", "synthetic"}


def _compose(name, **overrides):
    """The dataset node as the runner sees it (under `dataset`), with `key=value` overrides."""
    root = OmegaConf.create({"dataset": OmegaConf.load(CONF / "dataset" / f"{name}.yaml")})
    for key, value in overrides.items():
        OmegaConf.update(root, f"dataset.{key}", value)
    return root.dataset


def test_all_required_datasets_present():
    assert REQUIRED <= set(DATASETS)


@pytest.mark.parametrize("name", DATASETS)
def test_dataset_yaml_contract(name):
    cfg = _compose(name)
    for key in ("name", "dataset_path", "n_train_classes", "open_set", "loader", "channels", "image_size"):
        assert key in cfg, key
    assert cfg.name == name
    assert isinstance(cfg.n_train_classes, int) and isinstance(cfg.open_set, bool)
    target = cfg.loader._target_
    assert target.startswith("vmf_embeddings.datasets.") and target.split(".")[-1].startswith("load_")
    fn = get_method(target)
    kwargs = {k: v for k, v in OmegaConf.to_container(cfg.loader, resolve=True).items() if k != "_target_"}
    inspect.signature(fn).bind(**kwargs)  # every yaml option is a real parameter
    assert kwargs["dataset_path"] == cfg.dataset_path


def _check(cfg, data):
    assert data.n_train_classes == cfg.n_train_classes
    assert data.open_set == cfg.open_set and data.channels == cfg.channels and data.image_size == cfg.image_size
    assert data.name == cfg.name or cfg.name == "cub200_hpn"


@pytest.mark.parametrize("name, overrides", [
    ("digits", {}),
    ("synthetic", {}),
    ("synthetic", {"open_set": True, "n_train_classes": 4}),
])
def test_bundled_loaders_match_yaml(name, overrides):
    cfg = _compose(name, **overrides)
    _check(cfg, instantiate(cfg.loader))


def test_on_disk_loaders_match_yaml(tmp_path, cars_root, cub_root, monkeypatch):
    # CIFAR: torchvision checks md5 sums of the real release; accept any existing file (test only).
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
    dataset_fakes.write_mnist(tmp_path, "MNIST", 100, 10)
    dataset_fakes.write_mnist(tmp_path, "FashionMNIST", 100, 10)
    dataset_fakes.write_cifar10(tmp_path, per_batch=20, n_test=10)
    dataset_fakes.write_cifar100(tmp_path, n_train=700, n_test=100)
    dataset_fakes.write_sop(tmp_path / "sop", n_images=1)
    roots = {"mnist": tmp_path, "fashion_mnist": tmp_path, "cifar10": tmp_path, "cifar100": tmp_path,
             "cars196": cars_root, "cub200": cub_root, "cub200_hpn": cub_root, "sop": tmp_path / "sop"}
    for name, root in roots.items():
        declared, extra = _compose(name), {}
        if "download" in declared.loader:
            extra["loader.download"] = False
        if declared.image_size == 224:
            extra["image_size"] = 8  # tiny images; the loader reads it through ${..image_size}
        if name == "sop":
            extra["loader.verify_files"] = False  # 22,634 listed images, one written
        if name == "cub200_hpn":
            extra["loader.val_fraction"] = 1 / 3  # 3 official-train images per class in the stand-in
        cfg = _compose(name, dataset_path=str(root), **extra)
        _check(cfg, instantiate(cfg.loader))


def test_hpn_loaders_match_yaml(tmp_path):
    """ImageNet-200 and OmniArt at their declared class counts (200 wnids, 46 styles)."""
    wnids = [f"n{i:08d}" for i in range(200)]
    dataset_fakes.write_image_folder(tmp_path / "in200" / "train", wnids, per_class=2, size=(4, 4))
    (tmp_path / "in200" / "test" / wnids[0]).mkdir(parents=True)
    cfg = _compose("imagenet200", dataset_path=str(tmp_path / "in200"), **{"loader.val_fraction": 0.5})
    _check(cfg, instantiate(cfg.loader))

    train = [(i, 1400 + i, f"school_{i % 46}") for i in range(92)]
    dataset_fakes.write_omniart(tmp_path / "omniart", train, [(100, 1500, "school_0")])
    cfg = _compose("omniart", dataset_path=str(tmp_path / "omniart"), image_size=8, **{"loader.val_fraction": 0.5})
    _check(cfg, instantiate(cfg.loader))


@pytest.mark.parametrize("name", ["episodic", "random"])
def test_sampler_yaml_instantiates_like_the_runner(name):
    cfg = OmegaConf.load(CONF / "sampler" / f"{name}.yaml")
    assert cfg.name == name and cfg._target_.startswith("vmf_embeddings.datasets.samplers.")
    node = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "name"])  # the runner drops `name`
    labels = torch.arange(300) % 12
    sampler = instantiate(node, labels=labels, seed=0, _convert_="all")
    batch = next(iter(sampler))
    assert batch.dtype == torch.int64
    expected = cfg.n_classes * cfg.n_samples if name == "episodic" else cfg.batch_size
    assert len(batch) == expected
