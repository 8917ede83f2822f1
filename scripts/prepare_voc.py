#!/usr/bin/env python
"""Extract (or fetch) PASCAL VOC 2007 / 2012 for `dataset=voc2007` and `dataset=voc0712`.

Takes the official tars (VOCtrainval_06-Nov-2007.tar, VOCtest_06-Nov-2007.tar and, for voc0712,
VOCtrainval_11-May-2012.tar) with --archive, or downloads those of --years, and extracts them under ROOT,
giving ROOT/VOCdevkit/VOC2007/{JPEGImages,Annotations,ImageSets/Main} (and VOC2012/); the loader reads these
files directly. Every archive is checked against the md5 published in torchvision's VOC datasets before it is
used (--no-verify skips the check), and every member is checked before anything is written: a member that
would land outside ROOT (absolute path, '..', a link pointing out) or is not a plain file or folder refuses
the whole archive. An archive whose image sets are already extracted is skipped. Finally the annotations are
parsed, the JPEG headers checked against them, and the split sizes printed.
"""
import argparse
import sys
import tarfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vmf_embeddings.datasets.prepare import (  # noqa: E402  (stdlib-only imports)
    ArchiveError, ArchiveSpec, download, extract, parser, url_filename, verify_existing)

_SOURCE = "torchvision datasets/voc.py (DATASET_YEAR_DICT md5); no size or SHA-256 is published"
#: the official archives: URL (torchvision's mirror) and the md5 torchvision publishes for each
ARCHIVES: Dict[str, ArchiveSpec] = {
    name: ArchiveSpec(dataset="voc", url=f"https://thor.robots.ox.ac.uk/pascal/VOC/voc{year}/{name}", size=None,
                      sha256=None, md5=md5, source=_SOURCE)
    for name, year, md5 in (
        ("VOCtrainval_06-Nov-2007.tar", "2007", "c52e279531787c972589f7e41ab4ae64"),
        ("VOCtest_06-Nov-2007.tar", "2007", "b6e924de25625d8de591ea690078ad9f"),
        ("VOCtrainval_11-May-2012.tar", "2012", "6cd6e144f989b92b3379bac3b3de84fd"),
    )
}
#: (year, image set) each official archive lays down
CONTENTS: Dict[str, Tuple[str, str]] = {
    "VOCtrainval_06-Nov-2007.tar": ("2007", "trainval"),
    "VOCtest_06-Nov-2007.tar": ("2007", "test"),
    "VOCtrainval_11-May-2012.tar": ("2012", "trainval"),
}
#: image sets each dataset year needs (2007 test is the test set of both voc2007 and voc0712)
NEEDED = {"2007": ("trainval", "test"), "2012": ("trainval",)}
URLS = [spec.url for spec in ARCHIVES.values()]


def image_set_file(root: Path, year: str, image_set: str) -> Path:
    return root / "VOCdevkit" / f"VOC{year}" / "ImageSets" / "Main" / f"{image_set}.txt"


def present(root: Path, year: str, image_set: str) -> bool:
    """The image set's list and the JPEGImages/ and Annotations/ folders beside it exist."""
    voc = root / "VOCdevkit" / f"VOC{year}"
    return (image_set_file(root, year, image_set).is_file() and (voc / "JPEGImages").is_dir()
            and (voc / "Annotations").is_dir())


