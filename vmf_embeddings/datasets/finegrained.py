"""Oxford 102 Flowers, Oxford-IIIT Pet and Stanford Dogs: closed-set fine-grained classification on disk
(the Magnet-loss / RepMet fine-grained rows).

Each loader reads the official release files directly (nothing is converted), under `dataset_path`:

- Flowers-102 (`load_flowers102`): `jpg/image_00001.jpg ...`, `imagelabels.mat` (`labels`, 1..102, one per
  image in file order) and `setid.mat` (`trnid`, `valid`, `tstid`: 1-based image ids). Official splits:
  train 1,020 / val 1,020 / test 6,149.
- Oxford-IIIT Pet (`load_pets`): `images/<Breed_Name>_<n>.jpg` and `annotations/trainval.txt`,
  `annotations/test.txt` (`Image CLASS-ID SPECIES BREED-ID`, CLASS-ID 1..37, `#` lines are comments).
  Official trainval 3,680 / test 3,669. There is no official validation split: val is a seeded
  (`seed`), class-stratified `val_fraction` (10%) of trainval, and train the rest, so the runner can select
  checkpoints without looking at test.
- Stanford Dogs (`load_dogs`): `Images/<wnid>-<breed>/<wnid>_<n>.jpg` and `train_list.mat`, `test_list.mat`
  (`file_list`: cell of paths relative to `Images/`, `labels`: 1..120). Official train 12,000 / test 8,580;
  no validation split: val is a seeded, class-stratified `val_fraction` (10%) of train.

torchvision's layouts are accepted too where they differ only by a parent folder: `Flowers102` keeps the
files under `<root>/flowers-102/`, `OxfordIIITPet` under `<root>/oxford-iiit-pet/`; both `dataset_path`
and that subfolder are searched. `python scripts/prepare_{flowers102,pets,dogs}.py DIR` downloads and
extracts the official archives.

Labels are the official class index made 0-based (file id - 1), in every split (closed set: val and test
share the training label space); `n_train_classes` is the official class count (102 / 37 / 120).

Transforms (RepMet's fine-grained recipe): resize to an `image_size` square, random horizontal flip for
training only, ImageNet mean/std. (The seed code also flipped at test time; that was a bug and is not
reproduced: evaluation is deterministic.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torchvision import transforms as T

from .base import DatasetInvalidError, DataSplits, FileSplit, check_labels, missing_dataset
from .files import check_image_files
from .splits import stratified_split
from .transforms import IMAGENET_MEAN, IMAGENET_STD, ToRGB

N_CLASSES = {"flowers102": 102, "pets": 37, "dogs": 120}
#: torchvision's parent folder of each dataset (searched after `dataset_path` itself)
TORCHVISION_FOLDERS = {"flowers102": "flowers-102", "pets": "oxford-iiit-pet"}
EXPECTED = {
    "flowers102": "jpg/, imagelabels.mat and setid.mat (extracted 102flowers.tgz + the two .mat files), "
                  "directly or under flowers-102/",
    "pets": "images/ and annotations/trainval.txt, annotations/test.txt (extracted images.tar.gz and "
            "annotations.tar.gz), directly or under oxford-iiit-pet/",
    "dogs": "Images/ and train_list.mat, test_list.mat (extracted images.tar and lists.tar)",
}
#: files whose presence marks a dataset root
MARKERS = {
    "flowers102": ("imagelabels.mat", "setid.mat"),
    "pets": ("annotations/trainval.txt", "annotations/test.txt"),
    "dogs": ("train_list.mat", "test_list.mat"),
}

#: folder of the images under a dataset root
IMAGE_DIRS = {"flowers102": "jpg", "pets": "images", "dogs": "Images"}

Lists = Dict[str, Tuple[List[str], np.ndarray]]


def finegrained_transforms(image_size: int = 224) -> Tuple[T.Compose, T.Compose]:
    """(train, eval): square resize + random horizontal flip for training; square resize only for evaluation."""
    resize = T.Resize((image_size, image_size))
    finish = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    train = T.Compose([ToRGB(), resize, T.RandomHorizontalFlip(), *finish])
    test = T.Compose([ToRGB(), resize, *finish])
    return train, test


def candidate_roots(name: str, dataset_path) -> List[Path]:
    """`dataset_path` and, where torchvision uses one, its parent-folder layout under it."""
    root = Path(dataset_path)
    roots = [root]
    if name in TORCHVISION_FOLDERS:
        roots.append(root / TORCHVISION_FOLDERS[name])
    return roots


def find_root(name: str, dataset_path) -> Optional[Path]:
    """The first candidate root holding all of the dataset's metadata files, else None."""
    for root in candidate_roots(name, dataset_path):
        if all((root / marker).is_file() for marker in MARKERS[name]):
            return root
    return None


def is_extracted(name: str, dataset_path) -> bool:
    """True when a candidate root holds the metadata files and the image folder (what the prepare scripts
    check before downloading anything)."""
    root = find_root(name, dataset_path)
    return root is not None and (root / IMAGE_DIRS[name]).is_dir()


