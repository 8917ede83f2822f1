"""Place K hyperspherical prototypes in D dimensions once, into the cache that training reuses.

Key=value arguments (OmegaConf dotlist, like Hydra overrides):

    python scripts/place_prototypes.py K=100 D=10                      # converged (the runner's default)
    python scripts/place_prototypes.py K=100 D=10 method=paper         # the official rule (lr 0.1, 10k steps)
    python scripts/place_prototypes.py K=100 D=10 method=paper options.steps=1000   # the paper's text
    python scripts/place_prototypes.py K=200 D=50 method=lbfgs seed=1 cache_dir=/tmp/protos
    python scripts/place_prototypes.py K=100 D=50 word_vectors=wtv-cifar100.npy     # privileged information
    python scripts/place_prototypes.py K=46 D=46 out=prototypes-46d-46c.npy        # also copy to a file
    python scripts/place_prototypes.py K=9620 D=512 max_minutes=240 max_memory_gb=4   # a large placement

Keys: K (>= 2), D (>= 1; D = 1 only for K = 2), method (converged | paper | annealed | lbfgs | slsqp | simplex |
cross_polytope | circle), seed (300), cache_dir (env VMF_PROTOTYPE_CACHE, else prototypes/; empty = no cache),
word_vectors, privileged_weight (1.0), n_positives (2), options.<name> (passed to the rule: steps,
learning_rate, restarts, ...), out (optional .npy copy), max_memory_gb (2), max_minutes (10), force (false).
Training with method=hpn and the same K, D, placement, seed and options loads the cached file instead of
placing again. Prints the placement statistics as JSON.

Every bad argument is refused before anything runs, in one line naming the key and the fix (exit status
2): unknown keys or methods, non-integer or out-of-range values, options the rule does not take, layouts
that cannot exist (simplex with K > D+1, K > 2 on a line, more prototypes than D dimensions can keep below
the collapse limit: the spherical-cap packing bound, e.g. K=10000 D=3). A placement whose estimated peak memory
or time (from K, D, the method and its options: the optimisers hold a few K x K float64 matrices per
step) exceeds max_memory_gb / max_minutes is refused with the estimate; raise the limits or pass
force=true to run it anyway. Long placements show a progress bar on a terminal (a log line every 30 s
otherwise). A placement that collapses, or a file that cannot be written, exits 1 with one line.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vmf_embeddings.errors import UserError  # noqa: E402
from vmf_embeddings.prototypes import cache_key, cache_path, load_or_place, placement_stats  # noqa: E402
from vmf_embeddings.prototypes.geometry import check_prototypes  # noqa: E402
from vmf_embeddings.prototypes.placement import (  # noqa: E402
    PLACEMENTS,
    PlacementRequestError,
    check_options,
    estimate_cost,
    format_duration,
    infeasible,
    whole_number,
)
from vmf_embeddings.prototypes.privileged import load_word_vectors  # noqa: E402

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
    "max_memory_gb": 2.0,
    "max_minutes": 10.0,
    "force": False,
}
EXAMPLE = "e.g. `python scripts/place_prototypes.py K=100 D=10`"


def _integer(cfg, key, low):
    value = whole_number(cfg[key])
    if value is None or value < low:
        raise PlacementRequestError(f"{key}={cfg[key]}: must be an integer >= {low}; {EXAMPLE}")
    return value


def _number(cfg, key, positive=True):
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 \
            or (positive and value == 0):
        raise PlacementRequestError(f"{key}={value}: must be a finite number {'> 0' if positive else '>= 0'}")
    return float(value)


def _writable_dir(path: Path, key: str) -> None:
    """Refuse a directory that exists as a file or cannot be created / written."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise PlacementRequestError(f"{key}={path}: {existing} is a file, not a directory; pick another {key}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PlacementRequestError(f"{key}={path}: {existing} is not writable; pick another {key}")


