"""Starting, refusing or resuming a run in its run dir, checked before anything is written.

A launch into a dir that holds a run is refused unless `resume=true` (continue it) or `overwrite=true`
(replace it). `resume=true` compares the saved `config.yaml` with the new config first: a change that
alters the model or the data (arch, method, dataset, sampler, seed) is refused in one line naming the
differing keys; changes to the procedure (more epochs, patience, extraction settings) and to the
infrastructure are accepted, and only then is `config.yaml` rewritten.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import DictConfig, OmegaConf

from vmf_embeddings import checkpoint
from vmf_embeddings.config_keys import flatten, is_infrastructure
from vmf_embeddings.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

#: config subtrees whose change alters the model or the data a run trains on
MODEL_OR_DATA_PREFIXES = ("arch.", "method.", "dataset.", "sampler.")
MODEL_OR_DATA_KEYS = {"seed"}
#: inside those subtrees, keys that only tune the optimiser (a resume may change them)
PROCEDURE_PREFIXES = ("method.optim.",)


def alters_model_or_data(key: str) -> bool:
    if is_infrastructure(key) or key.startswith(PROCEDURE_PREFIXES):
        return False
    return key in MODEL_OR_DATA_KEYS or key.startswith(MODEL_OR_DATA_PREFIXES)


def _flat(cfg: Any) -> Dict[str, Any]:
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    return flatten(container)


def model_or_data_changes(saved: Any, new: Any) -> List[str]:
    """`key (old -> new)` for every key that differs and alters the model or the data, sorted."""
    old_flat, new_flat = _flat(saved), _flat(new)
    changes = []
    for key in sorted(set(old_flat) | set(new_flat)):
        if not alters_model_or_data(key):
            continue
        missing = object()
        old, value = old_flat.get(key, missing), new_flat.get(key, missing)
        if old != value:
            show = lambda v: "<absent>" if v is missing else repr(v)  # noqa: E731
            changes.append(f"{key} ({show(old)} -> {show(value)})")
    return changes


def check_resume_config(cfg: DictConfig, run_dir: Path) -> None:
    """Refuse a resume whose config alters the saved run's model or data (one line, the keys named)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise CheckpointError(f"resume=true but {path} is missing; the run dir is incomplete: start it again "
                              f"with overwrite=true")
    changes = model_or_data_changes(OmegaConf.load(path), cfg)
    if changes:
        raise ConfigError(
            f"resume=true would change the model or data of {run_dir}: {'; '.join(changes)}; resume with the "
            f"original overrides, or start a new run (name=<new name>)"
        )


def prepare_run_dir(cfg: DictConfig, run_dir: Path) -> Optional[dict]:
    """Return the checkpoint to resume from, or None for a fresh run; never overwrite a run silently."""
    run_dir = Path(run_dir)
    last_path, _ = checkpoint.checkpoint_paths(run_dir)
    if cfg.resume:
        if not last_path.is_file():
            raise CheckpointError(
                f"resume=true but there is no checkpoint at {last_path}; drop resume=true to start this run"
            )
        check_resume_config(cfg, run_dir)
        return checkpoint.load(last_path)
    if last_path.is_file():
        if not cfg.overwrite:
            state = checkpoint.load(last_path)
            kind = "finished" if state.get("finished") else "unfinished"
            raise CheckpointError(
                f"{run_dir} already holds a {kind} run; pass resume=true to continue it, overwrite=true to "
                f"replace it, or name=<new name> for a new run"
            )
        log.warning("overwrite=true: replacing the run in %s", run_dir)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    return None


def write_run_config(cfg: DictConfig, run_dir: Path) -> None:
    """The resolved config, which extraction and evaluation rebuild the model from."""
    checkpoint.atomic_write(Path(run_dir) / "config.yaml",
                            lambda f: f.write(OmegaConf.to_yaml(cfg, resolve=True).encode()))
