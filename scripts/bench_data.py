"""Images per second of the decoded-image store against torchvision ImageFolder + DataLoader, side by side.

Writes its own synthetic JPEG folder (one subfolder per class, smooth random images of --size, no download)
into a temporary directory and feeds training batches from it three ways, with the same images, the same
training recipe at the same resolution (`transforms.dml_transforms(--recipe, --image-size)`: Resize(256),
[ColorJitter], RandomResizedCrop(224), flip, ToTensor, Normalize at 224), the same batch size and the same
number of DataLoader workers:

- store: the runner's `dataset.store=auto` path (vmf_embeddings/datasets/store.py). The store is built once
  (timed and printed on its own line), then each epoch's batches are rows of the memory-mapped array read by
  persistent workers, cropped, flipped, jittered and normalised by `DeviceAugment` on --device (on a CPU device
  inside the workers, the CPU's parallel hands).
- store rows: the same rows read by the same workers without the augmentation: the rate the store feeds an
  accelerator at, whose augmentation is a few batched kernels.
- files: the runner's `dataset.store=none` path, PIL transforms in persistent DataLoader workers.
- ImageFolder: `torchvision.datasets.ImageFolder` with the same PIL pipeline and a plain
  `DataLoader(shuffle=True)`, whose workers start again every epoch.

Epochs of the three run interleaved (store, files, ImageFolder, store, ...) so a busy machine slows them alike;
a rate is images delivered on --device (synchronised) over the time its epochs took, worker start-up included.
The last line is the store's rate over ImageFolder's.

    python scripts/bench_data.py --images 2000 --size 500x375 --workers 2 --epochs 3
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as vmf_embeddings.main, before torch loads OpenMP

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torchvision.datasets import ImageFolder  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vmf_embeddings.data_source import BatchSource  # noqa: E402
from vmf_embeddings.datasets.base import DataSplits, FileSplit  # noqa: E402
from vmf_embeddings.datasets.store import StoreBatches, attach_store, collate_batched  # noqa: E402
from vmf_embeddings.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD, dml_transforms  # noqa: E402


def _size(text: str) -> tuple:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 500x375") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"--size {text!r}: both sides must be >= 1")
    return w, h


def write_jpegs(root: Path, n: int, classes: int, size: tuple, seed: int) -> list:
    """`n` smooth random RGB JPEGs (quality 90) in `classes` subfolders of `root`; their paths, in class order."""
    paths = [root / f"class_{i % classes:03d}" / f"img_{i:06d}.jpg" for i in range(n)]
    for c in range(min(classes, n)):
        (root / f"class_{c:03d}").mkdir(parents=True, exist_ok=True)

    def one(i: int) -> None:
        rng = np.random.RandomState(seed + i)
        coarse = rng.randint(0, 256, size=(12, 16, 3)).astype(np.uint8)
        image = Image.fromarray(coarse).resize(size, Image.BICUBIC)
        noise = rng.randint(-12, 13, size=(size[1], size[0], 3))
        image = Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8))
        image.save(paths[i], quality=90)

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(one, range(n)))
    return sorted(paths)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Batches:
    """A batch sampler whose batches are set before each epoch."""

    batches: list = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _epoch_batches(n: int, batch_size: int, seed: int) -> list:
    return list(torch.randperm(n, generator=torch.Generator().manual_seed(seed)).split(batch_size))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="synthetic JPEGs to write (default 2000)")
    parser.add_argument("--size", type=_size, default=(500, 375), help="their WIDTHxHEIGHT (default 500x375, CUB-like)")
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--recipe", choices=("cub200", "cars196", "sop"), default="cub200",
                        help="the DML training recipe both paths apply (default cub200: shorter-side resize, jitter)")
    parser.add_argument("--image-size", type=int, default=224, help="training resolution (stored at 256/224 of it)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of every path (default 2)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda[:N]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (printed)")
    args = parser.parse_args(argv)
    if args.images < 2 or args.classes < 1 or args.workers < 0 or args.batch_size < 1 or args.epochs < 1:
        parser.error("--images >= 2, --classes >= 1, --workers >= 0, --batch-size >= 1, --epochs >= 1")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    tmp = Path(tempfile.mkdtemp(prefix="bench_data_"))
    try:
        folder = tmp / "images"
        start = time.perf_counter()
        paths = write_jpegs(folder, args.images, args.classes, args.size, args.seed)
        megabytes = sum(p.stat().st_size for p in paths) / 2**20
        print(f"synthetic JPEGs: {len(paths)} images {args.size[0]}x{args.size[1]} in {args.classes} classes "
              f"({megabytes:.0f} MB, written in {time.perf_counter() - start:.1f}s) under {tmp}")

        train_tf, eval_tf = dml_transforms(args.recipe, args.image_size)
        reference = ImageFolder(str(folder), transform=train_tf)
        labels = torch.as_tensor(reference.targets, dtype=torch.int64)
        files = [str(p) for p, _ in reference.samples]  # ImageFolder's order: the same image for the same index

        def splits() -> DataSplits:
            head = slice(0, min(len(files), 2 * args.batch_size))
            return DataSplits(
                name="bench", train=FileSplit(paths=files, labels=labels, transform=train_tf),
                val=FileSplit(paths=files[head], labels=labels[head], transform=eval_tf),
                test=FileSplit(paths=files[head], labels=labels[head], transform=eval_tf),
                n_train_classes=int(labels.max()) + 1, channels=3, image_size=args.image_size,
                mean=IMAGENET_MEAN, std=IMAGENET_STD)

        start = time.perf_counter()
        stored = attach_store(splits(), "auto", str(tmp / "store"), str(folder), progress=True)
        build = time.perf_counter() - start
        store_mb = stored.train.store.path.stat().st_size / 2**20
        print(f"store build (once): {len(files)} images in {build:.1f}s ({len(files) / build:.0f} images/s, "
              f"{os.cpu_count()} cores) -> {store_mb:.0f} MB of {stored.train.store.shape[1:]} uint8; device "
              f"augmentation {stored.train_augment}")
        plain = splits()

        store_source = BatchSource(stored.train, stored, device, stored.train_augment, args.workers, seed=args.seed)
        file_source = BatchSource(plain.train, plain, device, "none", args.workers, seed=args.seed)
        loader = DataLoader(reference, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                            pin_memory=device.type == "cuda", persistent_workers=False)

        def run_source(source: BatchSource, epoch: int) -> int:
            count = 0
            for x, _, _ in source.batches(_epoch_batches(len(files), args.batch_size, args.seed + epoch)):
                count += x.shape[0]
            return count

        rows_loader = DataLoader(StoreBatches(stored.train), batch_sampler=_Batches(), num_workers=args.workers,
                                 collate_fn=collate_batched, pin_memory=device.type == "cuda",
                                 persistent_workers=args.workers > 0)

        def run_rows(epoch: int) -> int:
            rows_loader.batch_sampler.batches = _epoch_batches(len(files), args.batch_size, args.seed + epoch)
            count = 0
            for x, _ in rows_loader:
                x = x.to(device, non_blocking=True)
                count += x.shape[0]
            return count

        def run_folder(epoch: int) -> int:
            count = 0
            for x, _ in loader:
                x = x.to(device, non_blocking=True)
                count += x.shape[0]
            return count

        paths_ = {"store": lambda e: run_source(store_source, e), "rows": run_rows,
                  "files": lambda e: run_source(file_source, e), "ImageFolder": run_folder}
        seconds = {name: 0.0 for name in paths_}
        images = {name: 0 for name in paths_}
        for epoch in range(args.epochs):
            for name, body in paths_.items():
                _sync(device)
                start = time.perf_counter()
                images[name] += body(epoch)
                _sync(device)
                seconds[name] += time.perf_counter() - start
        rate = {name: images[name] / seconds[name] for name in paths_}
        what = f"{args.epochs} epochs x {len(files)} images, {args.workers} workers, batch {args.batch_size}, " \
               f"device={device.type}, recipe={args.recipe} at {args.image_size}"
        print(f"store (dataset.store=auto):         {rate['store']:8.1f} images/s  ({what})")
        print(f"store rows, no augmentation:        {rate['rows']:8.1f} images/s  (uint8 batches read by the workers)")
        print(f"files (dataset.store=none):         {rate['files']:8.1f} images/s  (persistent workers, PIL)")
        print(f"torchvision ImageFolder+DataLoader: {rate['ImageFolder']:8.1f} images/s  (workers restart each epoch)")
        print(f"ratio store / ImageFolder: {rate['store'] / rate['ImageFolder']:.2f}x")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
