#!/usr/bin/env python
"""Fetch Omniglot and the Vinyals split lists for `dataset=omniglot` (Prototypical Networks' few-shot splits).

Downloads the official `images_background.zip` and `images_evaluation.zip` (Brenden Lake's repository)
into ROOT/omniglot/ and the split lists `{train,val,test,trainval}.txt` from the Prototypical Networks
repository into ROOT/omniglot/splits/vinyals/; the loader reads the archives as they are (no extraction).
Local copies can be given with --archive (matched by file name). Neither repository publishes a size or
checksum for these files (`vmf_embeddings.datasets.prepare.ARCHIVES`), so --no-verify is required to use
them; files already in place (or extracted folders images_background/, images_evaluation/) are kept.
Finally the lists are checked against the archives and the class counts printed.
"""
import argparse
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vmf_embeddings.datasets import prepare  # noqa: E402  (stdlib-only imports)
from vmf_embeddings.errors import UserError  # noqa: E402

URLS = prepare.default_urls("omniglot")  # 2 archives + 4 split lists (URLs and sources: prepare.ARCHIVES)
SPLIT = "vinyals"
EXPECTED = ("omniglot/images_background.zip, images_evaluation.zip (or extracted folders) and "
            f"omniglot/splits/{SPLIT}/{{train,val,test,trainval}}.txt")


def destination(data_root: Path, name: str) -> Path:
    """Where a fetched file goes: archives in ROOT/omniglot/, split lists in ROOT/omniglot/splits/vinyals/."""
    return data_root / name if name.endswith(".zip") else data_root / "splits" / SPLIT / name


def _plan(args: argparse.Namespace, data_root: Path) -> List[Tuple[str, Path]]:
    """(URL, destination) of every file still to fetch (skipping extracted folders and files in place)."""
    plan = []
    for url in args.url or URLS:
        name = prepare.url_filename(url)
        dest = destination(data_root, name)
        if name.endswith(".zip") and (data_root / name[: -len(".zip")]).is_dir():
            print(f"using extracted folder {data_root / name[: -len('.zip')]}")
            continue
        plan.append((url, dest))
    return plan


def fetch(args: argparse.Namespace, data_root: Path, verify: bool) -> None:
    """Copy --archive files into place or download the rest; ArchiveError / OSError on failure."""
    local: Dict[str, Path] = {}
    for archive in args.archive or []:
        if not archive.is_file():
            raise prepare.ArchiveError(f"--archive {archive} is not a file")
        local[archive.name] = archive
    plan = [(url, dest) for url, dest in _plan(args, data_root) if dest.name in local or not args.skip_download]
    specs = {}
    for url, dest in plan:  # refuse unverifiable files before fetching anything
        source = str(local[dest.name]) if dest.name in local else url
        specs[url] = prepare.checksum_spec(dest.name, source) if verify else prepare.ARCHIVES.get(dest.name)
    for url, dest in plan:
        if dest.name in local:
            archive = local.pop(dest.name)
            if verify:
                prepare.verify_existing(archive, specs[url], "replace it with a good copy")
            if archive.resolve() != dest.resolve():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(archive, dest)
                print(f"copied {archive} -> {dest}")
            continue
        try:
            prepare.download(url, dest, specs[url], verify)
        except OSError as err:  # URLError, timeouts, HTTP errors
            raise OSError(f"could not download {url} ({err}); fetch it yourself and rerun with --archive FILE") from err
    for name in local:
        raise prepare.ArchiveError(f"--archive {local[name]}: not one of the files omniglot needs "
                                   f"({', '.join(prepare.url_filename(u) for u in URLS)})")


def check(data_root: Path) -> List[str]:
    """One line per problem of the prepared folder (empty: it is complete)."""
    problems = []
    for top in ("images_background", "images_evaluation"):
        folder, archive = data_root / top, data_root / f"{top}.zip"
        if folder.is_dir():
            continue
        if not archive.is_file():
            problems.append(f"{archive} is missing (nor is {folder} there)")
        elif not zipfile.is_zipfile(archive):
            problems.append(f"{archive} is not a readable zip archive: delete it and rerun")
    for split in ("train", "val", "test", "trainval"):
        path = data_root / "splits" / SPLIT / f"{split}.txt"
        if not path.is_file():
            problems.append(f"{path} is missing")
    return problems


def main(argv=None) -> int:
    p = prepare.parser(__doc__.splitlines()[0], URLS)
    for action in p._actions:
        if action.dest == "skip_download":
            action.help = "download nothing: only copy --archive files and check the folder"
        if action.dest == "archive":
            action.help = "already downloaded file(s) (images_*.zip, *.txt) to use instead of downloading"
    args = p.parse_args(argv)
    root: Path = args.root.resolve()
    data_root = root / "omniglot"
    data_root.mkdir(parents=True, exist_ok=True)
    verify = not args.no_verify
    if not verify:
        print("warning: --no-verify: files are used without a size or checksum check (none is published "
              "for Omniglot)", file=sys.stderr)
    try:
        fetch(args, data_root, verify)
    except (prepare.ArchiveError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    problems = check(data_root)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return 1
    try:
        counts = _counts(data_root)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("omniglot: " + ", ".join(f"{s} {n} classes" for s, n in counts.items()))
    print(f"use it with: dataset=omniglot dataset.dataset_path={root}")
    return 0


def _counts(data_root: Path) -> Dict[str, int]:
    """Classes per list, after checking that every listed character has images in the archives."""
    # torch is imported only once the files are in place
    from vmf_embeddings.datasets.base import DatasetInvalidError
    from vmf_embeddings.datasets.omniglot import _index, _read_list

    index = _index(data_root) or {}
    counts = {}
    for split in ("train", "val", "test", "trainval"):
        path = data_root / "splits" / SPLIT / f"{split}.txt"
        classes = _read_list(path)
        for n, (character, angle) in enumerate(classes, 1):
            if not index.get(character):
                raise DatasetInvalidError(f"{path}:{n}: class {character}/rot{angle:03d} has no images in the "
                                          f"archives under {data_root}")
        counts[split] = len(classes)
    return counts


if __name__ == "__main__":
    sys.exit(main())
