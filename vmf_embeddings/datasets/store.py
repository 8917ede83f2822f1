"""A decoded-once image store for the file-backed (`FileSplit`) datasets.

Decoding JPEGs is the cost of an epoch of Cars196, CUB200, SOP, ImageNet-200, OmniArt or the RepMet fine-grained
sets; the random steps after it are cheap. `attach_store` (called by `build.build_data` unless
`dataset.store=none`) decodes every image of the dataset once, at the resolution `transforms.store_plan` derives
from the evaluation pipeline, into one uint8 (N, 3, H, W) array file, memory-mapped read-only afterwards; each
`FileSplit` becomes a `StoreSplit` (rows of that array), and the training recipe's random steps run batch-wise on
the device (`augment.DeviceAugment`, the kind and parameters in `DataSplits.train_augment(_params)`), exactly as
for in-memory datasets. Evaluation batches equal the torchvision pipeline's (see `store_plan`).

Files, in `dataset.store_dir`, else `$VMF_STORE_DIR`, else `<dataset_path>/.vmf_store/`:
- `<name>_<H>x<W>_<key>.json`, the manifest: format, dataset, resolution, the array's file name, shape and byte
  count, the source files (path relative to the dataset root, size, mtime in ns) in row order, and `sha256`, the
  SHA-256 of the rest of the manifest (canonical JSON) and the byte count. `<key>` hashes the format and the
  resolution, so each resolution has its own store.
- `<name>_<H>x<W>_<key>.<build id>.u8`: the raw array, C order (no pickle, no header).
- `<name>_<H>x<W>_<key>.lock`: held (flock) while a process checks or builds the store, so concurrent runs or
  ranks build it once.

The array is written under a temporary name, synced and renamed to a fresh build id, and only then is the
manifest (written likewise) replaced: a crash leaves the previous store or none, never a half-written one.

Reuse: a store serves a run when every image the run lists is in it and every file it holds still has its
recorded size and mtime. Otherwise (a file added, removed or changed) it is rebuilt, copying the rows of the
unchanged files and decoding only the rest; files of other protocols of the same dataset (CUB's DML and HPN
splits) stay in it. A damaged store (manifest not JSON or not matching its hash, array missing or of the wrong
size, an array name outside the store folder or a file entry outside the dataset root) is refused in one line
naming the file and the fix, never used or silently replaced. `dataset.store=rebuild` decodes everything again,
ignoring what is there.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from vmf_embeddings.errors import ConfigError, UserError
from vmf_embeddings.schema import STORE_MODES

from .base import DatasetInvalidError, DatasetMissingError, DataSplits, FileSplit
from .files import ImageDecodeError, SeededBatch, _reason, load_image
from .transforms import StorePlan, store_plan

log = logging.getLogger(__name__)

FORMAT = 1
MODES = STORE_MODES
ENV_DIR = "VMF_STORE_DIR"
DEFAULT_SUBDIR = ".vmf_store"
SPLITS = ("train", "val", "test")
#: images decoded per task of the thread pool (one write into the array per task)
_CHUNK = 16
#: rows copied per step when a rebuild reuses the previous array
_COPY_ROWS = 256
#: free space kept beyond the array when a store is built
_SPARE_BYTES = 64 << 20
_ARRAY_NAME = re.compile(r"^[A-Za-z0-9_.-]+\.u8$")


class StoreDamagedError(DatasetInvalidError):
    """A decoded-image store whose files are damaged; the one-line message names them and the fix."""


class _Fallback(Exception):
    """The store cannot be written here (folder not writable, disk too small): read the image files instead."""


# ------------------------------------------------------------------------------------------ the array
class ImageStore:
    """A read-only (N, C, H, W) uint8 array in a raw file, memory-mapped once per process (`open_store` maps it
    at once, so a later rebuild by another process, which deletes the file, leaves this mapping valid; forked
    DataLoader workers inherit it, spawned ones map the file again)."""

    def __init__(self, path: Path, shape: Sequence[int]) -> None:
        self.path = Path(path)
        self.shape = tuple(int(v) for v in shape)
        self._array: Optional[np.ndarray] = None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.memmap(self.path, dtype=np.uint8, mode="r", shape=self.shape)
        return self._array

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Rows `rows` as a fresh (len(rows), C, H, W) array (one slice when they are consecutive)."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and np.all(np.diff(rows) == 1):
            return np.array(self.array[rows[0]:rows[-1] + 1])
        return self.array[rows]

    def open(self) -> "ImageStore":
        """Map the file now (not on first read)."""
        _ = self.array
        return self

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict:  # a worker started by spawn maps the file itself (a memmap would be copied)
        return {"path": self.path, "shape": self.shape}

    def __setstate__(self, state: dict) -> None:
        self.path, self.shape, self._array = state["path"], state["shape"], None


@dataclass
class StoreSplit(FileSplit):
    """A `FileSplit` whose images are read from a decoded-image store: item i is row `rows[i]` of `store`,
    uint8 at the stored resolution, augmented and normalised on the device. `paths` and `transform` stay, so
    anything that reads the files (and `FileSplitDataset`) still can."""

    store: Optional[ImageStore] = None
    rows: Optional[torch.Tensor] = None


def collate_batched(batch):
    """The DataLoader's collate_fn for datasets whose `__getitems__` returns a whole batch already."""
    return batch


