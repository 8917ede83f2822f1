"""Reading a run directory: its saved config and `embeddings/<split>.npz`, with one-line errors.

A run dir holds `config.yaml` (the resolved Hydra config of training) and `embeddings/{train,val,
test}.npz` (written by `mode=get_embeddings`). Every problem raises `RunDirError` whose message is a
single line naming the file and the fix, so `scripts/evaluate.py` can print it as is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

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


def one_line(exc: BaseException, limit: int = 200) -> str:
    """`Type: message` of an exception on one line (whitespace collapsed, long messages cut)."""
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def load_config(run_dir: Path):
    """The run's saved config: a non-empty mapping naming `method.name` and `dataset.name`, else RunDirError."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise RunDirError(
            f"{path} not found: not a run dir, or training never started; train with "
            f"`python -m vmf_embeddings.main <overrides>` first (it saves the resolved config there)"
        )
    rewrite = "re-run this run's training command (its overrides: .hydra_train/overrides.yaml) to rewrite it"
    try:
        cfg = OmegaConf.load(path)
    except Exception as exc:  # noqa: BLE001 - any parse error becomes the one-line message
        raise RunDirError(f"{path}: cannot parse ({one_line(exc)}); {rewrite}") from None
    if not isinstance(cfg, DictConfig):
        raise RunDirError(f"{path}: expected a mapping of config keys, got a list; {rewrite}")
    if len(cfg) == 0:
        raise RunDirError(f"{path}: empty config (no keys); {rewrite}")
    for key in ("method.name", "dataset.name"):
        try:
            value = OmegaConf.select(cfg, key, default=None)
        except Exception:  # noqa: BLE001 - e.g. `method` is a list or a broken interpolation
            value = None
        if not isinstance(value, str) or not value:
            raise RunDirError(f"{path}: no '{key}' (a string) in the config; {rewrite}")
    node = cfg.get("eval")
    if node is not None and not isinstance(node, DictConfig):
        got = "a list" if isinstance(node, ListConfig) else repr(node)[:60]
        raise RunDirError(f"{path}: 'eval' must be a mapping of evaluation options, got {got}; fix or delete it")
    return cfg


def config_n_classes(cfg) -> Tuple[Optional[int], Optional[str]]:
    """(number of training classes, the config key it came from), or (None, None) when not configured."""
    from omegaconf import OmegaConf

    for key in ("method.head.n_classes", "dataset.n_train_classes"):
        try:
            value = OmegaConf.select(cfg, key, default=None)
        except Exception:  # noqa: BLE001 - unresolvable interpolation: not known
            continue
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value, key
    return None, None


#: per-row arrays besides embeddings / labels: key -> accepted dtype kinds (f float, i/u integer)
ROW_KEYS = {"log_probs": "f", "logits": "f", "targets": "fiu", "predictions": "fiu", "kappa": "fiu"}
KIND_NAMES = {"f": "float", "fiu": "numeric (float or integer)", "iu": "integer"}


