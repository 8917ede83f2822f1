"""Seeding, determinism and device choice: the only place that touches global framework state."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from vmf_embeddings.errors import ConfigError


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices); deterministic=True trades speed for bitwise repeatability."""
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def configure_threads(threads="auto") -> int:
    """Set torch's CPU intra-op threads; returns the count.

    `auto`: $OMP_NUM_THREADS when exported, else the cores this process may run on. Together with
    OMP_WAIT_POLICY=PASSIVE (set by vmf_embeddings.main before torch loads), a run that shares the
    machine with a busy process slows down about in proportion to the CPU it lost.
    """
    if str(threads) == "auto":
        env = os.environ.get("OMP_NUM_THREADS", "")
        if env.isdigit() and int(env) > 0:
            count = int(env)
        else:
            count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    else:
        try:
            count = int(threads)
        except (TypeError, ValueError):
            raise ConfigError(f"threads={threads!r} must be auto or a positive integer") from None
        if count < 1:
            raise ConfigError(f"threads={threads!r} must be auto or a positive integer")
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; an explicit CUDA request without a GPU is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r} is not a torch device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available here; use device=auto or device=cpu")
    return device