class StoreBatches(Dataset):
    """DataLoader view of a `StoreSplit`: `__getitems__(indices)` -> (uint8 images, labels[, float targets]).

    With `augment` (a `DeviceAugment`, for a CPU device, where DataLoader workers are the parallel hardware), a
    batch comes as a `files.SeededBatch` and its images leave augmented and normalised (float32), drawn from a
    generator seeded with the batch's seed: the same batches whichever worker, or the main process, runs them.
    """

    def __init__(self, split: StoreSplit, with_targets: bool = False, augment: Optional[Callable] = None) -> None:
        self.store, self.rows = split.store, np.asarray(split.rows, dtype=np.int64)
        self.labels = split.labels
        self.targets = split.targets if with_targets and split.targets is not None else None
        self.augment = augment

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitems__(self, indices) -> tuple:
        seed = None
        if isinstance(indices, SeededBatch):
            indices, seed = indices.indices, indices.seed
        index = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        images = torch.from_numpy(self.store.read(self.rows[index.numpy()]))
        if self.augment is not None:
            if seed is None:
                raise ValueError("StoreBatches with an augmentation needs SeededBatch index batches")
            images = self.augment(images, generator=torch.Generator().manual_seed(seed))
        out = (images, self.labels[index])
        return out if self.targets is None else out + (self.targets[index].float(),)

    def __getitem__(self, i: int) -> tuple:
        return tuple(v[0] for v in self.__getitems__([int(i)]))


# ------------------------------------------------------------------------------------------ manifest
def _canonical(manifest: dict) -> bytes:
    body = {k: v for k, v in manifest.items() if k != "sha256"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def manifest_hash(manifest: dict) -> str:
    """SHA-256 of the manifest without its `sha256` field, plus the array's byte count."""
    digest = hashlib.sha256(_canonical(manifest))
    digest.update(b"|" + str(int(manifest.get("nbytes", -1))).encode())
    return digest.hexdigest()


def _stem(name: str, plan: StorePlan) -> str:
    key = hashlib.sha256(json.dumps({"format": FORMAT, "resolution": plan.describe()}, sort_keys=True).encode())
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", name) or "dataset"
    return f"{safe}_{plan.height}x{plan.width}_{key.hexdigest()[:12]}"


def store_dir(configured: Optional[str], dataset_path: str, paths: Sequence[str]) -> Path:
    """`configured`, else $VMF_STORE_DIR, else `<dataset_path>/.vmf_store` (the files' common folder when no
    dataset_path is known)."""
    if configured not in (None, ""):
        return Path(str(configured)).expanduser()
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR]).expanduser()
    root = str(dataset_path) if dataset_path else os.path.commonpath([os.path.abspath(p) for p in paths])
    return Path(root) / DEFAULT_SUBDIR


