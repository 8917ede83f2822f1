"""Atomic checkpoints: a crash or Ctrl-C at any moment leaves the previous file intact."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Tuple, Union

import numpy as np
import torch

from vmf_embeddings.errors import CheckpointError
from vmf_embeddings.runtime import rng_state, set_rng_state

PathLike = Union[str, Path]


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
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise


def save_atomic(obj: Any, path: PathLike) -> None:
    """torch.save to a temporary file in the same directory, fsync, then os.replace onto `path`."""
    atomic_write(Path(path), lambda f: torch.save(obj, f))


def savez_atomic(path: PathLike, **arrays: np.ndarray) -> None:
    """np.savez with the same atomic rename."""
    atomic_write(Path(path), lambda f: np.savez(f, **arrays))


def load(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: train this run first (mode=train with the same overrides)")
    # Our own files: they hold RNG states and numpy arrays, so the restricted unpickler is not enough.
    return torch.load(path, map_location=map_location, weights_only=False)


@dataclass
class Progress:
    """Where a training run stands; saved in last.pt beside the components' states."""

    epoch: int = 0  # next epoch to run
    step: int = 0  # optimiser steps taken so far
    best_metric: float = -float("inf")
    best_epoch: int = -1
    finished: bool = False


def training_state(model, optimizer, scheduler, sampler, augment_generator_state, progress: Progress,
                   epoch: int) -> dict:
    """Everything last.pt holds to resume bit-for-bit after `epoch`."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "sampler": sampler.state_dict(),
        "augment_rng": augment_generator_state,
        "rng": rng_state(),
        "epoch": epoch,
        "step": progress.step,
        "best_metric": progress.best_metric,
        "best_epoch": progress.best_epoch,
        "finished": progress.finished,
    }


def restore_training_state(state: dict, model, optimizer, scheduler, sampler, set_augment_generator_state) -> Progress:
    """Load a last.pt into the components; returns where to continue."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    sampler.load_state_dict(state["sampler"])
    set_augment_generator_state(state["augment_rng"])
    set_rng_state(state["rng"])
    return Progress(epoch=int(state["epoch"]) + 1, step=int(state.get("step", 0)),
                    best_metric=float(state["best_metric"]), best_epoch=int(state["best_epoch"]),
                    finished=bool(state.get("finished", False)))
