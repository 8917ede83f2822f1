#!/usr/bin/env python
"""Fetch and prepare the Oxford-IIIT Pet dataset for `dataset=pets`.

Downloads `images.tar.gz` and `annotations.tar.gz` (or takes them via --archive) and extracts them under
ROOT (giving ROOT/images/ and ROOT/annotations/trainval.txt, test.txt); the loader reads these files
directly (official trainval 3,680 / test 3,669; val = a seeded stratified 10% of trainval). Nothing is
fetched when ROOT (or torchvision's ROOT/oxford-iiit-pet/) already holds them. Both archives are checked
against the md5 published in torchvision's OxfordIIITPet (`vmf_embeddings.datasets.prepare.ARCHIVES`) after
download and again when already on disk; --no-verify skips the check. Finally every image is checked and
the split sizes printed.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vmf_embeddings.datasets.prepare import finegrained_main  # noqa: E402  (stdlib-only imports)

NAME = "pets"  # archives: images.tar.gz, annotations.tar.gz (URLs and md5s: prepare.ARCHIVES)
EXPECTED = "images/ and annotations/trainval.txt, annotations/test.txt"


def main(argv=None) -> int:
    return finegrained_main(NAME, __doc__.splitlines()[0], EXPECTED, argv)


if __name__ == "__main__":
    sys.exit(main())
