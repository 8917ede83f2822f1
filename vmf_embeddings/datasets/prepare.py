"""Download / verify / extract / list-writing steps shared by `scripts/prepare_{cars196,cub200,sop}.py`
(`scripts/prepare_omniglot.py` uses the table and the download / verification steps;
`scripts/prepare_{flowers102,pets,dogs}.py` the table and `fetch_and_extract`).

Every archive the scripts fetch is listed once in `ARCHIVES` with the size and digests its publishers
give. A download goes to a temporary file next to its destination and is renamed only after its size
and digests match; an archive already on disk (left by an earlier run, or passed with --archive) is
checked again before it is used. `--no-verify` is the explicit opt-out.

The split lists are computed by the same `image_lists.dml_lists` the loaders use, so a prepared
folder and a bare extracted archive always give identical splits.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from vmf_embeddings.errors import UserError

from .archives import ImageTable, write_lists

CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveSpec:
    """One file a prepare script fetches: where from, and the size and digests published for it."""

    dataset: str
    url: str  # default download URL (https where the host serves it)
    size: Optional[int]  # bytes; None where no size is published
    sha256: Optional[str]  # None where no SHA-256 is published
    md5: Optional[str]  # checked as well where published (the only digest published for Cars196)
    source: str  # where the size and digests were published

    @property
    def filename(self) -> str:
        return url_filename(self.url)

    @property
    def verifiable(self) -> bool:
        return bool(self.sha256 or self.md5)


# The one table of everything `scripts/prepare_*.py` downloads, keyed by file name, so a mirror given
# with --url or a copy given with --archive under the same name is checked against the same entry.
# Only published values go here; an entry (or a name) without sha256 and md5 makes the scripts refuse
# the file unless --no-verify is given.
ARCHIVES: Dict[str, ArchiveSpec] = {
    "car_ims.tgz": ArchiveSpec(
        dataset="cars196",
        url="https://ai.stanford.edu/~jkrause/car196/car_ims.tgz",
        size=None,
        sha256=None,
        md5="d5c8f0aa497503f355e17dc7886c3f14",
        source="md5 of the Cars196 'all images' release as published with the metric-learning loaders "
        "(torchvision-style Cars196 datasets, pytorch-metric-learning <2); no size or SHA-256 is published",
    ),
    "cars_annos.mat": ArchiveSpec(
        dataset="cars196",
        url="https://ai.stanford.edu/~jkrause/car196/cars_annos.mat",
        size=None,
        sha256=None,
        md5="b407c6086d669747186bd1d764ff9dbc",
        source="as car_ims.tgz",
    ),
    "CUB_200_2011.tgz": ArchiveSpec(
        dataset="cub200",
        url="https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1",
        size=1150585339,
        sha256="0c685df5597a8b24909f6a7c9db6d11e008733779a671760afef78feb49bf081",
        md5="97eceeb196236b17998738112f37df78",
        source="CaltechDATA record 65de6-vp158 (size, md5); TensorFlow Datasets "
        "url_checksums/caltech_birds2011.txt (size, SHA-256 of the same file)",
    ),
    "Stanford_Online_Products.zip": ArchiveSpec(
        dataset="sop",
        # The authors' FTP server; no https copy of it is documented. The SHA-256 check covers integrity.
        url="ftp://cs.stanford.edu/cs/cvgl/Stanford_Online_Products.zip",
        size=3083860082,
        sha256="b04fa78210e69fab050ce73939550e1cd0f96890bdd98ec9fee732c3b756ef48",
        md5="7f73d41a2f44250d4779881525aea32e",
        source="TensorFlow Datasets url_checksums/stanford_online_products.txt (size, SHA-256); md5 as "
        "published with the metric-learning loaders",
    ),
    # Oxford 102 Flowers (scripts/prepare_flowers102.py): md5s as published in torchvision's
    # `datasets/flowers102.py` (`Flowers102._file_dict`); no size or SHA-256 is published.
    **{
        name: ArchiveSpec(
            dataset="flowers102",
            url=f"https://www.robots.ox.ac.uk/~vgg/data/flowers/102/{name}",
            size=None,
            sha256=None,
            md5=md5,
            source="torchvision datasets/flowers102.py (Flowers102._file_dict md5); no size or SHA-256 is published",
        )
        for name, md5 in (("102flowers.tgz", "52808999861908f626f3c1f4e79d11fa"),
                          ("imagelabels.mat", "e0620be6f572b9609742df49c70aed4d"),
                          ("setid.mat", "a5357ecc9cb78c4bef273ce3793fc85c"))
    },
    # Oxford-IIIT Pet (scripts/prepare_pets.py): md5s as published in torchvision's
    # `datasets/oxford_iiit_pet.py` (`OxfordIIITPet._RESOURCES`).
    **{
        name: ArchiveSpec(
            dataset="pets",
            url=f"https://www.robots.ox.ac.uk/~vgg/data/pets/data/{name}",
            size=None,
            sha256=None,
            md5=md5,
            source="torchvision datasets/oxford_iiit_pet.py (OxfordIIITPet._RESOURCES md5); no size or SHA-256 "
            "is published",
        )
        for name, md5 in (("images.tar.gz", "5c4f3ee8e5d25df40f4fd59a7f44e54c"),
                          ("annotations.tar.gz", "95a8c909bbe2e81eed6a22bccdf3f68f"))
    },
    # Stanford Dogs (scripts/prepare_dogs.py): the authors' page publishes no size or checksum and
    # torchvision has no Stanford Dogs dataset, so these are used only with --no-verify. The host serves
    # plain http only.
    **{
        name: ArchiveSpec(
            dataset="dogs",
            url=f"http://vision.stanford.edu/aditya86/ImageNetDogs/{name}",
            size=None,
            sha256=None,
            md5=None,
            source="vision.stanford.edu/aditya86/ImageNetDogs/; no size or checksum is published",
        )
        for name in ("images.tar", "lists.tar")
    },
    # Omniglot (scripts/prepare_omniglot.py): Brenden Lake's repository publishes no size or digest for its
    # archives, nor the Prototypical Networks repository for its split lists, so these are used only with
    # --no-verify. The split lists have generic names; they are looked up here only by prepare_omniglot.py.
    **{
        f"{top}.zip": ArchiveSpec(
            dataset="omniglot",
            url=f"https://raw.githubusercontent.com/brendenlake/omniglot/master/python/{top}.zip",
            size=None,
            sha256=None,
            md5=None,
            source="github.com/brendenlake/omniglot (python/); no size or checksum is published",
        )
        for top in ("images_background", "images_evaluation")
    },
    **{
        f"{split}.txt": ArchiveSpec(
            dataset="omniglot",
            url=f"https://raw.githubusercontent.com/jakesnell/prototypical-networks/master/data/omniglot/splits/"
            f"vinyals/{split}.txt",
            size=None,
            sha256=None,
            md5=None,
            source="github.com/jakesnell/prototypical-networks (data/omniglot/splits/vinyals/, Vinyals et al.'s "
            "split); no size or checksum is published",
        )
        for split in ("train", "val", "test", "trainval")
    },
}


class ArchiveError(Exception):
    """An archive that must not be used; the message is the one line shown to the user."""


def url_filename(url: str) -> str:
    """The file name a URL is saved under (query string dropped)."""
    return Path(urllib.parse.urlsplit(url).path).name


def default_urls(dataset: str) -> List[str]:
    """The download URLs of a dataset's archives, in table order."""
    return [spec.url for spec in ARCHIVES.values() if spec.dataset == dataset]


