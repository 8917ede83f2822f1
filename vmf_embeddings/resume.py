"""Accepting, refusing, resuming or replacing a run in its run dir; nothing is written before acceptance.

- A launch into a dir that holds a run is refused unless `resume=true` (continue it) or `overwrite=true`
  (replace it). A refused launch changes nothing in the run dir.
- `resume=true` compares the saved `config.yaml` with the new config first. A change that alters the
  model or the data (arch, method, dataset, sampler, seed) is refused in one line naming the keys.
  Allowed changes (epochs, patience, learning rates, schedule, infrastructure) are applied to the
  restored optimiser and scheduler by the trainer and appended to `resume_history.jsonl`.
- `overwrite=true` trains into a fresh sibling dir and replaces the old run only once the new one has its
  first checkpoint (`promote`); until then a failing new run leaves the old one untouched.
- A lock file (`.lock`, holding host and PID) refuses a second launch into a live run; a stale lock left
  by a dead process is taken over with a warning.
- `name` and a relative `run_dir` must stay under `runs_root`; an absolute `run_dir` is taken as meant.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from omegaconf import DictConfig, OmegaConf

from vmf_embeddings import checkpoint
from vmf_embeddings.config_keys import flatten, is_infrastructure
from vmf_embeddings.errors import CheckpointError, ConfigError, UserError

log = logging.getLogger(__name__)

#: config subtrees whose change alters the model or the data a run trains on
MODEL_OR_DATA_PREFIXES = ("arch.", "method.", "dataset.", "sampler.")
MODEL_OR_DATA_KEYS = {"seed"}
#: inside those subtrees, keys that only tune the optimiser (a resume may change them)
PROCEDURE_PREFIXES = ("method.optim.",)
#: what a run dir holds that belongs to one training run (replaced by overwrite=true)
RUN_FILES = ("checkpoints", "tensorboard", "embeddings", "metrics.jsonl", "metrics.json", "config.yaml", "cost_matrix.npy",
             "resume_history.jsonl", ".hydra_train", ".hydra_get_embeddings")
LOCK_NAME = ".lock"


class RunDirBusyError(UserError):
    """Another live process owns the run dir."""


def alters_model_or_data(key: str) -> bool:
    if is_infrastructure(key) or key.startswith(PROCEDURE_PREFIXES):
        return False
    return key in MODEL_OR_DATA_KEYS or key.startswith(MODEL_OR_DATA_PREFIXES)


def _flat(cfg: Any) -> Dict[str, Any]:
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    return flatten(container or {})


_MISSING = object()


def config_changes(saved: Any, new: Any) -> Dict[str, tuple]:
    """{key: (old, new)} for every key whose value differs (absent keys as "<absent>")."""
    old_flat, new_flat = _flat(saved), _flat(new)
    changes = {}
    for key in sorted(set(old_flat) | set(new_flat)):
        old, value = old_flat.get(key, _MISSING), new_flat.get(key, _MISSING)
        if old != value:
            changes[key] = tuple("<absent>" if v is _MISSING else v for v in (old, value))
    return changes


#: options added after runs were saved, with the value that reproduces what those runs did
ADDED_DEFAULTS = {"method.params.sampler": "exact", "method.head.sampler": "exact"}


def _added_default(old: Any, new: Any, key: str = "") -> bool:
    """A key the saved run predates, now at an off / empty default (a newer version added an option) or at the
    value that behaves as before (ADDED_DEFAULTS); the `spherization.*` options only act with arch.spherize=true,
    which such a run cannot have had."""
    return old == "<absent>" and (new in (None, False, 0, "", "none", "[]", "{}") or key.startswith("spherization.")
                                  or ADDED_DEFAULTS.get(key, _MISSING) == new)


def model_or_data_changes(saved: Any, new: Any) -> List[str]:
    """`key (old -> new)` for every key that differs and alters the model or the data, sorted."""
    return [f"{key} ({old!r} -> {value!r})" for key, (old, value) in config_changes(saved, new).items()
            if alters_model_or_data(key) and not _added_default(old, value, key)]


def procedure_changes(saved: Any, new: Any) -> Dict[str, tuple]:
    """The allowed differences a resume applies and records (infrastructure keys left out)."""
    return {key: change for key, change in config_changes(saved, new).items()
            if not alters_model_or_data(key) and not is_infrastructure(key)}


# -- paths ----------------------------------------------------------------------------------------------

def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def confine_run_dir(cfg: DictConfig, run_dir: Path) -> None:
    """Refuse a `name` or relative `run_dir` that leads outside `runs_root` (one line)."""
    name = cfg.get("name")
    if name is not None:
        parts = Path(str(name)).parts
        if Path(str(name)).is_absolute() or ".." in parts or not parts:
            raise ConfigError(f"name={name!r} must be a plain relative name (no '..', not absolute): it names a "
                              f"dir under runs_root={cfg.runs_root}; use run_dir=/absolute/path for a dir elsewhere")
    explicit = cfg.get("run_dir")
    if explicit is None or Path(str(explicit)).is_absolute():
        return  # derived under runs_root, or absolute on purpose
    if not _inside(Path(str(explicit)), Path(str(cfg.runs_root))):
        raise ConfigError(f"run_dir={explicit} lies outside runs_root={cfg.runs_root}; pass an absolute run_dir to "
                          f"use a dir elsewhere on purpose")


# -- the lock ---------------------------------------------------------------------------------------------

def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """`<run_dir>/.lock` holding "host pid"; released on exit. A lock of a dead local process is stale."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.held = False

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = f"{socket.gethostname()} {os.getpid()}"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self.path.read_text().strip() if self.path.exists() else ""
                host, _, pid = owner.partition(" ")
                if host == socket.gethostname() and pid.isdigit() and not _process_alive(int(pid)):
                    log.warning("taking over the stale lock %s of dead process %s", self.path, pid)
                    self.path.unlink(missing_ok=True)
                    continue
                raise RunDirBusyError(
                    f"{self.path.parent} is in use by process {pid or '?'} on {host or '?'} ({self.path}); wait for "
                    f"it to finish, or delete {self.path} if that process is gone"
                ) from None
            with os.fdopen(fd, "w") as handle:
                handle.write(me + "\n")
            self.held = True
            return self
        raise RunDirBusyError(f"could not take the lock {self.path}; delete it if no run is using the dir")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# -- launch -------------------------------------------------------------------------------------------------