def parse(argv):
    """The checked request from key=value arguments; raises PlacementRequestError (one line)."""
    for item in argv:
        key, sep, _ = item.partition("=")
        if not sep or not key:
            raise PlacementRequestError(f"argument {item!r} is not KEY=VALUE; {EXAMPLE}")
    try:
        merged = OmegaConf.merge(OmegaConf.create(DEFAULTS), OmegaConf.from_dotlist(list(argv)))
        cfg = OmegaConf.to_container(merged, resolve=True)
    except Exception as exc:  # noqa: BLE001 - dotlist syntax, interpolation, `options=5` over a mapping
        raise PlacementRequestError(f"cannot parse the arguments ({' '.join(str(exc).split())[:150]}); {EXAMPLE}") \
            from None
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise PlacementRequestError(f"unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(DEFAULTS)}")
    for key in ("K", "D"):
        if cfg[key] is None:
            raise PlacementRequestError(f"{key} is required (K classes, D dimensions); {EXAMPLE}")
    if whole_number(cfg["K"]) == 1:
        raise PlacementRequestError("K=1: a single prototype has nothing to be separated from (any unit vector "
                                    "will do); place K >= 2")
    n_classes, dim = _integer(cfg, "K", 2), _integer(cfg, "D", 1)
    method = cfg["method"]
    if not isinstance(method, str) or method not in PLACEMENTS:
        raise PlacementRequestError(f"method={method}: unknown placement rule; choose one of {', '.join(PLACEMENTS)}")
    if not isinstance(cfg["options"], dict):
        raise PlacementRequestError(f"options={cfg['options']}: set rule options one by one, e.g. options.steps=1000")
    options = check_options(method, cfg["options"])
    seed = _integer(cfg, "seed", 0)
    weight = _number(cfg, "privileged_weight", positive=False)
    n_positives = cfg["n_positives"]
    if n_positives is not None:
        n_positives = _integer(cfg, "n_positives", 1)
    word_vectors = cfg["word_vectors"]
    if word_vectors is not None:
        word_vectors = str(word_vectors)
        if not Path(word_vectors).is_file():
            raise PlacementRequestError(f"word_vectors={word_vectors}: no such file; pass a K x d .npy or text file")
        try:
            load_word_vectors(word_vectors, n_classes)
        except (ValueError, OSError) as exc:
            raise PlacementRequestError(f"word_vectors={word_vectors}: {' '.join(str(exc).split())}") from None
        if n_positives is not None and not 1 <= n_positives <= n_classes - 2:
            raise PlacementRequestError(f"n_positives={n_positives}: must be in 1..K-2 = 1..{n_classes - 2} "
                                        f"(or null: every pair)")
    problem = infeasible(n_classes, dim, method, options, word_vectors is not None)
    if problem:
        raise PlacementRequestError(problem)
    cache_dir = cfg["cache_dir"]
    cache_dir = str(cache_dir) if cache_dir not in (None, "") else None
    if cache_dir:
        _writable_dir(Path(cache_dir), "cache_dir")
    out = cfg["out"]
    if out is not None:
        out = str(out)
        parent = Path(out).parent
        if not parent.is_dir():
            raise PlacementRequestError(f"out={out}: directory {parent} does not exist; create it or pick another path")
        _writable_dir(parent, "out")
    force = cfg["force"]
    if not isinstance(force, bool):
        raise PlacementRequestError(f"force={force}: must be true or false")
    return {
        "n_classes": n_classes, "dim": dim, "method": method, "seed": seed, "cache_dir": cache_dir,
        "word_vectors": word_vectors, "privileged_weight": weight, "n_positives": n_positives,
        "options": options, "out": out, "max_memory_gb": _number(cfg, "max_memory_gb"),
        "max_minutes": _number(cfg, "max_minutes"), "force": force,
    }


def cache_file(request):
    """The cache file of this request (the name training looks up), or None without a cache."""
    if not request["cache_dir"]:
        return None
    key = cache_key(request["options"], request["word_vectors"], request["privileged_weight"], request["n_positives"])
    return cache_path(request["cache_dir"], request["n_classes"], request["dim"], request["method"], request["seed"],
                      key)


def cached(request) -> bool:
    """Whether a valid placement for this request is already in the cache (then nothing is placed)."""
    path = cache_file(request)
    if path is None or not path.is_file():
        return False
    try:
        check_prototypes(np.load(path), request["n_classes"], request["dim"])
    except Exception:  # noqa: BLE001 - a bad file is placed again by load_or_place
        return False
    return True


def check_budget(request) -> None:
    """Refuse a placement whose estimated memory or time exceeds the limits (unless force=true)."""
    if request["force"] or cached(request):
        return
    cost = estimate_cost(request["n_classes"], request["dim"], request["method"], request["options"],
                         request["word_vectors"] is not None, request["n_positives"])
    over, raise_to = [], []
    if cost.gigabytes > request["max_memory_gb"]:
        over.append(f"max_memory_gb={request['max_memory_gb']:g}")
        raise_to.append(f"max_memory_gb={math.ceil(cost.gigabytes * 1.5)}")
    if cost.seconds > 60 * request["max_minutes"]:
        over.append(f"max_minutes={request['max_minutes']:g}")
        raise_to.append(f"max_minutes={math.ceil(cost.seconds / 60 * 1.5)}")
    if not over:
        return
    memory = f"{cost.gigabytes:.1f} GB" if cost.gigabytes >= 0.1 else f"{cost.bytes / 1e6:.0f} MB"
    raise PlacementRequestError(
        f"K={request['n_classes']} D={request['dim']} method={request['method']} would need about {memory} "
        f"({cost.memory_detail}) and {format_duration(cost.seconds)} ({cost.time_detail}), over "
        f"{' and '.join(over)}; to run it anyway pass {' '.join(raise_to)} (or force=true), "
        f"or use fewer classes / steps"
    )


def main(argv) -> int:
    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__, file=sys.stderr)
        return 0 if argv else 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        request = parse(argv)
        check_budget(request)
    except PlacementRequestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if request["cache_dir"]:
        try:
            Path(request["cache_dir"]).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"error: cache_dir={request['cache_dir']}: cannot create it ({type(exc).__name__}: "
                  f"{exc.strerror or exc}); pick another cache_dir (empty = no cache)", file=sys.stderr)
            return 2
    try:
        prototypes = load_or_place(
            request["n_classes"], request["dim"], method=request["method"], seed=request["seed"],
            cache_dir=request["cache_dir"], word_vectors=request["word_vectors"],
            privileged_weight=request["privileged_weight"], n_positives=request["n_positives"],
            options=request["options"], progress=True,
        )
        if request["out"]:
            np.save(request["out"], prototypes)
    except (UserError, ValueError) as exc:  # collapsed prototypes and what the rule itself refuses
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot write {exc.filename or 'the cache'} ({type(exc).__name__}: {exc.strerror or exc}); "
              f"pick another cache_dir / out", file=sys.stderr)
        return 1
    stats = placement_stats(prototypes)
    if request["cache_dir"]:
        stats["cache_file"] = str(cache_file(request))
    print(json.dumps(stats, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