def check_members(archive: Path, root: Path) -> None:
    """Refuse (ArchiveError) an archive that is not a readable tar, or any of whose members tarfile's 'data'
    filter rejects (a path escaping `root`, an absolute path, a link out of it, a device file); reads only
    the member headers, so nothing is written for a refused archive."""
    try:
        with tarfile.open(archive) as tf:
            for member in tf.getmembers():
                try:
                    tarfile.data_filter(member, str(root))
                except tarfile.FilterError as err:
                    reason = " ".join(str(err).split())
                    raise ArchiveError(
                        f"{archive}: member {member.name!r} is refused by the safe-extraction filter "
                        f"({type(err).__name__}: {reason}); nothing was extracted: use the official VOC archive"
                    ) from None
    except (tarfile.TarError, EOFError, OSError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise ArchiveError(f"could not read {archive} as a .tar archive ({reason}): replace it with a good copy "
                           "and rerun") from None


def safe_extract(archive: Path, root: Path) -> None:
    """`check_members`, then `prepare.extract` (tarfile's 'data' filter again while writing)."""
    check_members(archive, root)
    try:
        extract(archive, root)
    except (tarfile.TarError, EOFError, OSError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise ArchiveError(f"could not extract {archive} ({reason}): replace it with a good copy and rerun") from None


def _spec(name: str, where: str) -> ArchiveSpec:
    spec = ARCHIVES.get(name)
    if spec is None:
        raise ArchiveError(f"no published checksum for {name}, so {where} cannot be verified (the official names are "
                           f"{', '.join(ARCHIVES)}); rerun with --no-verify to use it unverified")
    return spec


def _extract_all(archives: Sequence[Path], root: Path, verify: bool) -> None:
    """Verify (unless not `verify`) then extract each archive; one whose image sets are on disk is skipped."""
    if verify:  # refuse any bad file before extracting anything
        for archive in archives:
            spec = _spec(archive.name, str(archive))
            verify_existing(archive, spec, "replace it with a good copy")
            print(f"verified {archive}")
    for archive in archives:
        content = CONTENTS.get(archive.name)
        if content is not None and present(root, *content):
            print(f"{archive.name}: VOC{content[0]} {content[1]} is already extracted under {root}; skipped")
            continue
        safe_extract(archive, root)


def _download(args: argparse.Namespace, root: Path, years: Sequence[str], verify: bool) -> List[Path]:
    """Download the archives of the image sets of `years` that are missing (or --url); returns their paths."""
    if args.url:
        urls = list(args.url)
    else:
        urls = [spec.url for name, spec in ARCHIVES.items()
                if CONTENTS[name][0] in years and not present(root, *CONTENTS[name])]
    specs = {url: (_spec(url_filename(url), url) if verify else ARCHIVES.get(url_filename(url))) for url in urls}
    paths = []
    for url in urls:
        try:
            paths.append(download(url, root / url_filename(url), specs[url], verify))
        except OSError as err:  # URLError, timeouts, HTTP errors
            raise ArchiveError(f"could not download {url} ({err}); fetch the archive yourself and rerun with "
                               f"--archive FILE") from err
    return paths


def found_years(root: Path) -> List[str]:
    return [year for year in NEEDED if (root / "VOCdevkit" / f"VOC{year}").is_dir()]


def summarize(root: Path, years: Sequence[str]) -> List[str]:
    """Load each dataset the extracted years make (checking every annotation and JPEG header); one line each."""
    from vmf_embeddings.datasets.detection import load_voc

    lines = []
    for dataset_years in (("2007",), ("2007", "2012")):
        if not set(dataset_years) <= set(years):
            continue
        data = load_voc(str(root), years=dataset_years, verify_files=True)
        parts = [f"{split} {len(s)} images / {s.n_boxes} boxes" for split, s in data.splits().items()]
        lines.append(f"{data.name}: " + ", ".join(parts))
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = parser(__doc__.splitlines()[0], URLS)
    p.add_argument("--years", nargs="+", choices=sorted(NEEDED), default=None,
                   help="VOC years to prepare and check: 2007 (voc2007) and 2012 (with 2007: voc0712); default: "
                        "2007 and 2012 when downloading, else the years found after extracting the --archive files")
    for action in p._actions:  # the shared parser's wording is about list-writing datasets
        if "--skip-download" in action.option_strings:
            action.help = "the archives are already extracted under ROOT: only check the layout and the files"
    args = p.parse_args(argv)
    root: Path = args.root.resolve()
    verify = not args.no_verify
    if not verify:
        print("warning: --no-verify: archives are used without checking their checksum", file=sys.stderr)
    try:
        root.mkdir(parents=True, exist_ok=True)
        if args.archive:
            for archive in args.archive:
                if not archive.is_file():
                    raise ArchiveError(f"--archive {archive} is not a file")
            _extract_all(list(args.archive), root, verify)
        elif not args.skip_download:
            _extract_all(_download(args, root, args.years or list(NEEDED), verify), root, verify)
    except (ArchiveError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    years = args.years or (found_years(root) if args.archive or args.skip_download else list(NEEDED))
    if "2007" not in years:
        years = ["2007", *years]  # VOC2007 test is the test set of every VOC dataset here
    for year in years:
        for image_set in NEEDED[year]:
            if not present(root, year, image_set):
                archive = next(name for name, content in CONTENTS.items() if content == (year, image_set))
                print(f"error: {image_set_file(root, year, image_set)} (with JPEGImages/ and Annotations/ beside "
                      f"ImageSets/) is missing: pass {archive} with --archive, or run without --archive to download "
                      "it", file=sys.stderr)
                return 1
    from vmf_embeddings.errors import UserError

    try:
        lines = summarize(root, years)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    which = "dataset=voc0712 (or dataset=voc2007)" if "2012" in years else "dataset=voc2007"
    print(f"use it with: {which} dataset.dataset_path={root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
