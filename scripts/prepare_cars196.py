#!/usr/bin/env python
"""Fetch and prepare Stanford Cars 196 for `dataset=cars196`.

Downloads `car_ims.tgz` + `cars_annos.mat` (or takes them via --archive), extracts them under ROOT,
and writes ROOT/train.txt, val.txt, test.txt (`path,label`, 0-based class id) with the vMF protocol:
classes 1-98 -> 83 train + 15 validation classes, classes 99-196 -> test. The loader reads the
extracted archive directly; the lists are for inspection and for code that wants them.
The historical Stanford URLs may be gone: pass --url or --archive with a copy obtained elsewhere.
Each file is checked against the md5 published for it (`vmf_embeddings.datasets.prepare.ARCHIVES`,
looked up by file name), before use and again when it is already on disk; --no-verify skips the check.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vmf_embeddings.datasets.prepare import default_urls, parser, run  # noqa: E402  (stdlib-only imports)

URLS = default_urls("cars196")  # car_ims.tgz, cars_annos.mat (URLs, sizes and digests: prepare.ARCHIVES)


def main() -> int:
    args = parser(__doc__.splitlines()[0], URLS).parse_args()
    from vmf_embeddings.datasets.archives import read_cars196

    return run(args, "cars196", URLS, read_cars196, "cars_annos.mat and car_ims/",
               extract_archive=lambda path: path.suffix != ".mat")


if __name__ == "__main__":
    sys.exit(main())
