"""Seeding, determinism and device choice: the only place that touches global framework state."""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch

from vmf_embeddings.errors import ConfigError

log = logging.getLogger(__name__)


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
        return _local_gpu(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r} is not a torch device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available here; use device=auto or device=cpu")
    return _local_gpu(device)


def _local_gpu(device: torch.device) -> torch.device:
    """Under torchrun each process trains on its own GPU, cuda:LOCAL_RANK."""
    from vmf_embeddings.distributed import world

    if device.type == "cuda" and device.index is None and world().enabled:
        return torch.device("cuda", world().local_rank)
    return device


#: amp_dtype values and the autocast dtype each selects
AMP_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def amp_setting(cfg) -> "bool | torch.dtype":
    """`amp` as the loops take it: False, or the autocast dtype (`amp_dtype`: bfloat16 or float16)."""
    if not bool(cfg.get("amp", False)):
        return False
    name = str(cfg.get("amp_dtype", "bfloat16"))
    if name not in AMP_DTYPES:
        raise ConfigError(f"amp_dtype={name!r} is not one of bfloat16, float16")
    return AMP_DTYPES[name]


def autocast_dtype(amp) -> torch.dtype:
    """The dtype of an `amp` setting (True, as older callers pass, means bfloat16)."""
    return amp if isinstance(amp, torch.dtype) else torch.bfloat16


class CompileFallback:
    """`torch.compile(module)` called like the module, without becoming part of its state dict; when the first
    compiled call fails (no compiler, an unsupported op, ...) it warns once and runs eagerly from then on."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.compiled = torch.compile(module)
        self.failed = False

    def __call__(self, *args, **kwargs):
        if not self.failed:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as error:  # noqa: BLE001  (any compiler failure means: run eagerly)
                self.failed = True
                reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                log.warning(
                    "compile=true: torch.compile could not compile %s (%s: %s); training continues uncompiled",
                    type(self.module).__name__, type(error).__name__, reason[:200])
        return self.module(*args, **kwargs)
