"""Readers for the standard extracted archives of Cars196, CUB200-2011 and SOP, and for
`path,label` list files, shared by the loaders and by `scripts/prepare_*.py` so both always
compute the same splits.

Layouts read (under `dataset_path`; CUB/SOP also accept the archive's top folder one level down):
- Cars196: `cars_annos.mat` + `car_ims/*.jpg` (the "all images" release: class 1..196, paths
  `car_ims/000001.jpg`).
- CUB200-2011: `CUB_200_2011/images.txt` (`id path`), `image_class_labels.txt` (`id class`, 1..200),
  `train_test_split.txt` (`id is_train`), `classes.txt`, `images/<class>/<file>.jpg`.
- SOP: `Stanford_Online_Products/Ebay_train.txt` and `Ebay_test.txt` (header, then
  `image_id class_id super_class_id path`, class ids 1..22634).
- Lists: `train.txt`, `val.txt`, `test.txt`, one `path,label` per line, label = 0-based class id
  of the full dataset, path relative to the list's folder (absolute paths are kept as they are).

Labels in an `ImageTable` are the dataset's own class ids made 0-based; re-indexing to 0..K-1 per
split happens in the loaders. A class id that is not an integer, or below the format's first id (1 in
the releases, 0 in the lists), is refused in one line naming the file (and line), never re-indexed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass
class ImageTable:
    """All images of a dataset: absolute paths, 0-based class ids, the official test flag."""

    paths: np.ndarray  # object array of str
    labels: np.ndarray  # int64
    is_test: np.ndarray  # bool: the official train/test flag of the release (SOP: Ebay_test)
    class_names: Optional[List[str]] = None


def _first_existing(root: Path, names: Tuple[str, ...]) -> Optional[Path]:
    for name in names:
        if (root / name).exists():
            return root / name
    return None


def _invalid(message: str) -> Exception:
    """base.DatasetInvalidError, imported only on this error path: the prepare scripts import this module
    without torch."""
    from .base import DatasetInvalidError

    return DatasetInvalidError(message)


def _class_id(token: str, path: Path, line_no: int, first_id: int, what: str = "class id") -> int:
    """One class id of a text file, refused in one line (`file:line`) unless an integer >= first_id."""
    try:
        value = int(token)
    except ValueError:
        raise _invalid(f"{path}:{line_no}: {what} {token!r} is not an integer") from None
    if value < first_id:
        raise _invalid(f"{path}:{line_no}: {what} {value} is below {first_id} "
                       f"({what}s in this file start at {first_id})")
    return value


def _mat_class_ids(values: np.ndarray, path: Path) -> np.ndarray:
    """`class` of cars_annos.mat (1-based; MATLAB may store whole numbers as doubles) as int64."""
    array = np.asarray(np.asarray(values).tolist())
    if array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
        array = array.astype(np.int64)
    from .base import check_labels

    check_labels(array, f"{path} (annotations.class)", first_id=1)
    return array.astype(np.int64)


def read_cars196(root: Path) -> Optional[ImageTable]:
    """Parse `cars_annos.mat` (None when it or `car_ims/` is absent)."""
    mat_path = root / "cars_annos.mat"
    if not mat_path.is_file() or not (root / "car_ims").is_dir():
        return None
    from scipy.io import loadmat

    mat = loadmat(str(mat_path), squeeze_me=True)
    ann = np.atleast_1d(mat["annotations"])
    paths = np.array([str(root / str(p)) for p in np.atleast_1d(ann["relative_im_path"])], dtype=object)
    labels = _mat_class_ids(np.atleast_1d(ann["class"]), mat_path) - 1
    is_test = np.atleast_1d(ann["test"]).astype(np.int64).astype(bool)
    names = [str(n) for n in np.atleast_1d(mat["class_names"])] if "class_names" in mat else None
    return ImageTable(paths, labels, is_test, names)


def _read_id_table(path: Path) -> Dict[int, str]:
    table = {}
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            parts = line.split(maxsplit=1)
            if len(parts) == 2:
                try:
                    key = int(parts[0])
                except ValueError:
                    raise _invalid(f"{path}:{line_no}: image id {parts[0]!r} is not an integer") from None
                table[key] = parts[1].strip()
    return table


def _read_class_table(path: Path) -> Dict[int, int]:
    """`id class` lines (CUB's image_class_labels.txt), class ids checked as integers >= 1."""
    table = {}
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            parts = line.split()
            if len(parts) >= 2:
                image_id = _class_id(parts[0], path, line_no, -(2**62), what="image id")
                table[image_id] = _class_id(parts[1], path, line_no, first_id=1)
    return table


def read_cub200(root: Path) -> Optional[ImageTable]:
    """Parse the CUB_200_2011 metadata files (None when `images.txt` is absent)."""
    base = _first_existing(root, ("CUB_200_2011/images.txt", "images.txt"))
    if base is None:
        return None
    base = base.parent
    images = _read_id_table(base / "images.txt")
    classes = _read_class_table(base / "image_class_labels.txt")
    unlabelled = sorted(set(images) - set(classes))
    if unlabelled:
        raise _invalid(
            f"{base / 'image_class_labels.txt'}: no class for {len(unlabelled)} image id(s) of images.txt "
            f"(first {unlabelled[0]}); replace both files with the release's"
        )
    split_file = base / "train_test_split.txt"
    is_train = _read_id_table(split_file) if split_file.is_file() else {}
    ids = sorted(images)
    paths = np.array([str(base / "images" / images[i]) for i in ids], dtype=object)
    labels = np.array([classes[i] - 1 for i in ids], dtype=np.int64)
    is_test = np.array([is_train.get(i, "1") == "0" for i in ids], dtype=bool)
    names = None
    if (base / "classes.txt").is_file():
        table = _read_id_table(base / "classes.txt")
        names = [table[k] for k in sorted(table)]
    return ImageTable(paths, labels, is_test, names)


def _read_ebay(path: Path) -> Tuple[List[str], List[int]]:
    paths, labels = [], []
    with open(path) as f:
        next(f)  # header: image_id class_id super_class_id path
        for line_no, line in enumerate(f, 2):
            parts = line.split()
            if len(parts) == 4:
                labels.append(_class_id(parts[1], path, line_no, first_id=1) - 1)
                paths.append(str(path.parent / parts[3]))
    return paths, labels


def read_sop(root: Path) -> Optional[ImageTable]:
    """Parse `Ebay_train.txt` + `Ebay_test.txt` (None when either is absent)."""
    train = _first_existing(root, ("Stanford_Online_Products/Ebay_train.txt", "Ebay_train.txt"))
    if train is None or not (train.parent / "Ebay_test.txt").is_file():
        return None
    train_paths, train_labels = _read_ebay(train)
    test_paths, test_labels = _read_ebay(train.parent / "Ebay_test.txt")
    return ImageTable(
        paths=np.array(train_paths + test_paths, dtype=object),
        labels=np.array(train_labels + test_labels, dtype=np.int64),
        is_test=np.r_[np.zeros(len(train_paths), bool), np.ones(len(test_paths), bool)],
    )


def read_lists(root: Path) -> Optional[Dict[str, Tuple[np.ndarray, np.ndarray]]]:
    """{split: (absolute paths, labels)} from train.txt/val.txt/test.txt (None unless all three exist)."""
    files = {s: root / f"{s}.txt" for s in SPLITS}
    if not all(f.is_file() for f in files.values()):
        return None
    out = {}
    for split, file in files.items():
        paths, labels = [], []
        with open(file) as f:
            for line_no, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                if "," not in line:
                    raise _invalid(f"{file}:{line_no}: expected 'path,label', got {line[:80]!r}")
                path, label = line.rsplit(",", 1)
                paths.append(str(root / path))  # `root / absolute` keeps the absolute path
                labels.append(_class_id(label.strip(), file, line_no, first_id=0))
        out[split] = (np.array(paths, dtype=object), np.array(labels, dtype=np.int64))
    return out


def write_lists(root: Path, splits: Dict[str, Tuple[np.ndarray, np.ndarray]]) -> List[Path]:
    """Write `path,label` lists with paths relative to `root` (so the folder can be moved)."""
    written = []
    for split in SPLITS:
        paths, labels = splits[split]
        file = root / f"{split}.txt"
        with open(file, "w") as f:
            for path, label in zip(paths, labels):
                p = Path(path)
                rel = p.relative_to(root) if p.is_absolute() and p.is_relative_to(root) else p
                f.write(f"{rel.as_posix()},{int(label)}\n")
        written.append(file)
    return written
