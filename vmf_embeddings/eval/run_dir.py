"""Reading a run directory: its saved config and `embeddings/<split>.npz`, with one-line errors.

A run dir holds `config.yaml` (the resolved Hydra config of training) and `embeddings/{train,val,
test}.npz` (written by `mode=get_embeddings`). Every problem raises `RunDirError` whose message is a
single line naming the file and the fix, so `scripts/evaluate.py` can print it as is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

SPLITS = ("train", "val", "test")


class RunDirError(Exception):
    """A run dir (or one of its files) is missing or unusable; the message is one line with the fix."""


def extract_hint(run_dir: Path) -> str:
    cmd = f"python -m vmf_embeddings.main mode=get_embeddings run_dir={run_dir}"
    return f"run `{cmd}` (or the training overrides)"


def reextract(path: Path, problem: str, run_dir: Path) -> RunDirError:
    """The one-line error for a bad embeddings file: file, problem, and the extraction command."""
    return RunDirError(f"{path}: {problem}; re-extract: {extract_hint(run_dir)}")


@dataclass
class Split:
    """One split's arrays, validated: embeddings finite N x D, labels N, optional extras."""

    name: str
    path: Path
    arrays: Dict[str, np.ndarray]

    @property
    def embeddings(self) -> np.ndarray:
        return self.arrays["embeddings"]

    @property
    def labels(self) -> np.ndarray:
        return self.arrays["labels"]

    def get(self, key: str, default: Any = None) -> Any:
        return self.arrays.get(key, default)

    def scalar(self, key: str, default: Any = None) -> Any:
        """A 0-d entry as a Python value (str, float, int) or `default`."""
        if key not in self.arrays:
            return default
        return self.arrays[key].reshape(-1)[0].item() if self.arrays[key].size else default


@dataclass
class RunDir:
    path: Path
    config: Any  # omegaconf DictConfig
    splits: Dict[str, Split] = field(default_factory=dict)

    def cfg(self, dotted: str, default: Any = None) -> Any:
        """Config value by dotted key, `default` when absent or null."""
        from omegaconf import OmegaConf

        value = OmegaConf.select(self.config, dotted, default=default)
        return default if value is None else value


def is_run_dir(path: Path) -> bool:
    return (Path(path) / "config.yaml").is_file()


def find_run_dirs(path: Path) -> List[Path]:
    """`path` itself if it is a run dir, else every run dir below it (a sweep or runs root), sorted."""
    path = Path(path)
    if not path.exists():
        raise RunDirError(f"{path}: no such directory; pass a run dir (holding config.yaml) or a sweep dir")
    if is_run_dir(path):
        return [path]
    found = sorted(p.parent for p in path.rglob("config.yaml") if not any(s.startswith(".hydra") for s in p.parts))
    if not found:
        raise RunDirError(
            f"{path}/config.yaml not found, nor any run dir below it: pass a run dir written by "
            f"`python -m vmf_embeddings.main` (mode=train), or a sweep dir containing such runs"
        )
    return found


def load_config(run_dir: Path):
    from omegaconf import OmegaConf

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise RunDirError(
            f"{path} not found: not a run dir, or training never started; train with "
            f"`python -m vmf_embeddings.main <overrides>` first (it saves the resolved config there)"
        )
    try:
        return OmegaConf.load(path)
    except Exception as exc:  # noqa: BLE001 - any parse error becomes the one-line message
        raise RunDirError(f"{path}: cannot parse ({type(exc).__name__}); re-run training to rewrite it") from None


def load_split(path: Path, run_dir: Path) -> Split:
    """Load and validate one npz (lengths, finiteness, shapes)."""
    name = path.stem
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as exc:  # noqa: BLE001
        raise reextract(path, f"unreadable npz ({type(exc).__name__})", run_dir) from None
    for key in ("embeddings", "labels"):
        if key not in arrays:
            raise reextract(path, f"no '{key}' array", run_dir)
    emb, lab = arrays["embeddings"], arrays["labels"]
    if emb.ndim != 2:
        raise reextract(path, f"'embeddings' must be N x D, got shape {emb.shape}", run_dir)
    n = emb.shape[0]
    lab = lab.reshape(-1) if lab.ndim == 1 else lab
    if lab.ndim != 1 or len(lab) != n:
        raise reextract(path, f"'embeddings' has {n} rows but 'labels' has {len(lab)}", run_dir)
    for key in ("logits", "targets", "predictions", "kappa"):
        if key in arrays and arrays[key].shape[0] != n:
            raise reextract(path, f"'{key}' has {arrays[key].shape[0]} rows but 'embeddings' has {n}", run_dir)
    bad = ~np.isfinite(emb).all(1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise RunDirError(
            f"{path}: 'embeddings' has {int(bad.sum())} row(s) with NaN/inf (first: row {first}); training "
            f"diverged or the checkpoint is corrupt: retrain (e.g. lower mode.learning_rate), then re-extract"
        )
    if "logits" in arrays and not np.isfinite(arrays["logits"]).all():
        raise RunDirError(f"{path}: 'logits' contain NaN/inf; retrain (e.g. lower mode.learning_rate), then re-extract")
    if not np.issubdtype(lab.dtype, np.integer):
        raise reextract(path, f"'labels' must be integers, got {lab.dtype}", run_dir)
    arrays["labels"] = lab.astype(np.int64)
    return Split(name, path, arrays)


def load_run_dir(run_dir: Path, splits=SPLITS) -> RunDir:
    """Config plus every present split among `splits`; RunDirError when nothing can be evaluated."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: no such directory; pass a run dir (holding config.yaml) or a sweep dir")
    cfg = load_config(run_dir)
    emb_dir = run_dir / "embeddings"
    paths = [emb_dir / f"{s}.npz" for s in splits if (emb_dir / f"{s}.npz").is_file()]
    if not paths:
        names = "{" + ",".join(splits) + "}"
        raise RunDirError(f"{emb_dir}/{names}.npz not found: extract them first: {extract_hint(run_dir)}")
    rd = RunDir(run_dir, cfg)
    for p in paths:
        rd.splits[p.stem] = load_split(p, run_dir)
    return rd


def read_overrides(run_dir: Path) -> Optional[List[str]]:
    """Training overrides from Hydra's `.hydra*/overrides.yaml` (train first), or None."""
    from omegaconf import OmegaConf

    run_dir = Path(run_dir)
    for sub in (".hydra_train", ".hydra"):
        p = run_dir / sub / "overrides.yaml"
        if p.is_file():
            try:
                return [str(o) for o in OmegaConf.to_container(OmegaConf.load(p))]
            except Exception:  # noqa: BLE001 - overrides are informative only
                return None
    return None
