"""Omniglot for few-shot learning (Prototypical Networks, Snell et al. 2017), held in memory as uint8.

On disk, under `<dataset_path>/omniglot/` (`python scripts/prepare_omniglot.py DIR` fetches them):
- `images_background.zip` and `images_evaluation.zip`, the official archives (each holds
  `images_background/<Alphabet>/<characterNN>/<file>.png`, 105x105 binary PNGs, 20 drawers per
  character), or their extracted folders `images_background/`, `images_evaluation/` (a folder is
  preferred over its archive; archives are read with `zipfile`, nothing is extracted);
- the Vinyals split lists `splits/vinyals/{train,val,test,trainval}.txt` from the authors' repository,
  one line per `Alphabet/characterNN/rotDDD` (DDD in 000, 090, 180, 270).

Each rotation is its own class. Per image, as in the authors' code: rotate by the class angle, resize
to `image_size` (nearest, PIL's resampling for binary images), invert so strokes are 255 and background 0
(the authors' `1 - x`, stored as uint8). Each PNG is decoded once and its rotations are taken with
`torch.rot90`; at 105 -> 28 nearest resampling is symmetric under flips, so this equals rotating first
(the authors also transpose each image, which no class depends on; not reproduced). Labels are the line
order of each list (0..K-1 within each split); `class_names` holds the training list's lines and
`extras["split_class_names"]` every split's. Real sizes: train 4,112 classes, val 688, test 1,692, 20
images per class; `trainval=True` trains on trainval.txt (4,800 classes; val stays val.txt).

Decoded images are cached (`cached_tensors`) under `<dataset_path>/omniglot/.cache/<key>.pt`, the key
hashing the four split lists, `image_size` and the source files' names, sizes and CRCs, so a second load
reads one file and decodes no PNG; a changed list, size or source file builds a new cache.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .base import DatasetInvalidError, DataSplits, TensorSplit, missing_dataset

NAME = "omniglot"
ARCHIVE_NAMES = ("images_background", "images_evaluation")
LISTS = ("train", "val", "test", "trainval")
ROTATIONS = (0, 90, 180, 270)
CACHE_FORMAT = 1
_CLASS_LINE = re.compile(r"^(?P<character>[^/]+/[^/]+)/rot(?P<angle>\d{3})$")

EXPECTED = ("omniglot/images_background.zip and omniglot/images_evaluation.zip (or their extracted folders) and "
            "omniglot/splits/{split}/{{train,val,test,trainval}}.txt")
PREPARE = "run `python scripts/prepare_omniglot.py DIR` and set dataset.dataset_path=DIR"


# ------------------------------------------------------------------------------------------ cache
def cache_key(*parts: object) -> str:
    """A short stable hash of `parts` (bytes are hashed as they are, anything else through repr)."""
    digest = hashlib.sha256()
    for part in parts:
        data = part if isinstance(part, bytes) else repr(part).encode()
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()[:32]


def cached_tensors(cache_dir: Path, key: str, build: Callable[[], Dict[str, object]]) -> Dict[str, object]:
    """`build()` (a dict of plain tensors and lists of str), cached as `cache_dir/<key>.pt`.

    An existing cache file is loaded with `weights_only=True`; one that cannot be read (or holds another
    key) is rebuilt. The file is written to a temporary name in the same folder and renamed into place,
    so an interrupted run never leaves a truncated cache; a folder that cannot be written only costs the
    cache (a warning on stderr).
    """
    path = cache_dir / f"{key}.pt"
    if path.is_file():
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(payload, dict) and payload.get("key") == key and payload.get("format") == CACHE_FORMAT:
                return payload
        except Exception:  # truncated or foreign file: rebuilt below
            pass
    payload = dict(build())
    payload["key"] = key
    payload["format"] = CACHE_FORMAT
    tmp: Optional[str] = None
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".part", dir=cache_dir)
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        print(f"warning: could not write the decoded-image cache {path} ({err}); the images will be decoded "
              "again next time", file=sys.stderr)
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return payload


# ------------------------------------------------------------------------------------------ sources
@dataclass(frozen=True)
class _Image:
    """One PNG: inside `archive` (a zip) at `member`, or the file `member` when `archive` is None."""

    archive: Optional[str]
    member: str
    size: int
    crc: int = 0


def _scan_folder(folder: Path, index: Dict[str, List[_Image]]) -> None:
    for alphabet in sorted(p for p in folder.iterdir() if p.is_dir()):
        for character in sorted(p for p in alphabet.iterdir() if p.is_dir()):
            with os.scandir(character) as entries:
                files = sorted((e.name, e.stat().st_size) for e in entries if e.name.lower().endswith(".png"))
            index.setdefault(f"{alphabet.name}/{character.name}", []).extend(
                _Image(None, str(character / name), size) for name, size in files)


def _scan_zip(archive: Path, top: str, index: Dict[str, List[_Image]]) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as err:
        raise DatasetInvalidError(f"{archive}: not a readable zip archive ({' '.join(str(err).split())}); "
                                  f"delete it and {PREPARE}") from err
    found: Dict[str, List[_Image]] = {}
    for info in infos:
        parts = info.filename.split("/")
        if len(parts) == 4 and parts[0] == top and parts[3].lower().endswith(".png") and not info.is_dir():
            found.setdefault(f"{parts[1]}/{parts[2]}", []).append(
                _Image(str(archive), info.filename, info.file_size, info.CRC))
    for character in sorted(found):
        index.setdefault(character, []).extend(sorted(found[character], key=lambda im: im.member))


def _index(root: Path) -> Optional[Dict[str, List[_Image]]]:
    """'Alphabet/characterNN' -> its PNGs (sorted) over both archives; None when neither is present."""
    index: Dict[str, List[_Image]] = {}
    present = False
    for top in ARCHIVE_NAMES:
        folder, archive = root / top, root / f"{top}.zip"
        if folder.is_dir():
            _scan_folder(folder, index)
            present = True
        elif archive.is_file():
            _scan_zip(archive, top, index)
            present = True
    return index if present else None


def _read_list(path: Path) -> List[Tuple[str, int]]:
    """(character, angle) per line of a split list; one-line DatasetInvalidError on a malformed line."""
    out = []
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        match = _CLASS_LINE.match(line)
        if match is None or int(match["angle"]) not in ROTATIONS:
            raise DatasetInvalidError(f"{path}:{n}: {line!r} is not 'Alphabet/characterNN/rotDDD' with DDD in "
                                      "000, 090, 180, 270")
        out.append((match["character"], int(match["angle"])))
    return out


def decode_image(data: bytes, image_size: int) -> np.ndarray:
    """One Omniglot PNG -> image_size x image_size uint8, strokes 255 and background 0 (unrotated)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im = im.resize((image_size, image_size), Image.NEAREST)  # PIL's resampling of mode '1' images
        pixels = np.asarray(im.convert("L"), dtype=np.uint8)
    return 255 - pixels


