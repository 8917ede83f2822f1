"""Fixtures of the dataset tests; the fake on-disk datasets are written by `dataset_fakes.py`."""

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # `pytest tests/datasets` from anywhere, without installing
    sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import dataset_fakes  # noqa: E402


@pytest.fixture(scope="module")
def cars_root(tmp_path_factory):
    """Full 196-class Cars196 stand-in (2 images per class, all written: the loader checks every file; the
    first grayscale)."""
    root = tmp_path_factory.mktemp("cars196")
    dataset_fakes.write_cars196(root, n_images=None)
    return root


@pytest.fixture(scope="module")
def cub_root(tmp_path_factory):
    """Full 200-class CUB stand-in, 4 images per class (all written), the first 3 flagged official-train."""
    root = tmp_path_factory.mktemp("cub200")
    dataset_fakes.write_cub200(root, per_class=4, n_images=None, official_train=(0, 1, 2))
    return root