@dataclass
class Launch:
    """An accepted launch: where to train, what to resume from, what changed."""

    run_dir: Path  # the run's final dir
    work_dir: Path  # where training writes until promotion (== run_dir unless overwriting)
    resume_state: Optional[dict] = None
    changes: Dict[str, tuple] = field(default_factory=dict)

    @property
    def staged(self) -> bool:
        return self.work_dir != self.run_dir


def staging_dir(run_dir: Path) -> Path:
    return run_dir.parent / f".{run_dir.name}.overwrite"


def prepare_run_dir(cfg: DictConfig, run_dir: Path) -> Launch:
    """Decide fresh / resume / overwrite, or refuse; writes nothing but a fresh staging dir."""
    run_dir = Path(run_dir)
    last_path, best_path = checkpoint.checkpoint_paths(run_dir)
    if cfg.resume:
        source = best_path if cfg.get("resume_from", "last") == "best" else last_path
        if not source.is_file():
            raise CheckpointError(
                f"resume=true but there is no checkpoint at {source}; drop resume=true to start this run"
            )
        saved_path = run_dir / "config.yaml"
        if not saved_path.is_file():
            raise CheckpointError(f"resume=true but {saved_path} is missing; the run dir is incomplete: start it "
                                  f"again with overwrite=true")
        saved = OmegaConf.load(saved_path)
        changes = model_or_data_changes(saved, cfg)
        if changes:
            raise ConfigError(
                f"resume=true would change the model or data of {run_dir}: {'; '.join(changes)}; resume with the "
                f"original overrides, or start a new run (name=<new name>)"
            )
        state = checkpoint.load(source)
        return Launch(run_dir, run_dir, state, procedure_changes(saved, cfg))
    if last_path.is_file() or best_path.is_file():
        if not cfg.overwrite:
            try:
                kind = "finished" if checkpoint.load(last_path).get("finished") else "unfinished"
            except CheckpointError:
                kind = "damaged"
            raise CheckpointError(
                f"{run_dir} already holds a {kind} run; pass resume=true to continue it, overwrite=true to "
                f"replace it, or name=<new name> for a new run"
            )
        work = staging_dir(run_dir)
        shutil.rmtree(work, ignore_errors=True)  # an earlier overwrite that never reached a checkpoint
        work.mkdir(parents=True)
        log.warning("overwrite=true: training in %s; it replaces %s at its first checkpoint", work, run_dir)
        return Launch(run_dir, work)
    return Launch(run_dir, run_dir)


def promote(launch: Launch) -> None:
    """Replace the old run by the staged one (after the staged run's first checkpoint)."""
    if not launch.staged:
        return
    for name in RUN_FILES + ("reliability_train.png", "reliability_val.png", "reliability_test.png",
                              "embeddings_test.png"):
        target = launch.run_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    for item in launch.work_dir.iterdir():
        os.replace(item, launch.run_dir / item.name)
    shutil.rmtree(launch.work_dir, ignore_errors=True)
    log.warning("overwrite=true: the new run replaced the old one in %s", launch.run_dir)
    launch.work_dir = launch.run_dir


def discard_staging(launch: Launch) -> None:
    """A staged run that ends before its first checkpoint leaves the old run as it was."""
    if launch.staged and launch.work_dir.exists():
        shutil.rmtree(launch.work_dir, ignore_errors=True)


def write_records(cfg: DictConfig, launch: Launch, overrides: Iterable[str]) -> None:
    """config.yaml (the config now in force); the training overrides of a fresh run; the resume history."""
    work = launch.work_dir
    checkpoint.remove_orphans(work / "checkpoints")
    checkpoint.atomic_write(work / "config.yaml", lambda f: f.write(OmegaConf.to_yaml(cfg, resolve=True).encode()))
    overrides = [str(o) for o in overrides]
    if launch.resume_state is None:
        record = work / ".hydra_train" / "overrides.yaml"
        checkpoint.atomic_write(record, lambda f: f.write(OmegaConf.to_yaml(OmegaConf.create(overrides)).encode()))
        return
    entry = {"time": _dt.datetime.now().isoformat(timespec="seconds"),
             "resumed_after_epoch": int(launch.resume_state.get("epoch", -1)),
             "from": cfg.get("resume_from", "last"), "overrides": overrides,
             "changed": {k: [_jsonable(o), _jsonable(n)] for k, (o, n) in launch.changes.items()}}
    with open(work / "resume_history.jsonl", "a") as handle:
        handle.write(json.dumps(entry) + "\n")


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool, type(None), list, dict)) else str(value)


def launched(cfg, run_dir: Path, body):
    """`body(launch)` inside a confined, locked and prepared run dir (a fresh start, a resume or a staged
    overwrite: `prepare_run_dir`); the staging area is discarded however `body` ends."""
    run_dir = Path(run_dir)
    confine_run_dir(cfg, run_dir)
    with RunLock(run_dir):
        launch = prepare_run_dir(cfg, run_dir)
        try:
            return body(launch)
        finally:
            discard_staging(launch)

