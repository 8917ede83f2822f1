"""OmniArt (HPN's regression / joint experiment): creation-year target plus art-style (`school`) label.

Layout under `dataset_path` (HPN's `omniart/` folder):
- `train_complete.csv`, `test_complete.csv` with at least the columns `omni_id`, `creation_year`,
  `school` (`century` is ignored, as in HPN);
- images `train/<omni_id>.jpg` and `test/<omni_id>.jpg`.

Style classes are the sorted unique `school` values of the training CSV (46 in HPN's release) and
are reused for val/test. `targets` hold the raw year (float32, in years) for every split, so MAE is
always |decode(prediction) - year| in years (HPN's train-time MAE mixed encoded and raw years).

Departures from HPN, on purpose:
- validation = a seeded style-stratified `val_fraction` of the training CSV (HPN had no validation
  split and evaluated on test every 10 epochs); styles with one image stay in train;
- test images whose style never occurs in training are dropped by default (`unseen_test_styles=
  "drop"`); HPN kept them with label -1, always counted wrong — `"keep"` restores that, but then
  label -1 must be handled by whatever consumes the test split;
- evaluation uses a deterministic resize + center crop instead of HPN's random crop and flip.

`verify_files=True` (default) opens every image's header at load time and refuses missing or unreadable
files in one line (`files.check_image_files`).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch

from .base import DataSplits, FileSplit, missing_dataset
from .files import check_image_files
from .splits import stratified_split
from .transforms import IMAGENET_MEAN, IMAGENET_STD, hpn_transforms


def _read_csv(csv_path: Path, image_dir: Path, image_ext: str) -> Tuple[List[str], List[str], List[float], int]:
    """(paths, styles, years, rows dropped for a missing year or style)."""
    paths, styles, years, dropped = [], [], [], 0
    with open(csv_path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            style = (row.get("school") or "").strip()
            try:
                year = float(row.get("creation_year") or "nan")
            except ValueError:
                year = math.nan
            if not style or math.isnan(year):
                dropped += 1
                continue
            paths.append(str(image_dir / f"{row['omni_id'].strip()}{image_ext}"))
            styles.append(style)
            years.append(year)
    return paths, styles, years, dropped


def load_omniart(dataset_path: str, seed: int = 1234, image_size: int = 224, val_fraction: float = 0.1,
                 unseen_test_styles: str = "drop", image_ext: str = ".jpg", verify_files: bool = True) -> DataSplits:
    """Style classification + year regression; `targets` = creation year (float32, years)."""
    if unseen_test_styles not in ("drop", "keep"):
        raise ValueError(f"unseen_test_styles must be 'drop' or 'keep', got {unseen_test_styles!r}")
    root = Path(dataset_path)
    files = {s: root / f"{s}_complete.csv" for s in ("train", "test")}
    if not all(f.is_file() for f in files.values()) or not (root / "train").is_dir():
        raise missing_dataset(
            "omniart", dataset_path,
            "train_complete.csv, test_complete.csv (omni_id, creation_year, school) and train/, test/ <omni_id>.jpg",
            "extract HPN's omniart archive into DIR and set dataset.dataset_path=DIR",
        )
    train_paths, train_styles, train_years, train_dropped = _read_csv(files["train"], root / "train", image_ext)
    test_paths, test_styles, test_years, test_dropped = _read_csv(files["test"], root / "test", image_ext)

    styles = sorted(set(train_styles))
    style_to_idx: Dict[str, int] = {s: i for i, s in enumerate(styles)}
    train_labels = np.array([style_to_idx[s] for s in train_styles], dtype=np.int64)
    test_labels = np.array([style_to_idx.get(s, -1) for s in test_styles], dtype=np.int64)
    test_paths, test_years = np.array(test_paths, dtype=object), np.array(test_years, dtype=np.float32)
    n_unseen = int((test_labels < 0).sum())
    if unseen_test_styles == "drop":
        seen = test_labels >= 0
        test_paths, test_labels, test_years = test_paths[seen], test_labels[seen], test_years[seen]

    train_paths, train_years = np.array(train_paths, dtype=object), np.array(train_years, dtype=np.float32)
    keep, val = stratified_split(train_labels, val_fraction, seed)
    keep, val = np.sort(keep), np.sort(val)
    train_tf, eval_tf = hpn_transforms(image_size)

    def split(index: np.ndarray, transform) -> FileSplit:
        return FileSplit(paths=list(train_paths[index]), labels=torch.from_numpy(train_labels[index]),
                         transform=transform, targets=torch.from_numpy(train_years[index]))

    data = DataSplits(
        name="omniart",
        train=split(keep, train_tf),
        val=split(val, eval_tf),
        test=FileSplit(paths=list(test_paths), labels=torch.from_numpy(test_labels), transform=eval_tf,
                       targets=torch.from_numpy(test_years)),
        n_train_classes=len(styles),
        open_set=False,
        channels=3,
        image_size=image_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        train_augment="none",
        class_names=styles,
        extras={
            "year_range": (float(train_years.min()), float(train_years.max())),  # over train_complete.csv
            "rows_dropped": {"train": train_dropped, "test": test_dropped},
            "unseen_test_styles": {"count": n_unseen, "policy": unseen_test_styles},
        },
        unseen_label=-1 if unseen_test_styles == "keep" else None,
    )
    if verify_files:
        check_image_files(data, dataset_path)
    return data
