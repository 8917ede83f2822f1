#!/usr/bin/env python
"""Check and lay out your copy of miniImageNet for `dataset=miniimagenet` (Ravi & Larochelle's split).

The images come from ImageNet under its license, so nothing is downloaded: pass the folder of JPEGs
(--images JPGS) and the folder holding Ravi & Larochelle's train.csv, val.csv, test.csv (--csv-dir; default:
the folder above JPGS). Every CSV row (`filename,label`, label = wnid) is checked: header, a file present
and readable, classes disjoint across the splits, and the standard 64 / 16 / 20 classes of 600 images
(--allow-other-counts accepts other counts). Each problem is printed as one line and nothing is written
when there is any. Then the images are resized to 84x84 RGB (LANCZOS; images already 84x84 RGB JPEGs are
copied as they are) into ROOT/miniimagenet/images/ and the CSVs copied to ROOT/miniimagenet/ (last, so a
folder with CSVs is complete). Without --images, ROOT/miniimagenet/ itself is checked.
"""
import argparse
import csv
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

SPLITS = ("train", "val", "test")
STANDARD = {"train": 64, "val": 16, "test": 20}
PER_CLASS = 600
MAX_LINES = 20  # problems of one kind printed before a summary line


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path, help="dataset folder; later pass it as dataset.dataset_path=ROOT")
    p.add_argument("--images", type=Path, default=None,
                   help="folder of your miniImageNet JPEGs (the CSVs' file names); omit to check ROOT/miniimagenet/")
    p.add_argument("--csv-dir", type=Path, default=None,
                   help="folder holding train.csv, val.csv, test.csv (default: the folder above --images)")
    p.add_argument("--image-size", type=int, default=84, help="side of the resized images (default 84)")
    p.add_argument("--allow-other-counts", action="store_true",
                   help="accept class / image counts other than 64/16/20 classes of 600 images")
    return p.parse_args(argv)


def read_csv(path: Path, problems: List[str]) -> Optional[List[Tuple[str, str]]]:
    """(filename, wnid) rows, or None with the problems appended."""
    if not path.is_file():
        problems.append(f"{path} is missing")
        return None
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip() for c in rows[0]] != ["filename", "label"]:
        problems.append(f"{path}: header is {','.join(rows[0]) if rows else 'missing'!r}, expected 'filename,label'")
        return None
    out, bad = [], []
    for n, row in enumerate(rows[1:], 2):
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip() or "/" in row[0] or "\\" in row[0]:
            bad.append(f"{path}:{n}: {','.join(row)!r} is not 'filename,label' with a bare file name")
            continue
        out.append((row[0].strip(), row[1].strip()))
    _extend(problems, bad)
    return None if bad else out


def _extend(problems: List[str], lines: List[str]) -> None:
    problems.extend(lines[:MAX_LINES])
    if len(lines) > MAX_LINES:
        problems.append(f"... and {len(lines) - MAX_LINES} more like the above")


def check(csv_dir: Path, images: Path, allow_other_counts: bool) -> Tuple[Dict[str, List[Tuple[str, str]]], List[str]]:
    """The rows of each CSV and one line per problem of the layout (no image is decoded here)."""
    problems: List[str] = []
    if not images.is_dir():
        problems.append(f"{images} is not a folder of images")
    rows: Dict[str, List[Tuple[str, str]]] = {}
    for split in SPLITS:
        got = read_csv(csv_dir / f"{split}.csv", problems)
        if got is not None:
            rows[split] = got
    owner: Dict[str, str] = {}
    for split, split_rows in rows.items():
        counts: Dict[str, int] = {}
        for _, wnid in split_rows:
            counts[wnid] = counts.get(wnid, 0) + 1
        for wnid in counts:
            if wnid in owner:
                problems.append(f"class {wnid} is in both {owner[wnid]}.csv and {split}.csv: the splits must be "
                                "class-disjoint")
            owner.setdefault(wnid, split)
        if not allow_other_counts:
            if len(counts) != STANDARD[split]:
                problems.append(f"{csv_dir / (split + '.csv')}: {len(counts)} classes, expected {STANDARD[split]} "
                                "(--allow-other-counts accepts it)")
            _extend(problems, [f"{csv_dir / (split + '.csv')}: class {w} has {c} images, expected {PER_CLASS} "
                               "(--allow-other-counts accepts it)" for w, c in counts.items() if c != PER_CLASS])
        if images.is_dir():
            _extend(problems, [f"{csv_dir / (split + '.csv')}: {images / name} is missing"
                               for name, _ in split_rows if not (images / name).is_file()])
    return rows, problems


def _write_atomic(src: Path, dest: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def resize_all(rows: Dict[str, List[Tuple[str, str]]], images: Path, out: Path, size: int) -> List[str]:
    """Write every listed image as a size x size RGB JPEG into `out`; one line per unreadable image."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    problems = []
    names = [name for split in SPLITS for name, _ in rows.get(split, [])]
    for i, name in enumerate(names):
        src, dest = images / name, out / name
        try:
            with Image.open(src) as im:
                if im.size == (size, size) and im.mode == "RGB" and im.format == "JPEG":
                    if src.resolve() != dest.resolve():
                        shutil.copyfile(src, dest)
                else:
                    im.convert("RGB").resize((size, size), Image.LANCZOS).save(dest, format="JPEG", quality=95)
        except (OSError, ValueError) as err:
            problems.append(f"{src} cannot be read as an image ({' '.join(str(err).split())})")
        if (i + 1) % 5000 == 0:
            print(f"resized {i + 1} / {len(names)} images")
    return problems


def main(argv=None) -> int:
    args = parse_args(argv)
    root: Path = args.root.resolve()
    data_root = root / "miniimagenet"
    if args.image_size < 1:
        print(f"error: --image-size {args.image_size} must be >= 1", file=sys.stderr)
        return 1
    in_place = args.images is None
    images = data_root / "images" if in_place else args.images.resolve()
    csv_dir = (args.csv_dir or (data_root if in_place else images.parent)).resolve()
    rows, problems = check(csv_dir, images, args.allow_other_counts)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        print(f"error: {len(problems)} problem(s); nothing was written", file=sys.stderr)
        return 1
    if not in_place:
        problems = resize_all(rows, images, data_root / "images", args.image_size)
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        if problems:
            print(f"error: {len(problems)} image(s) could not be read; the CSVs were not copied", file=sys.stderr)
            return 1
        for split in SPLITS:
            if (csv_dir / f"{split}.csv").resolve() != (data_root / f"{split}.csv").resolve():
                _write_atomic(csv_dir / f"{split}.csv", data_root / f"{split}.csv")
        print(f"wrote {data_root / 'images'} and {', '.join(s + '.csv' for s in SPLITS)}")
    summary = {s: (len(r), len({w for _, w in r})) for s, r in rows.items()}
    print("miniimagenet: " + ", ".join(f"{s} {n} images / {k} classes" for s, (n, k) in summary.items()))
    print(f"use it with: dataset=miniimagenet dataset.dataset_path={root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
