"""Oxford 102 Flowers, Oxford-IIIT Pet and Stanford Dogs (`datasets/finegrained.py`) and their prepare scripts,
on tiny stand-ins written in each release's real on-disk layout (tiny JPEGs, .mat files with the official keys
and shapes, the official list files). No network: the prepare scripts get archives through --archive or
file:// URLs, with the table entries patched to the stand-ins' digests."""

import hashlib
import importlib.util
import io
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from scipy.io import savemat
from torchvision import transforms as T

from vmf_embeddings.datasets import prepare
from vmf_embeddings.datasets.base import DatasetInvalidError, DatasetMissingError
from vmf_embeddings.datasets.finegrained import (finegrained_transforms, load_dogs, load_flowers102, load_pets)

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf" / "dataset"


def _jpeg(seed: int = 0) -> bytes:
    rng = np.random.RandomState(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.randint(0, 256, size=(6, 8, 3)).astype(np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


JPEG = _jpeg()


def _write(path: Path, data: bytes = JPEG) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# ---------------------------------------------------------------------------------------------- stand-ins

FLOWERS_PER_CLASS = {"trnid": 1, "valid": 1, "tstid": 2}


def write_flowers(root: Path, images: bool = True) -> np.ndarray:
    """102 classes, 1 train / 1 val / 2 test images each, in shuffled file order; returns the file labels."""
    n_per = sum(FLOWERS_PER_CLASS.values())
    labels = np.repeat(np.arange(1, 103), n_per)
    rng = np.random.RandomState(0)
    labels = labels[rng.permutation(len(labels))]
    labels[[0, labels.tolist().index(57)]] = labels[[labels.tolist().index(57), 0]]  # image 1 is class 57
    ids = {key: [] for key in FLOWERS_PER_CLASS}
    for c in range(1, 103):
        members = (np.flatnonzero(labels == c) + 1).tolist()
        ids["trnid"].append(members[0])
        ids["valid"].append(members[1])
        ids["tstid"].extend(members[2:])
    root.mkdir(parents=True, exist_ok=True)
    # Official shapes and dtypes: labels 1 x 8189 uint8, ids 1 x k uint16.
    savemat(str(root / "imagelabels.mat"), {"labels": labels.reshape(1, -1).astype(np.uint8)})
    savemat(str(root / "setid.mat"), {k: np.asarray(v, dtype=np.uint16).reshape(1, -1) for k, v in ids.items()})
    if images:
        for i in range(1, len(labels) + 1):
            _write(root / "jpg" / f"image_{i:05d}.jpg")
    return labels


PET_BREEDS = [f"Breed{c:02d}" if c < 12 else f"breed_{c:02d}" for c in range(37)]  # cats capitalised, as released


def write_pets(root: Path, trainval_per_class: int = 10, test_per_class: int = 2) -> None:
    """37 breeds; CLASS-ID of breed c is 37 - c (not alphabetical), comment lines at the top."""
    lines = {"trainval": ["#Image CLASS-ID SPECIES BREED-ID", "#ID: 1:37 Class ids"], "test": []}
    for c, breed in enumerate(PET_BREEDS):
        class_id, species = 37 - c, 1 if c < 12 else 2
        for n in range(trainval_per_class + test_per_class):
            image = f"{breed}_{n + 1}"
            split = "trainval" if n < trainval_per_class else "test"
            lines[split].append(f"{image} {class_id} {species} {c % 12 + 1}")
            _write(root / "images" / f"{image}.jpg")
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split, rows in lines.items():
        (root / "annotations" / f"{split}.txt").write_text("\n".join(rows) + "\n")


def _cell(paths):
    cell = np.empty((len(paths), 1), dtype=object)
    for i, path in enumerate(paths):
        cell[i, 0] = np.array([path])
    return cell


def write_dogs(root: Path, train_per_class: int = 10, test_per_class: int = 1, images: bool = True) -> None:
    """120 breeds (folders `n<wnid>-<breed>`), label of folder c is c + 1, official .mat keys and shapes."""
    rows = {"train": ([], []), "test": ([], [])}
    for c in range(120):
        folder = f"n{2085620 + c:08d}-Breed_{c}"
        for n in range(train_per_class + test_per_class):
            rel = f"{folder}/n{2085620 + c:08d}_{n}.jpg"
            split = "train" if n < train_per_class else "test"
            rows[split][0].append(rel)
            rows[split][1].append(c + 1)
            if images:
                _write(root / "Images" / rel)
    root.mkdir(parents=True, exist_ok=True)
    for split, (files, labels) in rows.items():
        savemat(str(root / f"{split}_list.mat"), {
            "file_list": _cell(files),
            "annotation_list": _cell([f[:-4] for f in files]),
            "labels": np.asarray(labels, dtype=np.float64).reshape(-1, 1),
        })


@pytest.fixture(scope="module")
def flowers_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("flowers102")
    write_flowers(root)
    return root


@pytest.fixture(scope="module")
def pets_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pets")
    write_pets(root)
    return root


@pytest.fixture(scope="module")
def dogs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("dogs")
    write_dogs(root)
    return root


def _counts(labels: torch.Tensor, n: int) -> np.ndarray:
    return np.bincount(labels.numpy(), minlength=n)


# ---------------------------------------------------------------------------------------------- loaders


def test_flowers_official_split_and_labels(flowers_root):
    data = load_flowers102(str(flowers_root), image_size=8)
    assert (len(data.train), len(data.val), len(data.test)) == (102, 102, 204)
    assert data.n_train_classes == 102 and not data.open_set and data.channels == 3 and data.image_size == 8
    assert data.name == "flowers102" and data.extras["layout"] == "official"
    assert (_counts(data.train.labels, 102) == 1).all() and (_counts(data.val.labels, 102) == 1).all()
    assert (_counts(data.test.labels, 102) == 2).all()
    assert data.train.labels.dtype == torch.int64 and int(data.train.labels.min()) == 0
    # labels are the file label - 1 (official index), not order of appearance
    from scipy.io import loadmat

    labels = loadmat(str(flowers_root / "imagelabels.mat"), squeeze_me=True)["labels"]
    for split in (data.train, data.val, data.test):
        for path, label in zip(split.paths, split.labels.tolist()):
            image_id = int(Path(path).stem.split("_")[1])
            assert label == int(labels[image_id - 1]) - 1
    first = [Path(p).name for p in data.train.paths].index("image_00001.jpg")
    assert int(data.train.labels[first]) == 56  # image 1 is of class 57: label 56, whatever the order
    assert int(data.train.labels[0]) == 0  # trnid lists class 1 first


def test_pets_stratified_validation_disjoint_from_train(pets_root):
    data = load_pets(str(pets_root), image_size=8)
    assert (len(data.train), len(data.val), len(data.test)) == (333, 37, 74)
    assert data.n_train_classes == 37 and not data.open_set
    assert (_counts(data.val.labels, 37) == 1).all() and (_counts(data.train.labels, 37) == 9).all()
    assert (_counts(data.test.labels, 37) == 2).all()
    assert not set(data.train.paths) & set(data.val.paths)
    trainval = (pets_root / "annotations" / "trainval.txt").read_text().split("\n")
    listed = {str(pets_root / "images" / f"{line.split()[0]}.jpg") for line in trainval if line and line[0] != "#"}
    assert set(data.train.paths) | set(data.val.paths) == listed
    # official CLASS-ID - 1: breed c has class id 37 - c
    for path, label in zip(data.train.paths, data.train.labels.tolist()):
        breed = Path(path).stem.rsplit("_", 1)[0]
        assert label == 37 - PET_BREEDS.index(breed) - 1
    assert data.class_names[36] == PET_BREEDS[0] and data.class_names[0] == PET_BREEDS[36]
    again = load_pets(str(pets_root), image_size=8, verify_files=False)
    assert again.val.paths == data.val.paths  # seeded
    other = load_pets(str(pets_root), seed=7, image_size=8, verify_files=False)
    assert other.val.paths != data.val.paths and (_counts(other.val.labels, 37) == 1).all()


def test_dogs_stratified_validation_disjoint_from_train(dogs_root):
    data = load_dogs(str(dogs_root), image_size=8)
    assert (len(data.train), len(data.val), len(data.test)) == (1080, 120, 120)
    assert data.n_train_classes == 120 and not data.open_set and data.name == "dogs"
    assert (_counts(data.val.labels, 120) == 1).all() and (_counts(data.test.labels, 120) == 1).all()
    assert not set(data.train.paths) & set(data.val.paths)
    for path, label in zip(data.val.paths, data.val.labels.tolist()):
        assert Path(path).parent.name == f"n{2085620 + label:08d}-Breed_{label}"
        assert Path(path).parent.parent == dogs_root / "Images"
    assert data.class_names[5] == "Breed_5"


@pytest.mark.parametrize("name, folder", [("flowers102", "flowers-102"), ("pets", "oxford-iiit-pet")])
def test_torchvision_parent_folder_is_accepted(tmp_path, name, folder):
    write = {"flowers102": write_flowers, "pets": write_pets}[name]
    load = {"flowers102": load_flowers102, "pets": load_pets}[name]
    write(tmp_path / folder)
    data = load(str(tmp_path), image_size=8)
    assert data.extras["layout"] == "torchvision"
    assert all(p.startswith(str(tmp_path / folder)) for p in data.test.paths)


@pytest.mark.parametrize("name, load", [("flowers102", load_flowers102), ("pets", load_pets), ("dogs", load_dogs)])
def test_missing_dataset_is_one_line(tmp_path, name, load):
    with pytest.raises(DatasetMissingError) as info:
        load(str(tmp_path / "nowhere"))
    message = str(info.value)
    assert "\n" not in message and "dataset.dataset_path=" in message and str(tmp_path / "nowhere") in message
    assert f"python scripts/prepare_{name}.py DIR" in message
    assert {"flowers102": "setid.mat", "pets": "annotations/trainval.txt", "dogs": "train_list.mat"}[name] in message


def test_missing_image_is_named_unless_verification_is_off(tmp_path):
    write_dogs(tmp_path, train_per_class=2, test_per_class=1, images=False)
    with pytest.raises(DatasetMissingError, match="listed image files are missing") as info:
        load_dogs(str(tmp_path), image_size=8, val_fraction=0.5)
    assert "\n" not in str(info.value)
    data = load_dogs(str(tmp_path), image_size=8, val_fraction=0.5, verify_files=False)
    assert (len(data.train), len(data.val), len(data.test)) == (120, 120, 120)


def test_bad_class_ids_are_refused_naming_the_file(tmp_path):
    write_pets(tmp_path, trainval_per_class=2, test_per_class=1)
    path = tmp_path / "annotations" / "test.txt"
    path.write_text(path.read_text().replace(" 37 1 ", " 38 1 ", 1))
    with pytest.raises(DatasetInvalidError, match="outside the 37 classes") as info:
        load_pets(str(tmp_path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)

    flowers = tmp_path / "flowers"
    labels = write_flowers(flowers, images=False)
    labels[3] = 0
    savemat(str(flowers / "imagelabels.mat"), {"labels": labels.reshape(1, -1).astype(np.uint8)})
    with pytest.raises(DatasetInvalidError, match="imagelabels.mat"):
        load_flowers102(str(flowers))


def test_flip_only_in_training():
    train, test = finegrained_transforms(8)
    assert any(isinstance(t, T.RandomHorizontalFlip) for t in train.transforms)
    assert not any(isinstance(t, T.RandomHorizontalFlip) for t in test.transforms)
    assert [t.size for t in test.transforms if isinstance(t, T.Resize)] == [(8, 8)]  # square resize
    assert not any(isinstance(t, (T.RandomResizedCrop, T.CenterCrop)) for t in test.transforms)
    pixels = np.zeros((10, 16, 3), dtype=np.uint8)
    pixels[:, :8] = 255  # bright left half
    image = Image.fromarray(pixels)
    torch.manual_seed(0)
    evals = [test(image) for _ in range(8)]
    assert all(torch.equal(e, evals[0]) for e in evals) and evals[0].shape == (3, 8, 8)
    assert evals[0][:, :, 0].mean() > evals[0][:, :, -1].mean()
    flipped = {bool(train(image)[:, :, 0].mean() < train(image)[:, :, -1].mean()) for _ in range(30)}
    assert flipped == {True, False}


@pytest.mark.parametrize("name", ["flowers102", "pets", "dogs"])
def test_yaml_instantiates_to_the_declared_dataset(name, flowers_root, pets_root, dogs_root):
    root = {"flowers102": flowers_root, "pets": pets_root, "dogs": dogs_root}[name]
    cfg = OmegaConf.create({"dataset": OmegaConf.load(CONF / f"{name}.yaml")}).dataset
    assert cfg.name == name and cfg.open_set is False and cfg.channels == 3 and cfg.image_size == 224
    assert cfg.loader.verify_files is True
    cfg.dataset_path, cfg.image_size = str(root), 8
    data = instantiate(cfg.loader)
    assert data.n_train_classes == cfg.n_train_classes == {"flowers102": 102, "pets": 37, "dogs": 120}[name]
    assert data.name == name and data.image_size == 8 and data.open_set is False


# ---------------------------------------------------------------------------------------------- prepare scripts


def _script(name):
    spec = importlib.util.spec_from_file_location(f"prepare_{name}", REPO / "scripts" / f"prepare_{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tar(archive: Path, root: Path, members) -> Path:
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz" if archive.name.endswith("gz") else "w") as tf:
        for member in members:
            tf.add(root / member, arcname=member)
    return archive


def _patch_digests(monkeypatch, files):
    for path in files:
        data = path.read_bytes()
        monkeypatch.setitem(prepare.ARCHIVES, path.name,
                            replace(prepare.ARCHIVES[path.name], md5=hashlib.md5(data).hexdigest()))


def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("urlopen must not be called")

    monkeypatch.setattr(prepare.urllib.request, "urlopen", refuse)


@pytest.mark.parametrize("name", ["flowers102", "pets", "dogs"])
def test_help_works_offline(name):
    out = subprocess.run([sys.executable, str(REPO / "scripts" / f"prepare_{name}.py"), "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--archive" in out.stdout and "--no-verify" in out.stdout


@pytest.mark.parametrize("name, files", [
    ("flowers102", ["102flowers.tgz", "imagelabels.mat", "setid.mat"]),
    ("pets", ["images.tar.gz", "annotations.tar.gz"]),
    ("dogs", ["images.tar", "lists.tar"]),
])
def test_table_entries(name, files):
    script = _script(name)
    urls = prepare.default_urls(name)
    assert script.NAME == name and [prepare.url_filename(u) for u in urls] == files
    import torchvision.datasets.flowers102 as tv_flowers
    import torchvision.datasets.oxford_iiit_pet as tv_pets

    published = {f: md5 for f, md5 in tv_flowers.Flowers102._file_dict.values()}
    published.update({prepare.url_filename(url): md5 for url, md5 in tv_pets.OxfordIIITPet._RESOURCES})
    for url in urls:
        entry = prepare.ARCHIVES[prepare.url_filename(url)]
        assert entry.dataset == name and entry.url == url and entry.source and entry.sha256 is None
        assert entry.md5 == published.get(entry.filename)  # torchvision's md5, or none (Stanford Dogs)
        assert entry.verifiable == (name != "dogs")


def test_prepare_flowers_from_archives(tmp_path, monkeypatch, capsys):
    _no_network(monkeypatch)
    staging = tmp_path / "staging"
    write_flowers(staging)
    served = tmp_path / "served"
    tgz = _tar(served / "102flowers.tgz", staging, ["jpg"])
    mats = []
    for mat in ("imagelabels.mat", "setid.mat"):
        (served / mat).write_bytes((staging / mat).read_bytes())
        mats.append(served / mat)
    _patch_digests(monkeypatch, [tgz, *mats])
    root = tmp_path / "root"
    args = [str(root)] + [a for f in (tgz, *mats) for a in ("--archive", str(f))]
    assert _script("flowers102").main(args) == 0
    out = capsys.readouterr().out
    assert "flowers102: train 102 images / 102 classes, val 102 images / 102 classes, test 204 images" in out
    assert (root / "jpg" / "image_00001.jpg").is_file() and (root / "setid.mat").is_file()
    assert len(load_flowers102(str(root), image_size=8).test) == 204
    # a second run finds the files in place and fetches nothing
    assert _script("flowers102").main([str(root)]) == 0


def test_prepare_pets_download_verified_and_wrong_file_refused(tmp_path, monkeypatch, capsys):
    staging = tmp_path / "staging"
    write_pets(staging, trainval_per_class=10, test_per_class=1)
    served = tmp_path / "served"
    images = _tar(served / "images.tar.gz", staging, ["images"])
    annotations = _tar(served / "annotations.tar.gz", staging, ["annotations"])
    root = tmp_path / "root"
    urls = ["--url", images.as_uri(), "--url", annotations.as_uri()]
    # against the real table (torchvision's md5s) the stand-in is refused, in one line, and nothing is kept
    assert _script("pets").main([str(root), *urls]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: download of images.tar.gz") and "md5" in err[0]
    assert list(root.iterdir()) == []
    _patch_digests(monkeypatch, [images, annotations])
    assert _script("pets").main([str(root), *urls]) == 0
    assert "pets: train 333 images / 37 classes, val 37 images / 37 classes, test 37" in capsys.readouterr().out
    assert (root / "annotations" / "trainval.txt").is_file() and (root / "images.tar.gz").is_file()


def test_prepare_dogs_requires_no_verify(tmp_path, monkeypatch, capsys):
    _no_network(monkeypatch)
    staging = tmp_path / "staging"
    write_dogs(staging, train_per_class=10, test_per_class=1)
    served = tmp_path / "served"
    images = _tar(served / "images.tar", staging, ["Images"])
    lists = _tar(served / "lists.tar", staging, ["train_list.mat", "test_list.mat"])
    root = tmp_path / "root"
    archives = ["--archive", str(images), "--archive", str(lists)]
    assert _script("dogs").main([str(root), *archives]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "no published checksum for images.tar" in err[0] and "--no-verify" in err[0]
    assert _script("dogs").main([str(root), *archives, "--no-verify"]) == 0
    out = capsys.readouterr().out
    assert "dogs: train 1080 images / 120 classes, val 120 images / 120 classes, test 120 images" in out
    assert f"dataset=dogs dataset.dataset_path={root.resolve()}" in out


def test_prepare_reports_an_incomplete_folder(tmp_path, capsys):
    write_dogs(tmp_path, train_per_class=10, test_per_class=1, images=False)
    (tmp_path / "Images").mkdir()
    assert _script("dogs").main([str(tmp_path), "--skip-download"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: dataset 'dogs'") and "missing" in err[0]
    empty = tmp_path / "empty"
    assert _script("pets").main([str(empty), "--skip-download"]) == 1
    assert capsys.readouterr().err.startswith(f"error: {empty.resolve()} does not hold images/")
