#!/usr/bin/env python
"""Fetch and prepare Stanford Dogs for `dataset=dogs` (needs --no-verify: no checksum is published).

Downloads `images.tar` and `lists.tar` (or takes them via --archive) and extracts them under ROOT (giving
ROOT/Images/<wnid>-<breed>/ and ROOT/train_list.mat, test_list.mat, file_list.mat); the loader reads these
files directly (official train 12,000 / test 8,580; val = a seeded stratified 10% of train). Nothing is
fetched when ROOT already holds them. The authors publish no size or checksum for these archives (and
torchvision has no Stanford Dogs), so `vmf_embeddings.datasets.prepare.ARCHIVES` has none and --no-verify is
required to use them. Finally every image is checked and the split sizes printed.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vmf_embeddings.datasets.prepare import finegrained_main  # noqa: E402  (stdlib-only imports)

NAME = "dogs"  # archives: images.tar, lists.tar (URLs: prepare.ARCHIVES; no published checksum)
EXPECTED = "Images/ and train_list.mat, test_list.mat"


def main(argv=None) -> int:
    return finegrained_main(NAME, __doc__.splitlines()[0], EXPECTED, argv)


if __name__ == "__main__":
    sys.exit(main())
