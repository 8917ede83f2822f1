"""Place K hyperspherical prototypes in D dimensions once, into the cache that training reuses.

Key=value arguments (OmegaConf dotlist, like Hydra overrides):

    python scripts/place_prototypes.py K=100 D=10                      # converged (the runner's default)
    python scripts/place_prototypes.py K=100 D=10 method=paper         # the official rule (lr 0.1, 10k steps)
    python scripts/place_prototypes.py K=100 D=10 method=paper options.steps=1000   # the paper's text
    python scripts/place_prototypes.py K=200 D=50 method=lbfgs seed=1 cache_dir=/tmp/protos
    python scripts/place_prototypes.py K=100 D=50 word_vectors=wtv-cifar100.npy     # privileged information
    python scripts/place_prototypes.py K=46 D=46 out=prototypes-46d-46c.npy        # also copy to a file

Keys: K, D, method (converged | paper | annealed | lbfgs | slsqp | simplex | cross_polytope | circle),
seed (300), cache_dir (env VMF_PROTOTYPE_CACHE, else prototypes/; empty = no cache), word_vectors,
privileged_weight (1.0), n_positives (2), options.<name> (passed to the rule: steps, learning_rate,
restarts, ...), out (optional .npy copy). Training with method=hpn and the same K, D, placement, seed and
options loads the cached file instead of placing again. Prints the placement statistics as JSON.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vmf_embeddings.prototypes import cache_key, cache_path, load_or_place, placement_stats  # noqa: E402

DEFAULTS = {
    "K": None,
    "D": None,
    "method": "converged",
    "seed": 300,
    "cache_dir": os.environ.get("VMF_PROTOTYPE_CACHE", "prototypes"),
    "word_vectors": None,
    "privileged_weight": 1.0,
    "n_positives": 2,
    "options": {},
    "out": None,
}


def main(argv) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = OmegaConf.merge(OmegaConf.create(DEFAULTS), OmegaConf.from_dotlist(list(argv)))
    unknown = set(cfg.keys()) - set(DEFAULTS)
    if unknown or cfg.K is None or cfg.D is None:
        print(__doc__, file=sys.stderr)
        if unknown:
            print(f"error: unknown keys {sorted(unknown)}", file=sys.stderr)
        return 2
    options = OmegaConf.to_container(cfg.options, resolve=True)
    prototypes = load_or_place(
        int(cfg.K), int(cfg.D), method=str(cfg.method), seed=int(cfg.seed), cache_dir=cfg.cache_dir or None,
        word_vectors=cfg.word_vectors, privileged_weight=float(cfg.privileged_weight),
        n_positives=cfg.n_positives, options=options,
    )
    if cfg.out:
        np.save(cfg.out, prototypes)
    stats = placement_stats(prototypes)
    if cfg.cache_dir:
        key = cache_key(options, cfg.word_vectors, float(cfg.privileged_weight), cfg.n_positives)
        path = cache_path(cfg.cache_dir, int(cfg.K), int(cfg.D), str(cfg.method), int(cfg.seed), key)
        stats["cache_file"] = str(path)
    print(json.dumps(stats, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