def _damaged(manifest: Path, stem: str, reason: str) -> StoreDamagedError:
    return StoreDamagedError(
        f"decoded-image store {manifest} is damaged ({reason}); delete {manifest} and {manifest.parent}/{stem}.*.u8, "
        "or run with dataset.store=rebuild"
    )


def _read_manifest(path: Path, stem: str, plan: StorePlan) -> Tuple[dict, Path]:
    """The checked manifest and its array's path; `StoreDamagedError` for anything wrong with either."""
    try:
        manifest = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise _damaged(path, stem, "manifest is not text") from None
    except json.JSONDecodeError as err:
        raise _damaged(path, stem, f"manifest is not valid JSON: {err.msg} at line {err.lineno}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("sha256"), str):
        raise _damaged(path, stem, "manifest has no sha256")
    if manifest_hash(manifest) != manifest["sha256"]:
        raise _damaged(path, stem, "manifest does not match its sha256")
    if manifest.get("format") != FORMAT or manifest.get("resolution") != plan.describe():
        raise _damaged(path, stem, "manifest describes another format or resolution than its name")
    name = manifest.get("array")
    if not isinstance(name, str) or not _ARRAY_NAME.match(name) or not name.startswith(stem + "."):
        raise _damaged(path, stem, f"array name {name!r} is not a file of this store")
    files, shape = manifest.get("files"), manifest.get("shape")
    expected = [len(files) if isinstance(files, list) else -1, 3, plan.height, plan.width]
    if shape != expected or manifest.get("nbytes") != int(np.prod(expected)) or not all(
            isinstance(f, list) and len(f) == 3 and isinstance(f[0], str) and isinstance(f[1], int)
            and isinstance(f[2], int) for f in files):
        raise _damaged(path, stem, "manifest's shape, byte count and file list disagree")
    for entry in files:  # relative entries stay under the dataset root
        rel = entry[0]
        if not os.path.isabs(rel) and (os.path.normpath(rel) != rel or rel.split(os.sep)[0] == ".."):
            raise _damaged(path, stem, f"file entry {rel!r} leaves the dataset root")
    array = path.parent / name
    try:
        size = array.stat().st_size
    except FileNotFoundError:
        raise _damaged(path, stem, f"array {array} is missing") from None
    if size != manifest["nbytes"]:
        what = "truncated" if size < manifest["nbytes"] else "longer than recorded"
        raise _damaged(path, stem, f"array {array} is {what}: {size} of {manifest['nbytes']} bytes")
    return manifest, array


# ------------------------------------------------------------------------------------------ source files
def _relative(paths: Sequence[str], root: str) -> List[str]:
    """Each path relative to `root` when inside it (a moved dataset keeps its store), else absolute."""
    base = os.path.abspath(root) if root else ""
    out = []
    for p in paths:
        full = os.path.abspath(p)
        rel = os.path.relpath(full, base) if base else full
        out.append(full if rel == ".." or rel.startswith(".." + os.sep) or os.path.isabs(rel) else rel)
    return out


def _stat(path: str) -> Optional[Tuple[int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return int(st.st_size), int(st.st_mtime_ns)


def _stats(paths: Sequence[str]) -> List[Optional[Tuple[int, int]]]:
    if len(paths) > 2000:
        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(_stat, paths, chunksize=256))
    return [_stat(p) for p in paths]


def _absolute(rel: str, root: str) -> str:
    return rel if os.path.isabs(rel) else os.path.join(root, rel)


# ------------------------------------------------------------------------------------------ building
@contextmanager
def _locked(lock_path: Path, writable: bool) -> Iterator[None]:
    """An exclusive flock on `lock_path` (none where the folder is read-only or flock is missing)."""
    if not writable:
        yield
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: concurrent builders each write a complete store; the last rename wins
        yield
        return
    with open(lock_path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(directory, os.W_OK | os.X_OK)


def _threads() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(32, cores))


def _allocate(handle, nbytes: int) -> None:
    """Reserve the array's blocks up front, so a full disk is an error here rather than a SIGBUS mid-build."""
    try:
        os.posix_fallocate(handle.fileno(), 0, nbytes)
    except AttributeError:
        handle.truncate(nbytes)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _Fallback(f"no space for {nbytes / 2**30:.1f} GiB ({os.strerror(err.errno)})") from None
        handle.truncate(nbytes)  # file systems without fallocate (EOPNOTSUPP, EINVAL)


def decode(path: str, plan: StorePlan) -> np.ndarray:
    """One file -> its stored H x W x 3 uint8 image (the evaluation pipeline's resize, then the centre square)."""
    return plan.prepare(load_image(path))


def _progress(total: int, description: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="img", leave=False, dynamic_ncols=True,
                disable=not (enabled and sys.stderr.isatty()))


def _build(directory: Path, stem: str, plan: StorePlan, dataset: str, entries: List[list], sources: List[str],
           reuse: Dict[int, int], old: Optional[ImageStore], progress: bool, threads: int) -> Tuple[dict, Path]:
    """Write a new array (rows of `reuse` {new row: old row} copied from `old`, the others decoded from `sources`)
    and then its manifest; returns both. Called with the store's lock held."""
    n = len(entries)
    shape = (n, 3, plan.height, plan.width)
    nbytes = int(np.prod(shape))
    free = shutil.disk_usage(directory).free
    if free < nbytes + _SPARE_BYTES:
        raise _Fallback(f"{nbytes / 2**30:.1f} GiB needed, {free / 2**30:.1f} GiB free")
    for leftover in directory.glob(f".{stem}.*.part"):  # a crashed builder's (we hold the lock)
        leftover.unlink(missing_ok=True)
    build_id = uuid.uuid4().hex[:12]
    final = directory / f"{stem}.{build_id}.u8"
    tmp = directory / f".{stem}.{build_id}.u8.part"
    todo = np.array([i for i in range(n) if i not in reuse], dtype=np.int64)
    start = time.perf_counter()
    try:
        with open(tmp, "wb+") as handle:
            _allocate(handle, nbytes)
        out = np.memmap(tmp, dtype=np.uint8, mode="r+", shape=shape)
        if reuse:
            new_rows = np.fromiter(reuse.keys(), dtype=np.int64, count=len(reuse))
            old_rows = np.fromiter(reuse.values(), dtype=np.int64, count=len(reuse))
            for s in range(0, len(new_rows), _COPY_ROWS):
                out[new_rows[s:s + _COPY_ROWS]] = old.array[old_rows[s:s + _COPY_ROWS]]
        if len(todo):
            log.info("dataset '%s': decoding %d images into %s (%d threads%s)", dataset, len(todo), final.name,
                     threads, f", {len(reuse)} rows kept" if reuse else "")

            def work(rows: np.ndarray, out: np.ndarray = out) -> int:
                block = np.empty((len(rows), plan.height, plan.width, 3), dtype=np.uint8)
                for k, row in enumerate(rows):
                    try:
                        block[k] = decode(sources[row], plan)
                    except Exception as err:  # noqa: BLE001 - any failure to decode is a bad file, named in one line
                        raise ImageDecodeError(f"dataset '{dataset}': cannot decode image {sources[row]} "
                                               f"({_reason(err)}); replace the file from the original archive") from err
                out[rows] = block.transpose(0, 3, 1, 2)
                return len(rows)

            chunks = [todo[s:s + _CHUNK] for s in range(0, len(todo), _CHUNK)]
            pool = ThreadPoolExecutor(threads)
            try:
                with _progress(len(todo), f"decoding {dataset}", progress) as bar:
                    for done in pool.map(work, chunks):
                        bar.update(done)
            finally:  # a bad file stops the build: drop the chunks not started, wait for the running ones
                pool.shutdown(wait=True, cancel_futures=True)
        out.flush()
        del out
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    manifest = {"format": FORMAT, "dataset": dataset, "resolution": plan.describe(), "array": final.name,
                "dtype": "uint8", "shape": list(shape), "nbytes": nbytes, "files": entries,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    manifest["sha256"] = manifest_hash(manifest)
    path = directory / f"{stem}.json"
    fd, name = tempfile.mkstemp(prefix=f".{stem}.", suffix=".json.part", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(manifest, handle, separators=(",", ":"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        final.unlink(missing_ok=True)
        raise
    for stale in directory.glob(f"{stem}.*.u8"):  # earlier arrays (a process still reading one keeps its mapping)
        if stale.name != final.name:
            try:
                stale.unlink()
            except OSError:
                pass
    seconds = time.perf_counter() - start
    log.info("dataset '%s': store %s written (%d images, %.2f GiB) in %.1fs (%.0f images/s decoded)", dataset,
             final, n, nbytes / 2**30, seconds, len(todo) / max(seconds, 1e-9))
    return manifest, final


def open_store(directory: Path, dataset: str, plan: StorePlan, paths: Sequence[str], root: str, mode: str,
               progress: bool = True, threads: Optional[int] = None) -> Tuple[ImageStore, Dict[str, int]]:
    """The store holding `paths` (valid, reused, or built now) and {path: row}. `_Fallback` when it would have to
    be written and cannot be; `StoreDamagedError` for a damaged one (unless mode == "rebuild")."""
    stem = _stem(dataset, plan)
    manifest_path = directory / f"{stem}.json"
    writable = _writable(directory)
    wanted = sorted(set(str(p) for p in paths))
    rel = _relative(wanted, root)
    stats = _stats(wanted)
    missing = [p for p, s in zip(wanted, stats) if s is None]
    if missing:
        raise DatasetMissingError(f"dataset '{dataset}': {len(missing)} listed image files are missing, e.g. "
                                  f"{', '.join(missing[:3])}; extract the complete dataset")
    current = {r: (s[0], s[1], p) for r, p, s in zip(rel, wanted, stats)}
    with _locked(directory / f"{stem}.lock", writable):
        old_manifest, old_array = None, None
        if mode != "rebuild" and manifest_path.is_file():
            old_manifest, old_array = _read_manifest(manifest_path, stem, plan)
        reason = "no store yet" if mode != "rebuild" else "dataset.store=rebuild"
        keep: Dict[str, Tuple[int, int, str]] = dict(current)
        old_rows: Dict[str, int] = {}
        if old_manifest is not None:
            files = old_manifest["files"]
            extra = [f for f in files if f[0] not in current]
            extra_stats = _stats([_absolute(f[0], root) for f in extra])
            unchanged_extra = {f[0]: (f[1], f[2], _absolute(f[0], root))
                               for f, s in zip(extra, extra_stats) if s == (f[1], f[2])}
            recorded = {f[0]: (f[1], f[2]) for f in files}
            added = [r for r in current if r not in recorded]
            changed = [r for r in current if r in recorded and recorded[r] != current[r][:2]]
            removed = len(extra) - len(unchanged_extra)
            if not added and not changed and not removed:
                store = ImageStore(old_array, old_manifest["shape"]).open()  # mapped while the lock holds it
                rows = {f[0]: i for i, f in enumerate(files)}
                return store, {p: rows[r] for r, p in zip(rel, wanted)}
            keep.update(unchanged_extra)
            old_rows = {f[0]: i for i, f in enumerate(files) if f[0] in keep and recorded[f[0]] == keep[f[0]][:2]}
            reason = (f"{len(added)} files added, {removed} removed, {len(changed)} changed since "
                      f"{manifest_path.name} was written")
        if not writable:
            raise _Fallback(f"{directory} is not writable")
        log.info("dataset '%s': building the decoded-image store in %s (%s)", dataset, directory, reason)
        order = sorted(keep)
        entries = [[r, keep[r][0], keep[r][1]] for r in order]
        sources = [keep[r][2] for r in order]
        reuse = {i: old_rows[r] for i, r in enumerate(order) if r in old_rows}
        old = ImageStore(old_array, old_manifest["shape"]) if old_manifest is not None else None
        manifest, array = _build(directory, stem, plan, dataset, entries, sources, reuse, old, progress,
                                 threads or _threads())
        rows = {r: i for i, r in enumerate(order)}
        return ImageStore(array, manifest["shape"]).open(), {p: rows[r] for r, p in zip(rel, wanted)}


# ------------------------------------------------------------------------------------------ entry point
def attach_store(data: DataSplits, mode: str = "auto", directory: Optional[str] = None, dataset_path: str = "",
                 progress: bool = True, threads: Optional[int] = None) -> DataSplits:
    """`data` with its `FileSplit`s read from a decoded-image store (module docstring); mode: none | auto | rebuild.

    The store's device augmentation replaces `data.train_augment(_params)` and its normalisation `data.mean/std`.
    Pipelines without a device equivalent, and stores that cannot be written (read-only folder, too little disk
    space), keep the files (a warning says why); a damaged store raises `StoreDamagedError`.
    """
    mode = str(mode)
    if mode not in MODES:
        raise ConfigError(f"dataset.store={mode!r} must be one of {', '.join(MODES)}")
    if mode == "none":
        return data
    splits = {s: getattr(data, s) for s in SPLITS if isinstance(getattr(data, s), FileSplit)
              and not isinstance(getattr(data, s), StoreSplit)}
    if not splits:
        return data
    evaluation = [split for name, split in splits.items() if name != "train"]
    if not evaluation:
        log.warning("dataset.store=%s: dataset '%s' has no file-backed evaluation split to take the resolution "
                    "from; reading the image files", mode, data.name)
        return data
    eval_tf = evaluation[0].transform
    if any(repr(split.transform) != repr(eval_tf) for split in evaluation[1:]):
        plan, why = None, "its evaluation splits transform differently"
    else:
        plan, why = store_plan(splits["train"].transform if "train" in splits else eval_tf, eval_tf)
    if plan is None:
        log.warning("dataset.store=%s: dataset '%s' reads its image files (%s)", mode, data.name, why)
        return data
    paths = [str(p) for split in splits.values() for p in split.paths]
    if not paths:
        return data
    where = store_dir(directory, dataset_path, paths)
    root = str(dataset_path) if dataset_path else os.path.commonpath([os.path.abspath(p) for p in paths])
    try:
        store, rows = open_store(where, data.name, plan, paths, root, mode, progress, threads)
    except _Fallback as why:
        if mode == "rebuild":
            raise UserError(f"dataset.store=rebuild: cannot write the decoded-image store in {where} ({why}); set "
                            f"dataset.store_dir (or ${ENV_DIR}) to a writable folder with room, or dataset.store=none")
        log.warning("dataset.store=auto: no decoded-image store for dataset '%s' (%s); reading the image files. "
                    "Set dataset.store_dir (or $%s) to a writable folder with room to use one", data.name, why, ENV_DIR)
        return data
    for name, split in splits.items():
        index = torch.as_tensor([rows[str(p)] for p in split.paths], dtype=torch.int64)
        setattr(data, name, StoreSplit(paths=split.paths, labels=split.labels, transform=split.transform,
                                       targets=split.targets, name=split.name, store=store, rows=index))
    if "train" in splits:
        data.train_augment, data.train_augment_params = plan.augment, dict(plan.augment_params)
    else:  # the evaluation crop only
        data.train_augment_params = {**data.train_augment_params, "size": plan.augment_params["size"]}
    data.mean, data.std = plan.mean, plan.std
    log.info("dataset '%s': images from the decoded-image store %s (%d x 3 x %d x %d uint8); device augmentation "
             "%s %s", data.name, store.path, len(store), plan.height, plan.width, plan.augment, plan.augment_params)
    for departure in plan.departures:
        log.info("dataset '%s' store departure: %s", data.name, departure)
    return data