class _Digests:
    """Size, SHA-256 and md5 of a byte stream, fed chunk by chunk."""

    def __init__(self) -> None:
        self.size = 0
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False)

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self.sha256.update(chunk)
        self.md5.update(chunk)

    def mismatch(self, spec: ArchiveSpec, complete: bool = True) -> Optional[str]:
        """'<what> <actual>, expected <expected>' for the first check that fails, else None."""
        if spec.size is not None and self.size != spec.size:
            actual = f"{self.size}" if complete else f"more than {spec.size}"
            return f"size {actual} bytes, expected {spec.size}"
        if spec.sha256 and self.sha256.hexdigest() != spec.sha256.lower():
            return f"sha256 {self.sha256.hexdigest()}, expected {spec.sha256.lower()}"
        if spec.md5 and self.md5.hexdigest() != spec.md5.lower():
            return f"md5 {self.md5.hexdigest()}, expected {spec.md5.lower()}"
        return None


def checksum_spec(name: str, where: str) -> ArchiveSpec:
    """The table entry of `name`; ArchiveError when there is no published digest to check `where` against."""
    spec = ARCHIVES.get(name)
    if spec is None or not spec.verifiable:
        raise ArchiveError(f"no published checksum for {name}, so {where} cannot be verified; "
                           f"rerun with --no-verify to use it unverified")
    return spec


