#!/usr/bin/env python
"""Fetch and prepare Stanford Online Products for `dataset=sop`.

Downloads `Stanford_Online_Products.zip` (or takes it via --archive), extracts it under ROOT (giving
ROOT/Stanford_Online_Products/), and writes ROOT/train.txt, val.txt, test.txt (`path,label`, 0-based
class id) with the vMF protocol: Ebay_train classes -> 9,620 train + 1,698 validation classes,
Ebay_test -> test (11,316 classes). The loader reads Ebay_train.txt/Ebay_test.txt directly.
The historical Stanford FTP URL may be gone: pass --url or --archive with a copy obtained elsewhere.
The archive is checked against its published size, SHA-256 and md5 (`vmf_embeddings.datasets.prepare.ARCHIVES`)
after download and again when it is already on disk; --no-verify skips the check.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vmf_embeddings.datasets.prepare import default_urls, parser, run  # noqa: E402  (stdlib-only imports)

URLS = default_urls("sop")  # Stanford_Online_Products.zip (URL, size and digests: prepare.ARCHIVES)


def main() -> int:
    args = parser(__doc__.splitlines()[0], URLS).parse_args()
    from vmf_embeddings.datasets.archives import read_sop

    return run(args, "sop", URLS, read_sop, "Stanford_Online_Products/Ebay_train.txt and Ebay_test.txt")


if __name__ == "__main__":
    sys.exit(main())
