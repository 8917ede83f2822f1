"""Placement cache: prototypes are computed once per (K, D, method, seed[, options]) and reused by every
run, as the official `prototypes-{D}d-{K}c.npy` files were, but keyed on all that shaped them.

Files: `<cache_dir>/prototypes-{D}d-{K}c-{method}-seed{seed}[-{hash}].npy` (K x D float64) and a `.json`
sidecar with the options and the placement statistics. The hash covers non-default options and the
word-vector file's content. Loading never trusts the name (psmmettes/hpn parsed D out of it, so a renamed
file silently built a wrong output layer): shape, unit norm and collapse are checked, and a bad file is
recomputed. Writes are atomic (temp file + os.replace), so concurrent runs of a sweep can share one cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from vmf_embeddings.checkpoint import atomic_write

from vmf_embeddings.prototypes.geometry import CollapsedPrototypesError, check_prototypes
from vmf_embeddings.prototypes.placement import PAPER_SEED, place_prototypes
from vmf_embeddings.prototypes.privileged import build_prior, file_digest

log = logging.getLogger(__name__)


def cache_name(n_classes: int, dim: int, method: str, seed: int, key: Optional[Dict[str, Any]] = None) -> str:
    """File stem for a placement; `key` (options, word-vector digest) adds a short content hash."""
    stem = f"prototypes-{int(dim)}d-{int(n_classes)}c-{method}-seed{int(seed)}"
    if key:
        digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:10]
        stem += f"-{digest}"
    return stem


def cache_key(options: Optional[Dict[str, Any]] = None, word_vectors: Optional[str] = None,
              privileged_weight: float = 1.0, n_positives: Optional[int] = 2) -> Dict[str, Any]:
    """What, besides (K, D, method, seed), shapes a placement: non-default options and the prior's inputs."""
    key: Dict[str, Any] = {k: v for k, v in dict(options or {}).items() if v is not None}
    if word_vectors:
        key.update(word_vectors=file_digest(word_vectors), privileged_weight=float(privileged_weight),
                   n_positives=n_positives)
    return key


def cache_path(cache_dir: str, n_classes: int, dim: int, method: str, seed: int, key: Dict[str, Any]) -> Path:
    return Path(cache_dir) / (cache_name(n_classes, dim, method, seed, key) + ".npy")


def load_or_place(n_classes: int, dim: int, method: str = "converged", seed: int = PAPER_SEED,
                  cache_dir: Optional[str] = "prototypes", word_vectors: Optional[str] = None,
                  privileged_weight: float = 1.0, n_positives: Optional[int] = 2,
                  options: Optional[Dict[str, Any]] = None, progress: bool = False) -> np.ndarray:
    """K x D float64 unit-row prototypes from the cache, placing (and caching) them when absent.

    `cache_dir` None or "" disables the cache. `options` go to the placement rule; `progress` reports
    the placement's steps (`placement.step_progress`).
    """
    options = {k: v for k, v in dict(options or {}).items() if v is not None}
    key = cache_key(options, word_vectors, privileged_weight, n_positives)
    path = None
    if cache_dir:
        path = cache_path(cache_dir, n_classes, dim, method, seed, key)
        if path.is_file():
            try:
                prototypes = np.load(path)
                check_prototypes(prototypes, n_classes, dim)
                log.info("loaded prototypes K=%d D=%d (%s, seed %d) from %s", n_classes, dim, method, seed, path)
                return prototypes.astype(np.float64)
            except (ValueError, OSError, CollapsedPrototypesError) as error:
                log.warning("ignoring cached prototypes %s (%s); placing them again", path, error)
    prior = build_prior(word_vectors, n_classes, n_positives, privileged_weight)
    result = place_prototypes(n_classes, dim, method=method, seed=seed, prior=prior, progress=progress, **options)
    if path is not None:
        atomic_write(path, lambda handle: np.save(handle, result.prototypes))
        sidecar = {"method": method, "seed": int(seed), "options": key, "stats": result.stats}
        atomic_write(path.with_suffix(".json"),
                      lambda handle: handle.write(json.dumps(sidecar, indent=2, default=str).encode()))
        log.info("cached prototypes at %s", path)
    return result.prototypes