def _decode_all(characters: Sequence[str], index: Dict[str, List[_Image]], image_size: int) -> Dict[str, object]:
    """Every PNG of `characters`, decoded unrotated: images M x 1 x S x S uint8, and per character its range."""
    images: List[np.ndarray] = []
    counts: List[int] = []
    zips: Dict[str, zipfile.ZipFile] = {}
    try:
        for character in characters:
            for item in index[character]:
                try:
                    if item.archive is None:
                        data = Path(item.member).read_bytes()
                    else:
                        zf = zips.get(item.archive)
                        if zf is None:
                            zf = zips[item.archive] = zipfile.ZipFile(item.archive)
                        data = zf.read(item.member)
                    images.append(decode_image(data, image_size))
                except (OSError, ValueError, zipfile.BadZipFile) as err:
                    where = item.member if item.archive is None else f"{item.archive}:{item.member}"
                    raise DatasetInvalidError(f"dataset '{NAME}': {where} cannot be decoded "
                                              f"({' '.join(str(err).split())}); {PREPARE}") from err
            counts.append(len(index[character]))
    finally:
        for zf in zips.values():
            zf.close()
    empty = torch.zeros(0, image_size, image_size, dtype=torch.uint8)
    stacked = torch.from_numpy(np.stack(images)) if images else empty
    return {"images": stacked.unsqueeze(1).contiguous(), "counts": torch.tensor(counts, dtype=torch.int64),
            "characters": list(characters)}


