#!/usr/bin/env python
"""Fetch and prepare Oxford 102 Flowers for `dataset=flowers102`.

Downloads `102flowers.tgz`, `imagelabels.mat` and `setid.mat` (or takes them via --archive), extracts the
archive under ROOT (giving ROOT/jpg/image_00001.jpg ...) and puts the two .mat files next to it; the loader
reads these files directly (official split: train 1,020 / val 1,020 / test 6,149). Nothing is fetched when
ROOT (or torchvision's ROOT/flowers-102/) already holds them. Every file is checked against the md5 published
in torchvision's Flowers102 (`vmf_embeddings.datasets.prepare.ARCHIVES`) after download and again when it is
already on disk; --no-verify skips the check. Finally every image is checked and the split sizes printed.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vmf_embeddings.datasets.prepare import finegrained_main  # noqa: E402  (stdlib-only imports)

NAME = "flowers102"  # archives: 102flowers.tgz, imagelabels.mat, setid.mat (URLs and md5s: prepare.ARCHIVES)
EXPECTED = "jpg/, imagelabels.mat and setid.mat"


def main(argv=None) -> int:
    return finegrained_main(NAME, __doc__.splitlines()[0], EXPECTED, argv,
                            extract_archive=lambda path: not path.name.endswith(".mat"))


if __name__ == "__main__":
    sys.exit(main())
