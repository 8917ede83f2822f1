"""Class cost matrices (the `cost` config group): what a mistake between two classes costs.

Metric-guided prototype learning (Garnot & Landrieu, "Leveraging Class Hierarchies with Metric-Guided Prototype
Learning", BMVC 2021) and hierarchy-aware evaluation both need a C x C matrix D with D[y, y] = 0:

- `tree`: path length between the leaves of a hierarchy (edges on the path through their lowest common
  ancestor), e.g. 2 for siblings at equal depth;
- `lca`: height of the lowest common ancestor above the deeper leaf (Bertinetto et al., CVPR 2020): half the
  path length for equal-depth leaves;
- `ordinal`: |i - j| (ordered classes, e.g. digit values);
- `csv`: a user's matrix;
- `none`: no matrix.

A hierarchy is either nested lists whose leaves are the class ids (`[[[1, 7], [4]], [[0, 6, 9], [3, 8]], [[2, 5]]]`)
or a parent list: entry n is the parent of node n, nodes 0..C-1 are the classes, the root's parent is null / -1;
or a string naming either a packaged hierarchy (`packaged_hierarchies()`: `cifar100` is
`vmf_embeddings/hierarchies/cifar100.yaml`) or a `.yaml` / `.yml` / `.json` file holding one of the two forms.
Every matrix is checked (C x C for the dataset's C, finite, non-negative, symmetric, zero diagonal); a bad entry
is refused in one line naming it. Training writes the matrix to `<run_dir>/cost_matrix.npy`, where evaluation
finds it.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml

from vmf_embeddings.errors import ConfigError


def _plain(value: Any) -> Any:
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return value


_HIERARCHY_SUFFIXES = (".yaml", ".yml", ".json")


def _packaged_dir():
    return resources.files("vmf_embeddings") / "hierarchies"


def packaged_hierarchies() -> List[str]:
    """Names of the hierarchies shipped in `vmf_embeddings/hierarchies/` (a name is the file name less its suffix)."""
    folder = _packaged_dir()
    if not folder.is_dir():  # pragma: no cover - an install without the data files
        return []
    return sorted({Path(f.name).stem for f in folder.iterdir() if f.name.endswith(_HIERARCHY_SUFFIXES)})


def load_hierarchy(hierarchy: Any, key: str = "dataset.hierarchy") -> Any:
    """A hierarchy as plain nested lists / a parent list; a string names a packaged hierarchy or a YAML/JSON file.

    Other values pass through unchanged (None stays None). `key` names the config key in error messages."""
    hierarchy = _plain(hierarchy)
    if not isinstance(hierarchy, (str, os.PathLike)):
        return hierarchy
    value = os.fspath(hierarchy)
    names = packaged_hierarchies()
    fix = (f"use a packaged hierarchy ({', '.join(names) or 'none installed'}), a path to a .yaml/.yml/.json file "
           f"of nested lists or a parent list, or the nested lists themselves")
    if value in names:
        source = next(_packaged_dir() / f"{value}{suffix}" for suffix in _HIERARCHY_SUFFIXES
                      if (_packaged_dir() / f"{value}{suffix}").is_file())
        suffix = Path(source.name).suffix
    else:
        source = Path(value).expanduser()
        suffix = source.suffix.lower()
        if suffix not in _HIERARCHY_SUFFIXES:
            raise ConfigError(f"{key}={value}: not a packaged hierarchy nor a .yaml/.yml/.json file; {fix}")
        if not source.is_file():
            raise ConfigError(f"{key}={value}: no such file; {fix}")
    try:
        text = source.read_text(encoding="utf-8")
        loaded = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as error:  # ValueError: bad JSON or UTF-8
        raise ConfigError(f"{key}={value}: cannot read it as {suffix[1:].upper()} "
                          f"({' '.join(str(error).split())})") from None
    if not isinstance(loaded, list) or not loaded:
        raise ConfigError(f"{key}={value}: the file holds {type(loaded).__name__}, not a non-empty list (nested lists "
                          f"of class ids or a parent list)")
    return loaded


def _tree_from_nested(nested: Any, n_classes: int, key: str = "cost.hierarchy") -> Tuple[List[int], Dict[int, int]]:
    """(parent of every node, depth of every node) from nested lists; leaves are 0..C-1, inner nodes C.."""
    parents: Dict[int, int] = {}
    depth: Dict[int, int] = {}
    counter = [n_classes]

    def walk(node: Any, parent: int, level: int) -> None:
        if isinstance(node, (list, tuple)):
            me = counter[0]
            counter[0] += 1
            parents[me], depth[me] = parent, level
            for child in node:
                walk(child, me, level + 1)
            return
        if isinstance(node, bool) or not isinstance(node, (int, np.integer)):
            raise ConfigError(f"{key}: leaf {node!r} is not a class id (an integer 0..{n_classes - 1})")
        leaf = int(node)
        if not 0 <= leaf < n_classes:
            raise ConfigError(f"{key}: leaf {leaf} is outside the dataset's classes 0..{n_classes - 1}")
        if leaf in parents:
            raise ConfigError(f"{key}: class {leaf} appears twice in the hierarchy")
        parents[leaf], depth[leaf] = parent, level

    walk(nested, -1, 0)
    missing = [c for c in range(n_classes) if c not in parents]
    if missing:
        raise ConfigError(f"{key}: classes {missing[:5]} are missing from the hierarchy ({len(missing)} in all)")
    size = counter[0]
    return [parents[n] for n in range(size)], {n: depth[n] for n in range(size)}


def _tree_from_parents(parent_list: Sequence[Any], n_classes: int, key: str = "cost.hierarchy") -> Tuple[List[int], Dict[int, int]]:
    parents = [-1 if p is None else int(p) for p in parent_list]
    if len(parents) < n_classes:
        raise ConfigError(f"{key}: a parent list needs at least the {n_classes} classes, got {len(parents)}")
    for node, parent in enumerate(parents):
        if parent >= len(parents) or parent < -1:
            raise ConfigError(f"{key}: node {node}'s parent {parent} is not a node (0..{len(parents) - 1})")
    depth: Dict[int, int] = {}

    def find(node: int, seen: Tuple[int, ...] = ()) -> int:
        if node in depth:
            return depth[node]
        if node in seen:
            raise ConfigError(f"{key}: node {node} is its own ancestor (a cycle)")
        depth[node] = 0 if parents[node] < 0 else find(parents[node], seen + (node,)) + 1
        return depth[node]

    for node in range(len(parents)):
        find(node)
    roots = [n for n, p in enumerate(parents) if p < 0]
    if len(roots) != 1:
        raise ConfigError(f"{key}: a tree needs exactly one root (parent null or -1), found {len(roots)}")
    return parents, depth


def _ancestors(node: int, parents: List[int]) -> List[int]:
    path = [node]
    while parents[path[-1]] >= 0:
        path.append(parents[path[-1]])
    return path


def parse_hierarchy(hierarchy: Any, n_classes: int, user: str = "cost") -> Tuple[List[int], Dict[int, int]]:
    """(parent of every node, -1 for the root; depth of every node) of nested lists or a parent list.

    Nodes 0..C-1 are the classes; inner nodes follow. `user` names who needs the tree in the error message.
    A string names a packaged hierarchy (`packaged_hierarchies()`) or a .yaml/.yml/.json file (`load_hierarchy`)."""
    key = ("cost.hierarchy" if user.startswith("cost") else "method.params.hierarchy" if user.startswith("method")
           else "dataset.hierarchy")
    hierarchy = load_hierarchy(hierarchy, key)
    if hierarchy is None:
        raise ConfigError(f"{user} needs a class hierarchy: the dataset has none (dataset.hierarchy); set "
                          f"dataset.hierarchy=... (or {key}=...)")
    flat = isinstance(hierarchy, (list, tuple)) and all(p is None or isinstance(p, int) for p in hierarchy) \
        and len(hierarchy) >= n_classes and any(p is None or p == -1 for p in hierarchy)
    return _tree_from_parents(hierarchy, n_classes, key) if flat else _tree_from_nested(hierarchy, n_classes, key)


def _pairwise(hierarchy: Any, n_classes: int, kind: str) -> np.ndarray:
    if _plain(hierarchy) is None:
        raise ConfigError(f"cost={kind} needs a hierarchy: the dataset has none (dataset.hierarchy); set "
                          f"cost.hierarchy=... or use cost=ordinal / cost=csv")
    parents, depth = parse_hierarchy(hierarchy, n_classes, f"cost={kind}")
    chains = [_ancestors(c, parents) for c in range(n_classes)]
    out = np.zeros((n_classes, n_classes))
    for i in range(n_classes):
        ancestors_i = set(chains[i])
        for j in range(n_classes):
            lca = next(a for a in chains[j] if a in ancestors_i)
            up_i, up_j = depth[i] - depth[lca], depth[j] - depth[lca]
            out[i, j] = up_i + up_j if kind == "tree" else max(up_i, up_j)
    return out


def tree_cost(n_classes: int, hierarchy: Any = None) -> np.ndarray:
    return check_cost_matrix(_pairwise(hierarchy, int(n_classes), "tree"), int(n_classes), "cost=tree")


def lca_cost(n_classes: int, hierarchy: Any = None) -> np.ndarray:
    return check_cost_matrix(_pairwise(hierarchy, int(n_classes), "lca"), int(n_classes), "cost=lca")


def ordinal_cost(n_classes: int) -> np.ndarray:
    index = np.arange(int(n_classes), dtype=np.float64)
    return np.abs(index[:, None] - index[None, :])


def csv_cost(n_classes: int, path: str) -> np.ndarray:
    file = Path(str(path))
    if not file.is_file():
        raise ConfigError(f"cost.path={path}: no such file; pass a C x C comma-separated matrix")
    try:
        matrix = np.loadtxt(file, delimiter=",", ndmin=2)
    except ValueError as error:
        raise ConfigError(f"cost.path={path}: not a numeric comma-separated matrix ({error})") from None
    return check_cost_matrix(matrix, int(n_classes), f"cost.path={path}")


def no_cost(n_classes: int) -> None:
    return None


def check_cost_matrix(matrix: Any, n_classes: int, source: str = "the cost matrix") -> np.ndarray:
    """Refuse a matrix that is not a C x C finite, non-negative, symmetric, zero-diagonal array (one line)."""
    d = np.asarray(matrix, dtype=np.float64)
    if d.shape != (n_classes, n_classes):
        raise ConfigError(f"{source}: shape {d.shape}, but the dataset has {n_classes} classes (need {n_classes} x {n_classes})")
    bad = ~np.isfinite(d)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ConfigError(f"{source}: entry [{i}, {j}] is {d[i, j]}; every cost must be finite")
    if (d < 0).any():
        i, j = np.argwhere(d < 0)[0]
        raise ConfigError(f"{source}: entry [{i}, {j}] = {d[i, j]:g} is negative")
    if (np.diag(d) != 0).any():
        i = int(np.flatnonzero(np.diag(d) != 0)[0])
        raise ConfigError(f"{source}: diagonal entry [{i}, {i}] = {d[i, i]:g}; a correct prediction costs 0")
    asym = np.abs(d - d.T) > 1e-9 * np.maximum(1.0, np.abs(d))
    if asym.any():
        i, j = np.argwhere(asym)[0]
        raise ConfigError(f"{source}: entry [{i}, {j}] = {d[i, j]:g} but [{j}, {i}] = {d[j, i]:g}; the matrix must "
                          f"be symmetric")
    return d


def build_cost(cfg) -> Optional[np.ndarray]:
    """The run's cost matrix from the `cost` group (None for cost=none)."""
    node = cfg.get("cost")
    if node is None:
        return None
    from vmf_embeddings.build import _instantiate_option

    matrix = _instantiate_option(node, n_classes=int(cfg.dataset.n_train_classes))
    return None if matrix is None else check_cost_matrix(matrix, int(cfg.dataset.n_train_classes),
                                                         f"cost={node.get('name', '?')}")
