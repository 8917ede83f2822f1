"""Download / extract / list-writing steps shared by `scripts/prepare_{cars196,cub200,sop}.py`.

The split lists are computed by the same `image_lists.dml_lists` the loaders use, so a prepared
folder and a bare extracted archive always give identical splits.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tarfile
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from .archives import ImageTable, write_lists


def download(url: str, dest: Path) -> Path:
    """Fetch `url` to `dest` (skipped when it exists), via a temporary file so partial downloads never count."""
    if dest.exists():
        print(f"using existing {dest}")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    print(f"downloading {url} -> {dest}")
    with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
        shutil.copyfileobj(response, out, length=1 << 20)
    tmp.replace(dest)
    return dest


def extract(archive: Path, dest: Path) -> None:
    """Unpack a .tgz/.tar(.gz) or .zip archive into `dest` (refusing paths that escape it)."""
    print(f"extracting {archive} -> {dest}")
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(dest)
    else:
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter="data")


def parser(description: str, default_urls: Sequence[str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("root", type=Path, help="dataset folder; later pass it as dataset.dataset_path=ROOT")
    p.add_argument("--url", action="append", default=None,
                   help=f"archive URL(s) to fetch (repeatable); default: {' '.join(default_urls)}")
    p.add_argument("--archive", type=Path, action="append", default=None,
                   help="already downloaded archive file(s) to extract instead of downloading (repeatable)")
    p.add_argument("--skip-download", action="store_true",
                   help="the archive is already extracted under ROOT: only write the split lists")
    return p


def run(
    args: argparse.Namespace,
    name: str,
    default_urls: Sequence[str],
    reader: Callable[[Path], Optional[ImageTable]],
    expected: str,
    extract_archive: Callable[[Path], bool] = lambda path: True,
) -> int:
    """Download and extract when needed, then write train.txt/val.txt/test.txt; returns the exit code."""
    from .image_lists import dml_lists  # torch/torchvision import only after --help was handled

    root: Path = args.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    if reader(root) is None and not args.skip_download:
        archives: List[Path] = list(args.archive or [])
        if not archives:
            for url in args.url or default_urls:
                try:
                    archives.append(download(url, root / Path(url.split("?")[0]).name))
                except OSError as err:  # URLError, timeouts, HTTP errors
                    print(f"error: could not download {url} ({err}); fetch the archive yourself and rerun with "
                          f"--archive FILE (or extract it under {root} and use --skip-download)", file=sys.stderr)
                    return 1
        for archive in archives:
            if extract_archive(archive):
                extract(archive, root)
            else:  # single files such as cars_annos.mat are used as they are
                target = root / archive.name
                if archive.resolve() != target:
                    shutil.copy2(archive, target)
    table = reader(root)
    if table is None:
        print(f"error: {root} does not hold {expected}", file=sys.stderr)
        return 1
    lists = dml_lists(name, table)
    for file in write_lists(root, lists):
        print(f"wrote {file}")
    counts = {split: (len(paths), len(set(labels.tolist()))) for split, (paths, labels) in lists.items()}
    print(f"{name}: " + ", ".join(f"{s} {n} images / {k} classes" for s, (n, k) in counts.items()))
    print(f"use it with: dataset={name} dataset.dataset_path={root}")
    return 0
