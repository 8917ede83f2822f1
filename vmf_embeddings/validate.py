"""Reject bad configurations up front, with one line naming the key (or file) and the fix."""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

from omegaconf import DictConfig

from vmf_embeddings.errors import ConfigError
from vmf_embeddings.legacy import apply_legacy_keys
from vmf_embeddings.schema import MODE_KEYS, STORE_MODES, check_required_keys

MODES = ("train", "get_embeddings")
SPLITS = ("train", "val", "test")
#: method.params.sampler of the vMF heads (vmf_embeddings.methods.vmf_distribution.SAMPLERS)
VMF_SAMPLERS = ("exact", "original")
#: sampler keys that count things: positive integers when present
SAMPLER_COUNTS = ("n_episodes", "n_classes", "n_samples", "batch_size", "n_way", "k_shot", "n_query", "m_clusters",
                  "d_per_cluster")


def integer(cfg: DictConfig, key: str, minimum: int, allow_none: bool = False) -> Optional[int]:
    """cfg[key] (dotted) as an int >= minimum, else a one-line ConfigError naming the key."""
    value: Any = _select(cfg, key)
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{key}={value!r} must be an integer >= {minimum}")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{key}={value!r} must be an integer >= {minimum}") from None
    if not math.isfinite(number) or number != int(number) or number < minimum:
        raise ConfigError(f"{key}={value!r} must be an integer >= {minimum}")
    return int(number)


def number(cfg: DictConfig, key: str, minimum: float = 0.0) -> float:
    """cfg[key] as a finite float >= minimum, else a one-line ConfigError."""
    value = _select(cfg, key)
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r} must be a finite number >= {minimum:g}") from None
    if isinstance(value, bool) or not math.isfinite(result) or result < minimum:
        raise ConfigError(f"{key}={value!r} must be a finite number >= {minimum:g}")
    return result


def _select(cfg: DictConfig, key: str) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.select(cfg, key, default=None)


def validate(cfg: DictConfig, choices: Optional[Dict[str, str]] = None) -> None:
    """Cross-group checks Hydra cannot express (unknown group options are already refused by Hydra).

    Also maps the vMF original's `arch.params.*` keys onto the method (vmf_embeddings/legacy.py), so a
    validated config is the one that runs. `choices` (Hydra's group choices) names files in errors.
    """
    check_required_keys(cfg, choices)
    if cfg.mode.name not in MODES:
        raise ConfigError(f"mode.name={cfg.mode.name!r} is not one of {MODES}")
    unknown = sorted(set(cfg.mode) - MODE_KEYS)
    if unknown:
        raise ConfigError(f"mode.{unknown[0]} is not a mode key (a typo?); the mode keys are {', '.join(sorted(MODE_KEYS))}")
    apply_legacy_keys(cfg)
    data_task, method_task = str(cfg.dataset.get("task", "classification")), str(cfg.method.get("task", "classification"))
    if (data_task == "detection") != (method_task == "detection"):
        raise ConfigError(
            f"method={cfg.method.name} is a {method_task} method but dataset={cfg.dataset.name} is a {data_task} "
            f"dataset; detection runs pair method=faster_rcnn | repmet_det with dataset=voc2007 | voc0712 | shapes_det")
    dim = integer(cfg, "arch.params.embedding_dim", 1)
    if cfg.method.get("uses_vmf", False) and dim < 2:
        raise ConfigError(
            f"arch.params.embedding_dim={dim}: vmf_softmax needs embedding_dim >= 2 (a vMF on S^(d-1))"
        )
    vmf_sampler = _select(cfg, "method.params.sampler") if cfg.method.get("uses_vmf", False) else None
    if vmf_sampler is not None and str(vmf_sampler) not in VMF_SAMPLERS:
        raise ConfigError(f"method.params.sampler={vmf_sampler!r} is not one of {', '.join(VMF_SAMPLERS)}")
    integer(cfg, "seed", 0)
    store = cfg.dataset.get("store")
    if store is not None and str(store) not in STORE_MODES:
        raise ConfigError(f"dataset.store={store!r} must be one of {', '.join(STORE_MODES)} (the decoded-image store "
                          "of file-backed datasets)")
    if str(cfg.get("amp_dtype", "bfloat16")) not in ("bfloat16", "bf16", "float16", "fp16"):  # runtime.AMP_DTYPES
        raise ConfigError(f"amp_dtype={cfg.amp_dtype!r} is not one of bfloat16, float16")
    if str(cfg.get("resume_from", "last")) not in ("last", "best"):
        raise ConfigError(f"resume_from={cfg.resume_from!r} must be last or best")
    mode = cfg.mode
    if mode.checkpoint not in ("best", "last"):
        raise ConfigError(f"mode.checkpoint={mode.checkpoint!r} must be best or last")
    bad_splits = [s for s in mode.splits if s not in SPLITS]
    if bad_splits:
        raise ConfigError(f"mode.splits names {bad_splits[0]!r}; choose from {', '.join(SPLITS)}")
    integer(cfg, "mode.batch_size", 1)
    if cfg.mode.name == "train":
        for key in ("learning_rate", "temp_learning_rate", "momentum", "weight_decay"):
            number(cfg, f"mode.{key}")
        integer(cfg, "mode.epochs", 1)
        integer(cfg, "mode.patience", 0)
        integer(cfg, "mode.max_steps_per_epoch", 1, allow_none=True)
        for key in SAMPLER_COUNTS:
            if key in cfg.sampler:
                integer(cfg, f"sampler.{key}", 1)
        if cfg.resume and cfg.overwrite:
            raise ConfigError("resume=true and overwrite=true contradict each other; pick one")
