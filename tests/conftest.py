"""Shared fixtures: compose the real configs with Hydra's compose API, runs under tmp_path, CPU only."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import List, Optional

# One intra-op thread that sleeps when idle: these models are tiny, and on a 2-core machine a second
# busy process makes two spinning OpenMP threads 10x slower (measured: 50 digits steps 1.25 s vs 15 s).
# Set before torch loads OpenMP; `threads=auto` in the runner reads OMP_NUM_THREADS.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from vmf_embeddings.rundir import register_resolvers  # noqa: E402

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
torch.set_num_threads(1)
# Prototype placements made by tests go to a scratch cache, not the user's ./prototypes.
os.environ.setdefault("VMF_PROTOTYPE_CACHE", tempfile.mkdtemp(prefix="vmf_prototypes_"))
register_resolvers()


def compose_config(overrides: Optional[List[str]] = None, return_hydra_config: bool = False) -> DictConfig:
    """The config `python -m vmf_embeddings.main <overrides>` would run with."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides or []), return_hydra_config=return_hydra_config)


# Settings that make a CPU test run small; everything else stays at its default.
FAST = ["device=cpu", "progress_bar=false", "num_workers=0"]


@pytest.fixture
def compose_cfg():
    return compose_config


@pytest.fixture
def runs_root(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    root.mkdir()
    return root


def killed_and_resumed_weights(overrides: List[str], tmp_path: Path, monkeypatch) -> tuple:
    """Weights of last.pt after an uninterrupted run and after one killed after its first epoch and resumed with
    resume=true (the same overrides): a bit-for-bit resume gives equal tensors."""
    import vmf_embeddings.train as train_module
    from vmf_embeddings import checkpoint
    from vmf_embeddings.main import run

    run(compose_config(overrides), tmp_path / "straight")
    monkeypatch.setattr(train_module, "_after_epoch", lambda e: (_ for _ in ()).throw(KeyboardInterrupt) if e == 0
                        else None)
    with pytest.raises(KeyboardInterrupt):
        run(compose_config(overrides), tmp_path / "killed")
    monkeypatch.setattr(train_module, "_after_epoch", lambda e: None)
    run(compose_config(overrides + ["resume=true"]), tmp_path / "killed")
    straight = checkpoint.load(tmp_path / "straight" / "checkpoints" / "last.pt")["model"]
    resumed = checkpoint.load(tmp_path / "killed" / "checkpoints" / "last.pt")["model"]
    return straight, resumed


def assert_same_weights(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)
