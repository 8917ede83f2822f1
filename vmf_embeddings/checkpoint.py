"""Checkpoints: atomic writes, loading without running code, and the training state they hold.

- Writes go to a temporary file beside the target, are fsynced, then `os.replace`d onto it: a crash,
  SIGKILL or Ctrl-C at any moment leaves the previous file intact. Temporary files a killed process
  left behind are removed when the next launch is accepted (`remove_orphans`).
- Loading uses `torch.load(weights_only=True)`: a checkpoint can only hold tensors and plain Python
  values, so a crafted file cannot run code. RNG, sampler and scheduler states are stored as tensors
  and plain types for that reason (`to_plain`).
- Every checkpoint carries `format`; a file of another format, a truncated file or a foreign one is
  refused in one line naming the file and the choices.
"""

from __future__ import annotations

import collections
import os
import pickle
import random
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Tuple, Union

import numpy as np
import torch

from vmf_embeddings.errors import CheckpointError

PathLike = Union[str, Path]
#: version of what last.pt / best.pt hold; bump when their layout changes
FORMAT = 2
#: fault injection for tests: seconds to sleep inside every checkpoint write, before the rename
WRITE_DELAY_ENV = "VMF_CHECKPOINT_WRITE_DELAY"


def checkpoint_paths(run_dir: PathLike) -> Tuple[Path, Path]:
    """(last.pt, best.pt) of a run dir: `last` after every epoch, `best` on a better validation metric."""
    directory = Path(run_dir) / "checkpoints"
    return directory / "last.pt", directory / "best.pt"


def atomic_write(path: Path, write) -> None:
    """Call write(file) on a temporary file beside `path`, fsync, then os.replace it onto `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as tmp_file:
            write(tmp_file)
            tmp_file.flush()
            os.fsync(tmp_file.fileno())
        delay = float(os.environ.get(WRITE_DELAY_ENV, "0") or 0)
        if delay > 0:
            time.sleep(delay)
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise


def remove_orphans(directory: PathLike) -> int:
    """Delete the `.<name>.*.tmp` files interrupted writes left in `directory`; returns how many."""
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    removed = 0
    for orphan in directory.glob(".*.tmp"):
        orphan.unlink(missing_ok=True)
        removed += 1
    return removed


def save_atomic(obj: Any, path: PathLike) -> None:
    """torch.save of `{**obj, "format": FORMAT}` with the atomic rename."""
    atomic_write(Path(path), lambda f: torch.save({**obj, "format": FORMAT}, f))


def savez_atomic(path: PathLike, **arrays: np.ndarray) -> None:
    """np.savez with the same atomic rename."""
    atomic_write(Path(path), lambda f: np.savez(f, **arrays))


def _choices(path: Path) -> str:
    if path.name == "last.pt":
        return ("resume from the best checkpoint with resume=true resume_from=best, or start again with "
                "overwrite=true")
    return "start again with overwrite=true (or extract from mode.checkpoint=last)"


def load(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> dict:
    """A checkpoint written by `save_atomic`, loaded without running code; one-line CheckpointError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: train this run first (mode=train with the same overrides)")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is truncated or corrupt (not a torch checkpoint archive); {_choices(path)}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path} is not a checkpoint of this runner: it holds objects other than tensors and plain values, "
            f"which are refused for safety (nothing in it was run); {_choices(path)}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as error:
        raise CheckpointError(
            f"{path} is truncated or corrupt ({type(error).__name__}); {_choices(path)}"
        ) from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a checkpoint of this runner (no model weights); {_choices(path)}")
    if state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {state.get('format')!r}, this version reads format {FORMAT}; "
            f"{_choices(path)}"
        )
    return state


# -- plain, weights-only-loadable states ----------------------------------------------------------------

def to_plain(value: Any) -> Any:
    """Tensors, numbers, strings, lists, tuples and dicts only (numpy arrays -> tensors, Counter -> dict)."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, collections.Counter):
        return {"__counter__": {int(k) if isinstance(k, (int, np.integer)) else k: v for k, v in value.items()}}
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_plain(v) for v in value)
    return value


def from_plain(value: Any) -> Any:
    """Inverse of `to_plain` for the structures that need it (Counter)."""
    if isinstance(value, dict):
        if set(value) == {"__counter__"}:
            return collections.Counter(value["__counter__"])
        return {k: from_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_plain(v) for v in value]
    return value


def rng_state() -> dict:
    """Every global RNG state, as tensors and plain types."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- the training state of last.pt ------------------------------------------------------------------------

@dataclass
class Progress:
    """Where a training run stands; saved in last.pt beside the components' states."""

    epoch: int = 0  # epoch to run next (or to continue, when epoch_step > 0)
    step: int = 0  # optimiser steps taken so far
    best_metric: float = -float("inf")
    best_epoch: int = -1
    finished: bool = False
    epoch_step: int = 0  # steps already taken in `epoch` (an interrupted epoch)
    epoch_loss: float = 0.0  # their summed loss

    def close_epoch(self, epoch: int, monitored: float, patience: int, epochs: int) -> bool:
        """Record a completed epoch and its monitored value (higher is better); True on a strict improvement.
        The run is finished after `patience` epochs without one, or at `epochs`."""
        improved = monitored > self.best_metric
        if improved:
            self.best_metric, self.best_epoch = monitored, epoch
        self.epoch = epoch + 1
        self.finished = epoch - self.best_epoch >= int(patience) or epoch + 1 >= int(epochs)
        return improved


def save_best(model, epoch: int, metric: float, scalars: dict, run_dir: PathLike) -> None:
    """best.pt: the weights of the best epoch so far, with its metric and scalars (weights only)."""
    save_atomic({"model": model.state_dict(), "epoch": epoch, "metric": metric, "scalars": scalars},
                checkpoint_paths(run_dir)[1])


def training_state(model, optimizer, scheduler, sampler_state: dict, augment_generator_state,
                   progress: Progress) -> dict:
    """Everything last.pt holds to resume bit-for-bit at `progress` (an epoch boundary or inside an epoch:
    then `sampler_state` is the sampler's state at the start of that epoch)."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": to_plain(scheduler.state_dict()),
        "sampler": to_plain(sampler_state),
        "augment_rng": augment_generator_state,
        "rng": rng_state(),
        "epoch": progress.epoch - 1,  # the last completed epoch (-1: none)
        "epoch_step": progress.epoch_step,
        "epoch_loss": float(progress.epoch_loss),
        "step": progress.step,
        "best_metric": float(progress.best_metric),
        "best_epoch": progress.best_epoch,
        "finished": progress.finished,
    }


def restore_training_state(state: dict, model, optimizer, scheduler, sampler,
                           set_augment_generator_state) -> Progress:
    """Load a last.pt into the components; returns where to continue."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(from_plain(state["scheduler"]))
    sampler.load_state_dict(from_plain(state["sampler"]))
    set_augment_generator_state(state["augment_rng"])
    set_rng_state(state["rng"])
    return Progress(epoch=int(state["epoch"]) + 1, step=int(state["step"]), best_metric=float(state["best_metric"]),
                    best_epoch=int(state["best_epoch"]), finished=bool(state["finished"]),
                    epoch_step=int(state.get("epoch_step", 0)), epoch_loss=float(state.get("epoch_loss", 0.0)))


def weights_from(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> Tuple[dict, Optional[int]]:
    """(model weights, epoch) of a checkpoint (best.pt or last.pt)."""
    state = load(path, map_location)
    return state["model"], state.get("epoch")