def load_split(path: Path, run_dir: Path, n_classes: Optional[int] = None, n_classes_key: str = "") -> Split:
    """Load and validate one npz: dtypes, shapes, lengths, finiteness and, given `n_classes` (the
    config's training classes, from `n_classes_key`), the width of `log_probs` / `logits`."""
    name = path.stem
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001
        raise reextract(path, f"unreadable npz ({one_line(exc)})", run_dir) from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise reextract(path, "a single .npy array, not an npz archive of named arrays", run_dir)
    arrays: Dict[str, np.ndarray] = {}
    with loaded as f:
        for key in f.files:
            try:
                arrays[key] = f[key]
            except Exception as exc:  # noqa: BLE001 - pickled objects, truncated members
                raise reextract(path, f"'{key}' is unreadable ({one_line(exc)})", run_dir) from None
    for key in ("embeddings", "labels"):
        if key not in arrays:
            raise reextract(path, f"no '{key}' array", run_dir)
    emb, lab = arrays["embeddings"], arrays["labels"]
    if emb.dtype.kind != "f":
        raise reextract(path, f"'embeddings' must be a float array, got dtype {emb.dtype}", run_dir)
    if emb.ndim != 2 or 0 in emb.shape:
        raise reextract(path, f"'embeddings' must be N x D with N, D >= 1, got shape {emb.shape}", run_dir)
    n = emb.shape[0]
    if lab.ndim == 2 and lab.shape[1] == 1:
        lab = lab.reshape(-1)
    if lab.ndim != 1:
        raise reextract(path, f"'labels' must be a vector of {n} class ids, got shape {lab.shape}", run_dir)
    if len(lab) != n:
        raise reextract(path, f"'embeddings' has {n} rows but 'labels' has {len(lab)}", run_dir)
    if lab.dtype.kind not in "iu":
        raise reextract(path, f"'labels' must be integers, got dtype {lab.dtype}", run_dir)
    for key, kinds in ROW_KEYS.items():
        if key not in arrays:
            continue
        a = arrays[key]
        if a.dtype.kind not in kinds:
            raise reextract(path, f"'{key}' must be {KIND_NAMES[kinds]}, got dtype {a.dtype}", run_dir)
        if a.ndim == 0:
            raise reextract(path, f"'{key}' must have one row per embedding ({n}), got a scalar", run_dir)
        if a.shape[0] != n:
            raise reextract(path, f"'{key}' has {a.shape[0]} rows but 'embeddings' has {n}", run_dir)
    bad = ~np.isfinite(emb).all(1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise RunDirError(
            f"{path}: 'embeddings' has {int(bad.sum())} row(s) with NaN/inf (first: row {first}); training "
            f"diverged or the checkpoint is corrupt: retrain (e.g. lower mode.learning_rate), then re-extract"
        )
    if "logits" in arrays and not np.isfinite(arrays["logits"]).all():
        raise RunDirError(f"{path}: 'logits' contain NaN/inf; retrain (e.g. lower mode.learning_rate), then re-extract")
    if "log_probs" in arrays and (np.isnan(arrays["log_probs"]).any() or (arrays["log_probs"] == np.inf).any()):
        raise RunDirError(
            f"{path}: 'log_probs' contain NaN/+inf; retrain (e.g. lower mode.learning_rate), then re-extract"
        )
    for key in ("targets", "predictions", "kappa"):
        if key in arrays and not np.isfinite(arrays[key]).all():
            raise reextract(path, f"'{key}' contain NaN/inf", run_dir)
    for key, dims in (("log_probs", (2,)), ("logits", (2, 3))):
        if key not in arrays:
            continue
        a = arrays[key]
        if a.ndim not in dims:
            want = "N x C" if dims == (2,) else "N x C or N x S x C"
            raise reextract(path, f"'{key}' must be {want}, got shape {a.shape}", run_dir)
        width = a.shape[-1]
        if n_classes is not None and width != n_classes:
            raise reextract(
                path, f"'{key}' has {width} columns but config.yaml's {n_classes_key} is {n_classes}", run_dir
            )
        if lab.min() < 0 or lab.max() >= width:
            raise reextract(
                path, f"'{key}' has {width} columns but 'labels' span {int(lab.min())}..{int(lab.max())}", run_dir
            )
    if "cost_matrix" in arrays:
        cost = arrays["cost_matrix"]
        if cost.dtype.kind not in "fiu" or cost.ndim != 2 or cost.shape[0] != cost.shape[1]:
            problem = f"'cost_matrix' must be a numeric C x C array, got {cost.dtype} {cost.shape}"
            raise reextract(path, problem, run_dir)
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
    n_classes, key = config_n_classes(cfg)
    for p in paths:
        rd.splits[p.stem] = load_split(p, run_dir, n_classes, key or "")
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
