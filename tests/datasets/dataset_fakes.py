"""Writers of tiny datasets in each dataset's own on-disk format, so the real parsing code runs offline."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

import numpy as np
from PIL import Image


def write_image(path: Path, size=(12, 10), mode: str = "RGB", seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.randint(0, 256, size=shape).astype(np.uint8)).save(path)  # uint8 2-D -> L, 3-D -> RGB
    return path


# ---------------------------------------------------------------- MNIST family (IDX, uncompressed)
def write_idx_images(path: Path, images: np.ndarray) -> None:
    n, h, w = images.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack(">IIII", 0x00000803, n, h, w) + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack(">II", 0x00000801, len(labels)) + labels.astype(np.uint8).tobytes())


def write_mnist(root: Path, folder: str, n_train: int, n_test: int, n_classes: int = 10):
    """`<root>/<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte` as torchvision reads them."""
    raw = root / folder / "raw"
    rng = np.random.RandomState(0)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.randint(0, 256, size=(n, 28, 28)).astype(np.uint8)
        labels = (np.arange(n) % n_classes).astype(np.uint8)
        write_idx_images(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", labels)
        out[prefix] = (images, labels)
    return out


# ---------------------------------------------------------------- CIFAR (python pickles)
def _pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path, per_batch: int, n_test: int):
    base = root / "cifar-10-batches-py"
    rng = np.random.RandomState(1)
    train_images, train_labels = [], []
    for b in range(1, 6):
        data = rng.randint(0, 256, size=(per_batch, 3072)).astype(np.uint8)
        labels = [int(i % 10) for i in range(per_batch)]
        _pickle(base / f"data_batch_{b}", {"data": data, "labels": labels, "batch_label": f"batch {b}"})
        train_images.append(data)
        train_labels += labels
    test = rng.randint(0, 256, size=(n_test, 3072)).astype(np.uint8)
    _pickle(base / "test_batch", {"data": test, "labels": [int(i % 10) for i in range(n_test)]})
    _pickle(base / "batches.meta", {"label_names": [f"c{i}" for i in range(10)], "num_cases_per_batch": per_batch})
    return np.concatenate(train_images), np.array(train_labels)


def write_cifar100(root: Path, n_train: int, n_test: int):
    base = root / "cifar-100-python"
    rng = np.random.RandomState(2)
    train = rng.randint(0, 256, size=(n_train, 3072)).astype(np.uint8)
    _pickle(base / "train", {"data": train, "fine_labels": [i % 100 for i in range(n_train)],
                             "coarse_labels": [i % 20 for i in range(n_train)]})
    test = rng.randint(0, 256, size=(n_test, 3072)).astype(np.uint8)
    _pickle(base / "test", {"data": test, "fine_labels": [i % 100 for i in range(n_test)],
                            "coarse_labels": [i % 20 for i in range(n_test)]})
    _pickle(base / "meta", {"fine_label_names": [f"f{i}" for i in range(100)],
                            "coarse_label_names": [f"g{i}" for i in range(20)]})
    return train


# ---------------------------------------------------------------- Cars196 (cars_annos.mat + car_ims/)
def write_cars196(root: Path, n_classes: int = 196, per_class: int = 2, n_images: Optional[int] = 4) -> List[str]:
    """cars_annos.mat in the release's struct layout (fields as nested MATLAB arrays)."""
    from scipy.io import savemat

    n = n_classes * per_class
    fields = [("relative_im_path", "O"), ("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"),
              ("class", "O"), ("test", "O")]
    ann = np.zeros((1, n), dtype=fields)
    rel_paths = []
    for i in range(n):
        rel = f"car_ims/{i + 1:06d}.jpg"
        rel_paths.append(rel)
        box = [np.array([[v]], dtype=np.uint16) for v in (1, 1, 9, 9)]
        ann[0, i] = (np.array([rel]), *box, np.array([[i // per_class + 1]], dtype=np.uint8),
                     np.array([[i % 2]], dtype=np.uint8))
    names = np.empty((1, n_classes), dtype=object)
    for c in range(n_classes):
        names[0, c] = np.array([f"Make Model {c + 1}"])
    root.mkdir(parents=True, exist_ok=True)
    savemat(str(root / "cars_annos.mat"), {"annotations": ann, "class_names": names})
    (root / "car_ims").mkdir(exist_ok=True)
    for i, rel in enumerate(rel_paths[: n if n_images is None else n_images]):
        write_image(root / rel, mode="L" if i == 0 else "RGB", seed=i)
    return rel_paths


# ---------------------------------------------------------------- CUB-200-2011
def write_cub200(root: Path, n_classes: int = 200, per_class: int = 2, n_images: Optional[int] = 4,
                 official_train: Sequence[int] = ()) -> List[str]:
    """CUB_200_2011/{images,image_class_labels,train_test_split,classes}.txt; `official_train`:
    per-class positions flagged is_training=1 (default: the first image of each class)."""
    base = root / "CUB_200_2011"
    base.mkdir(parents=True, exist_ok=True)
    train_positions = set(official_train) if official_train else {0}
    rels, img_lines, cls_lines, split_lines = [], [], [], []
    image_id = 0
    for c in range(1, n_classes + 1):
        folder = f"{c:03d}.Bird_{c}"
        for k in range(per_class):
            image_id += 1
            rel = f"{folder}/Bird_{c}_{k:04d}.jpg"
            rels.append(rel)
            img_lines.append(f"{image_id} {rel}")
            cls_lines.append(f"{image_id} {c}")
            split_lines.append(f"{image_id} {1 if k in train_positions else 0}")
    (base / "images.txt").write_text("\n".join(img_lines) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(cls_lines) + "\n")
    (base / "train_test_split.txt").write_text("\n".join(split_lines) + "\n")
    (base / "classes.txt").write_text("\n".join(f"{c} {c:03d}.Bird_{c}" for c in range(1, n_classes + 1)) + "\n")
    (base / "images").mkdir(exist_ok=True)
    for i, rel in enumerate(rels[: len(rels) if n_images is None else n_images]):
        write_image(base / "images" / rel, seed=i)
    return rels


# ---------------------------------------------------------------- Stanford Online Products
def write_sop(root: Path, n_train_classes: int = 11318, n_test_classes: int = 11316, per_class: int = 1,
              n_images: int = 2) -> None:
    base = root / "Stanford_Online_Products"
    base.mkdir(parents=True, exist_ok=True)
    header = "image_id class_id super_class_id path\n"
    image_id, first = 0, []
    for name, classes in (("Ebay_train.txt", range(1, n_train_classes + 1)),
                          ("Ebay_test.txt", range(n_train_classes + 1, n_train_classes + n_test_classes + 1))):
        lines = []
        for c in classes:
            for k in range(per_class):
                image_id += 1
                rel = f"bicycle_final/{c}_{k}.JPG"
                lines.append(f"{image_id} {c} {1 + c % 12} {rel}")
                if len(first) < n_images:
                    first.append(rel)
        (base / name).write_text(header + "\n".join(lines) + "\n")
    for i, rel in enumerate(first):
        write_image(base / rel, seed=i)


# ---------------------------------------------------------------- ImageNet-200 / Tiny-ImageNet
def write_image_folder(folder: Path, classes: Iterable[str], per_class: int, nested: bool = False,
                       size=(8, 8)) -> None:
    for c in classes:
        for k in range(per_class):
            sub = folder / c / "images" if nested else folder / c
            write_image(sub / f"{c}_{k}.JPEG", size=size, seed=k)


# ---------------------------------------------------------------- OmniArt
def write_omniart(root: Path, train_rows: Sequence[tuple], test_rows: Sequence[tuple]) -> None:
    """rows: (omni_id, creation_year or '', school)."""
    for split, rows in (("train", train_rows), ("test", test_rows)):
        lines = ["omni_id,creation_year,century,school"]
        for omni_id, year, school in rows:
            lines.append(f"{omni_id},{year},{'' if year == '' else int(float(year)) // 100 + 1},{school}")
            write_image(root / split / f"{omni_id}.jpg", size=(10, 12), seed=int(omni_id))
        (root / f"{split}_complete.csv").write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------- JPEGs of assorted sizes (decoded-image store)
VARIED_SIZES = ((48, 36), (36, 50), (41, 41), (64, 33), (39, 57))


def write_varied_jpegs(paths: Iterable[Path], seed: int = 0, sizes: Sequence[tuple] = VARIED_SIZES) -> None:
    """(Re)write each path as a smooth random RGB JPEG, cycling through landscape, portrait and square sizes, so a
    shorter-side resize and its centre crop both matter."""
    for i, path in enumerate(paths):
        w, h = sizes[i % len(sizes)]
        rng = np.random.RandomState(seed + i)
        coarse = rng.randint(0, 256, size=(4, 4, 3)).astype(np.uint8)
        image = Image.fromarray(coarse).resize((w, h), Image.BILINEAR)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        image.save(path, quality=90)