def _missing(name: str, dataset_path) -> Exception:
    fix = f"run `python scripts/prepare_{name}.py DIR` and set dataset.dataset_path=DIR"
    return missing_dataset(name, dataset_path, EXPECTED[name], fix)


def _loadmat(path: Path) -> dict:
    from scipy.io import loadmat

    try:
        return loadmat(str(path), squeeze_me=True)
    except Exception as err:  # noqa: BLE001 - a damaged .mat file is named in one line
        text = " ".join(str(err).split())
        raise DatasetInvalidError(f"{path}: not a readable .mat file ({type(err).__name__}: {text}); "
                                  "replace it from the original release") from err


def _mat_ids(mat: dict, key: str, path: Path) -> np.ndarray:
    """1-D int64 array of `mat[key]` (MATLAB stores whole numbers as doubles or small ints)."""
    if key not in mat:
        raise DatasetInvalidError(f"{path}: no '{key}' entry (found {sorted(k for k in mat if not k.startswith('__'))})")
    array = np.asarray(mat[key]).reshape(-1)
    if array.dtype.kind == "f":
        if not (np.all(np.isfinite(array)) and np.all(array == np.round(array))):
            raise DatasetInvalidError(f"{path}: '{key}' holds non-integer values")
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu":
        raise DatasetInvalidError(f"{path}: '{key}' must hold integer ids, got dtype {array.dtype}")
    return array.astype(np.int64)


def _mat_strings(values: Any) -> List[str]:
    """The strings of a MATLAB cell array (nested object arrays of str) in order."""
    if isinstance(values, str):
        return [values]
    array = np.asarray(values)
    if array.dtype.kind == "U":
        return [str(v) for v in array.reshape(-1)]
    out: List[str] = []
    for item in array.reshape(-1):
        out.extend(_mat_strings(item))
    return out


def _class_ids(ids: np.ndarray, source: str, n_classes: int) -> np.ndarray:
    """Official 1-based class ids -> 0-based, refused in one line outside 1..n_classes."""
    check_labels(ids, source, n_classes, first_id=1)
    return ids - 1


def _stratified_val(paths: Sequence[str], labels: np.ndarray, val_fraction: float, seed: int) -> Lists:
    keep, val = stratified_split(labels, val_fraction, seed)
    keep, val = np.sort(keep), np.sort(val)
    return {"train": ([paths[i] for i in keep], labels[keep]), "val": ([paths[i] for i in val], labels[val])}


def _splits(name: str, lists: Lists, image_size: int, class_names: Optional[List[str]], extras: dict,
            dataset_path, verify_files: bool) -> DataSplits:
    train_tf, eval_tf = finegrained_transforms(image_size)
    splits = {
        split: FileSplit(paths=list(paths), labels=torch.from_numpy(np.asarray(labels, dtype=np.int64)),
                         transform=train_tf if split == "train" else eval_tf)
        for split, (paths, labels) in lists.items()
    }
    data = DataSplits(
        name=name,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        n_train_classes=N_CLASSES[name],
        open_set=False,
        channels=3,
        image_size=image_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        train_augment="none",
        class_names=class_names,
        extras=extras,
    )
    if verify_files:
        check_image_files(data, str(dataset_path))
    return data


def read_flowers102(root: Path) -> Lists:
    """{split: (paths, 0-based labels)} of the official Flowers-102 split under `root`."""
    labels_path, setid_path = root / "imagelabels.mat", root / "setid.mat"
    labels = _class_ids(_mat_ids(_loadmat(labels_path), "labels", labels_path), f"{labels_path} (labels)",
                        N_CLASSES["flowers102"])
    setid = _loadmat(setid_path)
    lists: Lists = {}
    for split, key in (("train", "trnid"), ("val", "valid"), ("test", "tstid")):
        ids = _mat_ids(setid, key, setid_path)
        bad = (ids < 1) | (ids > len(labels))
        if bad.any():
            raise DatasetInvalidError(
                f"{setid_path}: '{key}' lists image id {int(ids[np.argmax(bad)])} but {labels_path} labels only "
                f"{len(labels)} images (ids 1..{len(labels)}); the files do not belong together"
            )
        lists[split] = ([str(root / "jpg" / f"image_{i:05d}.jpg") for i in ids.tolist()], labels[ids - 1])
    return lists


def _read_pets_list(path: Path) -> Tuple[List[str], np.ndarray]:
    names, ids = [], []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.split()
            if len(fields) != 4:
                raise DatasetInvalidError(f"{path}:{line_no}: expected 'Image CLASS-ID SPECIES BREED-ID', "
                                          f"got {line!r}")
            try:
                ids.append(int(fields[1]))
            except ValueError:
                raise DatasetInvalidError(f"{path}:{line_no}: class id {fields[1]!r} is not an integer") from None
            names.append(fields[0])
    return names, np.asarray(ids, dtype=np.int64)


