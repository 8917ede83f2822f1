"""The config `python -m vmf_embeddings.main <overrides>` runs with, composed outside Hydra's entry point (the
benchmark and profiling scripts)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from vmf_embeddings.legacy import apply_legacy_keys
from vmf_embeddings.rundir import register_resolvers

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def compose_run_config(overrides: Iterable[str] = ()) -> DictConfig:
    """conf/config.yaml with `overrides`, the vMF original's backbone keys mapped as the runner maps them."""
    register_resolvers()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    apply_legacy_keys(cfg)
    return cfg
