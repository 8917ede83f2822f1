"""The one list of config keys that do not identify a run, shared by run naming, resume checks and
`scripts/aggregate.py`.

Infrastructure keys say where and how a run executes and where its files are: devices, workers,
logging, paths, lifecycle switches, evaluation options. Two runs that differ only in them trained
the same model on the same data. Each user of this list adds its own, documented exceptions:
run naming also drops the keys already in the run dir's path and the training procedure
(`vmf_embeddings.rundir`), aggregation also drops seeds (it averages over them).
"""

from __future__ import annotations

import json
from typing import Any, Dict

INFRA_KEYS = frozenset({
    "name", "runs_root", "run_dir", "device", "num_workers", "amp", "amp_dtype", "compile", "channels_last",
    "deterministic",
    "progress_bar", "resume", "overwrite", "threads", "resume_from", "allowed_targets",
    # lifecycle and extraction settings of the mode group
    "mode", "mode.name", "mode.extract_at_end", "mode.evaluate_at_end", "mode.checkpoint", "mode.splits",
    "mode.batch_size", "mode.projector", "mode.projector_max_points",
    "dataset.loader.download",
    # how a file-backed split is read (the decoded-image store or the files); a run started before the store
    # existed resumes with it
    "dataset.store",
})
INFRA_PREFIXES = ("hydra.", "hydra/", "eval.", "distributed.")
#: a key whose last component ends so names a file or folder (dataset_path, cache_dir, ...)
PATH_SUFFIXES = ("path", "dir")


def override_key(override: str) -> str:
    """`+a.b=1` -> `a.b`."""
    return str(override).split("=", 1)[0].lstrip("+~")


def is_infrastructure(key: str) -> bool:
    """True for keys that never identify a run (module docstring)."""
    last = key.rsplit(".", 1)[-1]
    return key in INFRA_KEYS or key.startswith(INFRA_PREFIXES) or last.endswith(PATH_SUFFIXES)


def is_seed(key: str) -> bool:
    return key.rsplit(".", 1)[-1] == "seed"


def flatten(tree: Any, prefix: str = "") -> Dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists become JSON strings (hashable, printable)."""
    out: Dict[str, Any] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(tree, (list, tuple)):
        out[prefix[:-1]] = json.dumps(tree)
    else:
        out[prefix[:-1]] = tree
    return out
