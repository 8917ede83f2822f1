"""Deterministic run directories derived from the command-line overrides.

A run lives in `<runs_root>/<dataset>/<method>/<dim>dim/<name>/`. Without an explicit `name`, the name is
built from the overrides that shape the model: keys of the training procedure (mode.*, sampler.*) and of
the infrastructure (device, workers, resume...) are left out, so `mode=get_embeddings` with the same
overrides lands in the same directory. Under multirun every job also gets the procedure keys in its name
(sweeps vary them), so no two jobs share a directory. These functions are registered as OmegaConf
resolvers and used by `hydra.run.dir` / `hydra.sweep.subdir` in conf/config.yaml.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Iterable, Optional

from omegaconf import OmegaConf

from vmf_embeddings.config_keys import is_infrastructure, override_key

#: Beyond the shared infrastructure keys (vmf_embeddings.config_keys), a run name leaves out the keys
#: already in the run dir's path (dataset, method, dimension) and facts restated by other keys.
PATH_KEYS = {"dataset", "method", "arch.params.embedding_dim", "arch.params.use_vmf", "arch.params.n_classes"}
#: The training procedure: left out of a single run's name (so the extraction command, which lacks them,
#: finds the run), kept under multirun (sweeps vary them, and jobs must not share a dir).
PROCEDURE_PREFIXES = ("mode.", "sampler.", "optimizer.", "scheduler.")
PROCEDURE_KEYS = {"sampler", "optimizer", "scheduler"}
MAX_NAME_LENGTH = 100


def derived_name(overrides: Iterable[str], include_procedure: bool = False) -> str:
    """A readable, filesystem-safe name from `key=value` overrides (sorted, so order does not matter),
    e.g. `arch.params.init_temp:-1.0+seed:3`."""
    kept = []
    for override in overrides:
        key = override_key(str(override))
        if key in PATH_KEYS or is_infrastructure(key):
            continue
        if not include_procedure and (key in PROCEDURE_KEYS or key.startswith(PROCEDURE_PREFIXES)):
            continue
        kept.append(str(override).lstrip("+~").replace("=", ":", 1))
    if not kept:
        return "default"
    # `key:value` joined by `+`: no `=` or `,`, so a run dir can be pasted into `run_dir=...` unquoted
    # (Hydra's override grammar rejects `=` in a value and reads `,` as a sweep).
    name = "+".join(sorted(kept))
    name = re.sub(r"[^A-Za-z0-9_.:+\-@]", "_", name)
    if len(name) > MAX_NAME_LENGTH:
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        name = f"{name[: MAX_NAME_LENGTH - 11]}_{digest}"
    return name


def run_name(name: Optional[str], overrides: Iterable[str], multirun: bool) -> str:
    """The last path component(s): explicit name, derived name, or `<name>/<derived>` inside a sweep."""
    overrides = list(overrides or [])
    if not multirun:
        return str(name) if name else derived_name(overrides)
    derived = derived_name(overrides, include_procedure=True)
    return f"{name}/{derived}" if name else derived


def _part(value, placeholder: str) -> str:
    """A path component; a placeholder where the key is absent (`--cfg hydra` prints the hydra node alone)."""
    return placeholder if value is None else str(value)


def unusable_root(root) -> Optional[str]:
    """Why `root` cannot hold run dirs (an ancestor is a file, or not writable), or None."""
    path = Path(str(root)).absolute()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        what = "is not a directory" if not probe.is_dir() else "is not writable"
        return f"{probe} {what}, so no run dir can be created under {path}"
    return None


#: where Hydra may create its output dir when runs_root is unusable: the runner then refuses in one line
#: (a resolver that raised would make Hydra print a traceback instead)
UNUSABLE_ROOT_PLACEHOLDER = Path(tempfile.gettempdir()) / "vmf_embeddings_unusable_runs_root"


def run_dir_for(run_dir, runs_root, dataset, method, dim, name, overrides, hydra_mode="RUN") -> str:
    if unusable_root(run_dir or runs_root):
        return str(UNUSABLE_ROOT_PLACEHOLDER)
    if run_dir:
        return str(run_dir)
    path = f"{_part(dataset, '<dataset>')}/{_part(method, '<method>')}/{_part(dim, '<dim>')}dim"
    return f"{runs_root}/{path}/{run_name(name, overrides, hydra_mode == 'MULTIRUN')}"


def sweep_subdir_for(run_dir, dataset, method, dim, name, overrides) -> str:
    """The job's dir below the sweep dir (runs_root), whose writability `run_dir_for`'s check covers."""
    if run_dir:
        raise ValueError("run_dir=... names one run; it cannot be combined with -m (multirun)")
    path = f"{_part(dataset, '<dataset>')}/{_part(method, '<method>')}/{_part(dim, '<dim>')}dim"
    return f"{path}/{run_name(name, overrides, True)}"


def fair_jobs(max_jobs) -> int:
    """`hydra/launcher=joblib_fair`'s n_jobs: at most `max_jobs` jobs at a time and never more than the cores, so
    each job's `threads=auto` (the OMP_NUM_THREADS joblib gives its workers: cores // n_jobs) is at least 1."""
    try:
        from joblib import cpu_count  # the count joblib divides among its workers (affinity, cgroup quota)

        cores = cpu_count()
    except ImportError:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(int(max_jobs), int(cores)))


def register_resolvers() -> None:
    """Make the resolvers and the eval schema available to Hydra before it composes the config (idempotent)."""
    from vmf_embeddings.schema import register_schema

    register_schema()
    from vmf_embeddings.archs.conv4 import conv4_dim

    for resolver_name, function in (("run_dir_for", run_dir_for), ("sweep_subdir_for", sweep_subdir_for),
                                    ("conv4_dim", conv4_dim), ("fair_jobs", fair_jobs)):
        if not OmegaConf.has_resolver(resolver_name):
            OmegaConf.register_new_resolver(resolver_name, function)
