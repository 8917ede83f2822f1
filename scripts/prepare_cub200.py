#!/usr/bin/env python
"""Fetch and prepare CUB-200-2011 for `dataset=cub200` (and `dataset=cub200_hpn`).

Downloads `CUB_200_2011.tgz` (or takes it via --archive), extracts it under ROOT (giving
ROOT/CUB_200_2011/), and writes ROOT/train.txt, val.txt, test.txt (`path,label`, 0-based class id)
with the vMF protocol: classes 1-100 -> 85 train + 15 validation classes, classes 101-200 -> test.
The loader reads the extracted archive directly; the lists are for inspection and other code.
The archive is checked against its published size, SHA-256 and md5 (`vmf_embeddings.datasets.prepare.ARCHIVES`)
after download and again when it is already on disk; --no-verify skips the check.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vmf_embeddings.datasets.prepare import default_urls, parser, run  # noqa: E402  (stdlib-only imports)

URLS = default_urls("cub200")  # CUB_200_2011.tgz (URL, size and digests: prepare.ARCHIVES)


def main() -> int:
    args = parser(__doc__.splitlines()[0], URLS).parse_args()
    from vmf_embeddings.datasets.archives import read_cub200

    return run(args, "cub200", URLS, read_cub200, "CUB_200_2011/images.txt, image_class_labels.txt and images/")


if __name__ == "__main__":
    sys.exit(main())
