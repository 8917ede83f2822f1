"""Reject bad configurations up front, with one line naming the key and the fix."""

from __future__ import annotations

import math

from omegaconf import DictConfig

from vmf_embeddings.errors import ConfigError

MODES = ("train", "get_embeddings")


def validate(cfg: DictConfig) -> None:
    """Cross-group checks Hydra cannot express (unknown group options are already refused by Hydra)."""
    if cfg.mode.name not in MODES:
        raise ConfigError(f"mode.name={cfg.mode.name!r} is not one of {MODES}")
    params = cfg.arch.params
    method = cfg.method
    if bool(params.use_vmf) != bool(method.uses_vmf):
        wanted = "method=vmf_softmax" if params.use_vmf else f"arch.params.use_vmf={bool(method.uses_vmf)}"
        raise ConfigError(
            f"arch.params.use_vmf={bool(params.use_vmf)} does not match method={method.name}; use {wanted}"
        )
    if bool(params.learn_temp) and not bool(method.learns_temp):
        raise ConfigError(
            f"arch.params.learn_temp=true but method={method.name} has no temperature; drop the override"
        )
    if method.uses_vmf and int(params.embedding_dim) < 2:
        raise ConfigError(
            f"arch.params.embedding_dim={params.embedding_dim}: vmf_softmax needs embedding_dim >= 2 (a vMF on S^(d-1))"
        )
    if int(params.embedding_dim) < 1:
        raise ConfigError(f"arch.params.embedding_dim={params.embedding_dim} must be a positive integer")
    if int(params.n_classes) != int(cfg.dataset.n_train_classes):
        raise ConfigError(
            f"arch.params.n_classes={params.n_classes} but dataset={cfg.dataset.name} trains on "
            f"{cfg.dataset.n_train_classes} classes; set arch.params.n_classes={cfg.dataset.n_train_classes} or drop it"
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