def read_pets(root: Path) -> Tuple[Lists, List[str]]:
    """({'trainval'|'test': (paths, 0-based labels)}, class names by class id) of the official Pet lists."""
    out = {}
    names: List[Optional[str]] = [None] * N_CLASSES["pets"]
    for split in ("trainval", "test"):
        path = root / "annotations" / f"{split}.txt"
        images, ids = _read_pets_list(path)
        labels = _class_ids(ids, str(path), N_CLASSES["pets"])
        for image, label in zip(images, labels.tolist()):
            if names[label] is None:
                names[label] = image.rsplit("_", 1)[0]
        out[split] = ([str(root / "images" / f"{image}.jpg") for image in images], labels)
    return out, _fill_names(names)


def _fill_names(names: List[Optional[str]]) -> List[str]:
    """Class names by 0-based id; a class absent from the lists is named by its official 1-based id."""
    return [name if name is not None else str(i + 1) for i, name in enumerate(names)]


def read_dogs(root: Path) -> Tuple[Lists, List[str]]:
    """({'train'|'test': (paths, 0-based labels)}, breed names by class id) of the official Dogs lists."""
    out = {}
    names: List[Optional[str]] = [None] * N_CLASSES["dogs"]
    for split in ("train", "test"):
        path = root / f"{split}_list.mat"
        mat = _loadmat(path)
        if "file_list" not in mat:
            raise DatasetInvalidError(f"{path}: no 'file_list' entry")
        files = _mat_strings(mat["file_list"])
        labels = _class_ids(_mat_ids(mat, "labels", path), f"{path} (labels)", N_CLASSES["dogs"])
        if len(files) != len(labels):
            raise DatasetInvalidError(f"{path}: {len(files)} files in 'file_list' but {len(labels)} 'labels'")
        for file, label in zip(files, labels.tolist()):
            if names[label] is None:
                folder = file.replace("\\", "/").split("/")[0]
                names[label] = folder.split("-", 1)[1] if "-" in folder else folder
        out[split] = ([str(root / "Images" / file) for file in files], labels)
    return out, _fill_names(names)


def _layout(root: Path, dataset_path) -> str:
    """'torchvision' when the files were found in torchvision's parent folder, else 'official'."""
    return "torchvision" if root != Path(dataset_path) else "official"


def load_flowers102(dataset_path: str, seed: int = 1234, image_size: int = 224,
                    verify_files: bool = True) -> DataSplits:
    """Oxford 102 Flowers, official split: train 1,020 / val 1,020 / test 6,149, 102 classes (closed set).

    `seed` is accepted for a uniform signature; the official split involves no randomness.
    """
    root = find_root("flowers102", dataset_path)
    if root is None:
        raise _missing("flowers102", dataset_path)
    lists = read_flowers102(root)
    extras = {"layout": _layout(root, dataset_path), "root": str(root), "protocol": "official"}
    return _splits("flowers102", lists, image_size, None, extras, dataset_path, verify_files)


def load_pets(dataset_path: str, seed: int = 1234, image_size: int = 224, verify_files: bool = True,
              val_fraction: float = 0.1) -> DataSplits:
    """Oxford-IIIT Pet, 37 breeds (closed set): official trainval 3,680 / test 3,669; val = a seeded,
    class-stratified `val_fraction` of trainval (no official val split), train = the rest of trainval."""
    root = find_root("pets", dataset_path)
    if root is None:
        raise _missing("pets", dataset_path)
    official, names = read_pets(root)
    lists = {**_stratified_val(*official["trainval"], val_fraction, seed), "test": official["test"]}
    extras = {"layout": _layout(root, dataset_path), "root": str(root),
              "protocol": f"official trainval/test; val = seeded stratified {val_fraction:g} of trainval"}
    return _splits("pets", lists, image_size, names, extras, dataset_path, verify_files)


def load_dogs(dataset_path: str, seed: int = 1234, image_size: int = 224, verify_files: bool = True,
              val_fraction: float = 0.1) -> DataSplits:
    """Stanford Dogs, 120 breeds (closed set): official train 12,000 / test 8,580; val = a seeded,
    class-stratified `val_fraction` of train (no official val split), train = the rest."""
    root = find_root("dogs", dataset_path)
    if root is None:
        raise _missing("dogs", dataset_path)
    official, names = read_dogs(root)
    lists = {**_stratified_val(*official["train"], val_fraction, seed), "test": official["test"]}
    extras = {"layout": "official", "root": str(root),
              "protocol": f"official train/test; val = seeded stratified {val_fraction:g} of train"}
    return _splits("dogs", lists, image_size, names, extras, dataset_path, verify_files)


LOADERS = {"flowers102": load_flowers102, "pets": load_pets, "dogs": load_dogs}


def summarize(name: str, dataset_path) -> str:
    """Load `name` from `dataset_path` (checking every image file) and describe its splits in one line;
    what `scripts/prepare_<name>.py` prints once the files are in place."""
    data = LOADERS[name](str(dataset_path), image_size=8, verify_files=True)
    parts = []
    for split in ("train", "val", "test"):
        labels = getattr(data, split).labels
        parts.append(f"{split} {len(labels)} images / {len(torch.unique(labels))} classes")
    return f"{name}: " + ", ".join(parts)