def file_mismatch(path: Path, spec: ArchiveSpec) -> Optional[str]:
    """`_Digests.mismatch` of a file on disk (the size is compared before anything is read)."""
    digests = _Digests()
    if spec.size is not None and path.stat().st_size != spec.size:
        digests.size = path.stat().st_size
        return digests.mismatch(spec)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digests.update(chunk)
    return digests.mismatch(spec)


def verify_existing(path: Path, spec: ArchiveSpec, fix: str) -> None:
    """Check a file that was on disk before this run; never deletes it. ArchiveError on a mismatch."""
    print(f"verifying {path}")
    problem = file_mismatch(path, spec)
    if problem is not None:
        raise ArchiveError(f"{path} does not match its published checksum ({problem}); it was left in place: "
                           f"{fix}, or pass --no-verify to use it unverified")


class _Progress:
    """'downloaded X / Y MiB' on an interactive stderr, at most twice a second."""

    def __init__(self, total: Optional[int]) -> None:
        self.total = total
        self.enabled = sys.stderr.isatty()
        self.last = 0.0

    def update(self, done: int, final: bool = False) -> None:
        if not self.enabled or (not final and time.monotonic() - self.last < 0.5):
            return
        self.last = time.monotonic()
        total = f" / {self.total / 2**20:.0f}" if self.total else ""
        sys.stderr.write(f"\r  {done / 2**20:.0f}{total} MiB" + ("\n" if final else ""))
        sys.stderr.flush()