def _split(classes: List[Tuple[str, int]], base: torch.Tensor, offsets: Dict[str, Tuple[int, int]]) -> TensorSplit:
    images, labels = [], []
    for label, (character, angle) in enumerate(classes):
        start, count = offsets[character]
        block = base[start:start + count]
        images.append(torch.rot90(block, angle // 90, dims=(-2, -1)) if angle else block)
        labels.append(torch.full((count,), label, dtype=torch.int64))
    if not images:
        return TensorSplit(images=base[:0].clone(), labels=torch.zeros(0, dtype=torch.int64))
    return TensorSplit(images=torch.cat(images).contiguous(), labels=torch.cat(labels))


def load_omniglot(
    dataset_path: str,
    seed: int = 1234,
    image_size: int = 28,
    split: str = "vinyals",
    trainval: bool = False,
    cache: bool = True,
) -> DataSplits:
    """Omniglot's Vinyals splits as class-disjoint in-memory `TensorSplit`s (see the module docstring).

    `seed` is accepted for the common loader signature; the split lists fix everything. `trainval=True`
    trains on trainval.txt (validation is still val.txt, whose classes are then also training classes).
    `cache=False` decodes the PNGs and neither reads nor writes the cache.
    """
    del seed
    image_size = int(image_size)
    if image_size < 1:
        raise DatasetInvalidError(f"dataset '{NAME}': image_size={image_size} must be >= 1")
    root = Path(os.path.expanduser(str(dataset_path))) / NAME
    list_dir = root / "splits" / split
    expected = EXPECTED.format(split=split)
    needed = ("trainval" if trainval else "train", "val", "test")
    if not all((list_dir / f"{name}.txt").is_file() for name in needed):
        raise missing_dataset(NAME, dataset_path, expected, PREPARE)
    index = _index(root)
    if index is None:
        raise missing_dataset(NAME, dataset_path, expected, PREPARE)

    present = [name for name in LISTS if (list_dir / f"{name}.txt").is_file()]
    lists = {name: _read_list(list_dir / f"{name}.txt") for name in present}
    characters: List[str] = []
    seen = set()
    for name in present:
        for n, (character, angle) in enumerate(lists[name]):
            if character not in index or not index[character]:
                raise DatasetInvalidError(
                    f"{list_dir / (name + '.txt')}:{n + 1}: class {character}/rot{angle:03d} has no images in "
                    f"{' or '.join(f'{root}/{top}(.zip)' for top in ARCHIVE_NAMES)}; {PREPARE}")
            if character not in seen:
                seen.add(character)
                characters.append(character)
    characters.sort()

    def build() -> Dict[str, object]:
        return _decode_all(characters, index, image_size)

    if cache:
        key = cache_key(NAME, CACHE_FORMAT, image_size,
                        *[(name, (list_dir / f"{name}.txt").read_bytes()) for name in present],
                        [(c, [(Path(im.member).name if im.archive is None else im.member, im.size, im.crc)
                              for im in index[c]]) for c in characters])
        decoded = cached_tensors(root / ".cache", key, build)
    else:
        decoded = build()
    base = decoded["images"]
    offsets: Dict[str, Tuple[int, int]] = {}
    start = 0
    for character, count in zip(decoded["characters"], decoded["counts"].tolist()):
        offsets[character] = (start, int(count))
        start += int(count)

    train_classes, val_classes, test_classes = (lists[name] for name in needed)
    _check_disjoint(list_dir, needed, (train_classes, val_classes, test_classes), trainval)
    names = {s: [f"{c}/rot{a:03d}" for c, a in classes]
             for s, classes in zip(("train", "val", "test"), (train_classes, val_classes, test_classes))}
    return DataSplits(
        name=NAME,
        train=_split(train_classes, base, offsets),
        val=_split(val_classes, base, offsets),
        test=_split(test_classes, base, offsets),
        n_train_classes=len(train_classes),
        open_set=True,
        channels=1,
        image_size=image_size,
        mean=(0.0,),
        std=(1.0,),
        train_augment="none",
        class_names=names["train"],
        extras={"split_class_names": names, "split_lists": [str(list_dir / f"{n}.txt") for n in needed]},
    )


def _check_disjoint(list_dir: Path, files: Sequence[str], classes: Sequence[List[Tuple[str, int]]],
                    trainval: bool) -> None:
    """Refuse split lists whose classes (or characters: all four rotations go together) overlap, and
    duplicate lines inside one list. With `trainval`, only train and test must be disjoint."""
    for name, cls in zip(files, classes):
        if len(set(cls)) != len(cls):
            dup = next(c for i, c in enumerate(cls) if c in cls[:i])
            raise DatasetInvalidError(f"{list_dir / (name + '.txt')}: {dup[0]}/rot{dup[1]:03d} is listed twice")
    pairs = [(0, 2)] if trainval else [(0, 1), (0, 2), (1, 2)]
    for a, b in pairs:
        shared = sorted({c for c, _ in classes[a]} & {c for c, _ in classes[b]})
        if shared:
            raise DatasetInvalidError(
                f"{list_dir / (files[a] + '.txt')} and {list_dir / (files[b] + '.txt')} share {len(shared)} "
                f"character(s) (first {shared[0]}); few-shot splits must be class-disjoint")
