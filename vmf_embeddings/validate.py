"""Reject bad configurations up front, with one line naming the key (or file) and the fix."""

from __future__ import annotations

import math
from typing import Dict, Optional

from omegaconf import DictConfig

from vmf_embeddings.errors import ConfigError
from vmf_embeddings.legacy import apply_legacy_keys
from vmf_embeddings.schema import check_required_keys

MODES = ("train", "get_embeddings")


def validate(cfg: DictConfig, choices: Optional[Dict[str, str]] = None) -> None:
    """Cross-group checks Hydra cannot express (unknown group options are already refused by Hydra).

    Also maps the vMF original's `arch.params.*` keys onto the method (vmf_embeddings/legacy.py), so a
    validated config is the one that runs. `choices` (Hydra's group choices) names files in errors.
    """
    check_required_keys(cfg, choices)
    if cfg.mode.name not in MODES:
        raise ConfigError(f"mode.name={cfg.mode.name!r} is not one of {MODES}")
    apply_legacy_keys(cfg)
    dim = int(cfg.arch.params.embedding_dim)
    if dim < 1:
        raise ConfigError(f"arch.params.embedding_dim={dim} must be a positive integer")
    if cfg.method.get("uses_vmf", False) and dim < 2:
        raise ConfigError(
            f"arch.params.embedding_dim={dim}: vmf_softmax needs embedding_dim >= 2 (a vMF on S^(d-1))"
        )
    if cfg.mode.name == "train":
        mode = cfg.mode
        for key in ("learning_rate", "temp_learning_rate", "momentum", "weight_decay"):
            value = float(mode[key])
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"mode.{key}={mode[key]} must be a finite number >= 0")
        if int(mode.epochs) < 1:
            raise ConfigError(f"mode.epochs={mode.epochs} must be >= 1")
        if cfg.resume and cfg.overwrite:
            raise ConfigError("resume=true and overwrite=true contradict each other; pick one")