def download(url: str, dest: Path, spec: Optional[ArchiveSpec] = None, verify: bool = True) -> Path:
    """Fetch `url` to `dest` through a temporary file in the same folder, renamed only once it verifies.

    An existing `dest` is verified again (never deleted). With `verify`, `spec` must carry a digest; a
    download that does not match it (or runs past its size) is deleted and raises ArchiveError.
    """
    if verify and (spec is None or not spec.verifiable):
        spec = checksum_spec(dest.name, url)
    if dest.exists():
        if verify:
            verify_existing(dest, spec, "delete it and rerun to download it again")
            print(f"using existing {dest} (verified)")
        else:
            print(f"using existing {dest} (not verified: --no-verify)")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    print(f"downloading {url} -> {dest}")
    try:
        digests = _Digests()
        limit = spec.size if verify and spec is not None else None
        complete = True
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            length = response.headers.get("Content-Length") if response.headers else None
            progress = _Progress(limit or (int(length) if length and length.isdigit() else None))
            for chunk in iter(lambda: response.read(CHUNK), b""):
                out.write(chunk)
                digests.update(chunk)
                progress.update(digests.size)
                if limit is not None and digests.size > limit:  # never fill the disk with a wrong file
                    complete = False
                    break
            progress.update(digests.size, final=True)
        if verify:
            problem = digests.mismatch(spec, complete)
            if problem is not None:
                raise ArchiveError(
                    f"download of {dest.name} from {url} does not match its published checksum ({problem}); "
                    f"the partial file was deleted: rerun to retry, or pass --archive FILE with a good copy "
                    f"(--no-verify skips the check)")
        tmp.replace(dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
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
    p.add_argument("--no-verify", action="store_true",
                   help="use downloaded and existing archives without checking their size and published "
                        "checksum (for repackaged mirrors, or files with no published checksum)")
    return p


def _fetch(args: argparse.Namespace, root: Path, default_urls: Sequence[str], verify: bool) -> List[Path]:
    """The archives to extract, each verified unless `verify` is off; ArchiveError / OSError on failure."""
    archives: List[Path] = list(args.archive or [])
    if archives:
        for archive in archives:
            if not archive.is_file():
                raise ArchiveError(f"--archive {archive} is not a file")
            if verify:
                spec = checksum_spec(archive.name, str(archive))
                verify_existing(archive, spec, "replace it with a good copy")
                print(f"verified {archive}")
        return archives
    urls = list(args.url or default_urls)
    specs = {}
    for url in urls:  # refuse unverifiable files before downloading anything
        specs[url] = checksum_spec(url_filename(url), url) if verify else ARCHIVES.get(url_filename(url))
    for url in urls:
        try:
            archives.append(download(url, root / url_filename(url), specs[url], verify))
        except OSError as err:  # URLError, timeouts, HTTP errors
            raise OSError(f"could not download {url} ({err}); fetch the archive yourself and rerun with "
                          f"--archive FILE (or extract it under {root} and use --skip-download)") from err
    return archives


def fetch_and_extract(
    args: argparse.Namespace,
    root: Path,
    default_urls: Sequence[str],
    extract_archive: Callable[[Path], bool] = lambda path: True,
) -> int:
    """Download (or take --archive), verify unless --no-verify, and extract every archive into `root`; files
    for which `extract_archive` is False (e.g. `.mat` files) are copied into `root` as they are. Returns 0,
    or 1 after printing one `error:` line. Shared by `run` and the scripts whose loaders read the extracted
    release directly (Flowers-102, Pets, Dogs)."""
    verify = not getattr(args, "no_verify", False)
    if not verify:
        print("warning: --no-verify: archives are used without checking their size and checksum",
              file=sys.stderr)
    try:
        archives = _fetch(args, root, default_urls, verify)
    except (ArchiveError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for archive in archives:
        if extract_archive(archive):
            try:
                extract(archive, root)
            except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as err:
                damaged = isinstance(err, (tarfile.TarError, zipfile.BadZipFile, EOFError))
                reason = "not a readable .tar(.gz)/.zip archive" if damaged else " ".join(str(err).split())
                print(f"error: could not extract {archive} ({reason}): replace it with a good copy and rerun",
                      file=sys.stderr)
                return 1
        else:  # single files such as cars_annos.mat are used as they are
            target = root / archive.name
            if archive.resolve() != target:
                shutil.copy2(archive, target)
    return 0


def run_extracted(
    args: argparse.Namespace,
    name: str,
    default_urls: Sequence[str],
    present: Callable[[Path], bool],
    expected: str,
    summarize: Callable[[Path], str],
    extract_archive: Callable[[Path], bool] = lambda path: True,
) -> int:
    """`fetch_and_extract` unless `present(root)`, then `summarize(root)` (the loader's check of the extracted
    release, returning a one-line summary; a `UserError` becomes one `error:` line). For datasets whose loaders
    read the official files directly and need no split lists. Returns the exit code."""
    root: Path = args.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    if not present(root) and not args.skip_download and fetch_and_extract(args, root, default_urls, extract_archive):
        return 1
    if not present(root):
        print(f"error: {root} does not hold {expected}", file=sys.stderr)
        return 1
    try:
        summary = summarize(root)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(summary)
    print(f"use it with: dataset={name} dataset.dataset_path={root}")
    return 0


def finegrained_main(name: str, description: str, expected: str, argv=None,
                     extract_archive: Callable[[Path], bool] = lambda path: True) -> int:
    """The prepare script of a release `vmf_embeddings.datasets.finegrained` reads directly (flowers102, pets,
    dogs): fetch and extract it when absent, then let that loader check and summarise it."""
    from vmf_embeddings.datasets.finegrained import is_extracted, summarize

    urls = default_urls(name)
    args = parser(description, urls).parse_args(argv)
    return run_extracted(args, name, urls, lambda root: is_extracted(name, root), expected,
                         lambda root: summarize(name, root), extract_archive)


def run(
    args: argparse.Namespace,
    name: str,
    default_urls: Sequence[str],
    reader: Callable[[Path], Optional[ImageTable]],
    expected: str,
    extract_archive: Callable[[Path], bool] = lambda path: True,
) -> int:
    """Download, verify and extract when needed, then write train.txt/val.txt/test.txt; returns the exit code."""
    root: Path = args.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    try:
        present = reader(root) is not None
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if not present and not args.skip_download and fetch_and_extract(args, root, default_urls, extract_archive):
        return 1
    try:
        table = reader(root)
    except UserError as err:  # bad class ids in the metadata files: one line naming the file
        print(f"error: {err}", file=sys.stderr)
        return 1
    if table is None:
        print(f"error: {root} does not hold {expected}", file=sys.stderr)
        return 1
    from .image_lists import dml_lists  # torch/torchvision import only once the files are in place

    lists = dml_lists(name, table)
    for file in write_lists(root, lists):
        print(f"wrote {file}")
    counts = {split: (len(paths), len(set(labels.tolist()))) for split, (paths, labels) in lists.items()}
    print(f"{name}: " + ", ".join(f"{s} {n} images / {k} classes" for s, (n, k) in counts.items()))
    print(f"use it with: dataset={name} dataset.dataset_path={root}")
    return 0
