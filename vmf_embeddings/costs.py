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
or a parent list: entry n is the parent of node n, nodes 0..C-1 are the classes, the root's parent is null / -1.
Every matrix is checked (C x C for the dataset's C, finite, non-negative, symmetric, zero diagonal); a bad entry
is refused in one line naming it. Training writes the matrix to `<run_dir>/cost_matrix.npy`, where evaluation
finds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from vmf_embeddings.errors import ConfigError


def _plain(value: Any) -> Any:
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return value


def _tree_from_nested(nested: Any, n_classes: int) -> Tuple[List[int], Dict[int, int]]:
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
            raise ConfigError(f"cost.hierarchy: leaf {node!r} is not a class id (an integer 0..{n_classes - 1})")
        leaf = int(node)
        if not 0 <= leaf < n_classes:
            raise ConfigError(f"cost.hierarchy: leaf {leaf} is outside the dataset's classes 0..{n_classes - 1}")
        if leaf in parents:
            raise ConfigError(f"cost.hierarchy: class {leaf} appears twice in the hierarchy")
        parents[leaf], depth[leaf] = parent, level

    walk(nested, -1, 0)
    missing = [c for c in range(n_classes) if c not in parents]
    if missing:
        raise ConfigError(f"cost.hierarchy: classes {missing[:5]} are missing from the hierarchy ({len(missing)} in all)")
    size = counter[0]
    return [parents[n] for n in range(size)], {n: depth[n] for n in range(size)}


def _tree_from_parents(parent_list: Sequence[Any], n_classes: int) -> Tuple[List[int], Dict[int, int]]:
    parents = [-1 if p is None else int(p) for p in parent_list]
    if len(parents) < n_classes:
        raise ConfigError(f"cost.hierarchy: a parent list needs at least the {n_classes} classes, got {len(parents)}")
    for node, parent in enumerate(parents):
        if parent >= len(parents) or parent < -1:
            raise ConfigError(f"cost.hierarchy: node {node}'s parent {parent} is not a node (0..{len(parents) - 1})")
    depth: Dict[int, int] = {}

    def find(node: int, seen: Tuple[int, ...] = ()) -> int:
        if node in depth:
            return depth[node]
        if node in seen:
            raise ConfigError(f"cost.hierarchy: node {node} is its own ancestor (a cycle)")
        depth[node] = 0 if parents[node] < 0 else find(parents[node], seen + (node,)) + 1
        return depth[node]

    for node in range(len(parents)):
        find(node)
    roots = [n for n, p in enumerate(parents) if p < 0]
    if len(roots) != 1:
        raise ConfigError(f"cost.hierarchy: a tree needs exactly one root (parent null or -1), found {len(roots)}")
    return parents, depth


def _ancestors(node: int, parents: List[int]) -> List[int]:
    path = [node]
    while parents[path[-1]] >= 0:
        path.append(parents[path[-1]])
    return path


def _pairwise(hierarchy: Any, n_classes: int, kind: str) -> np.ndarray:
    hierarchy = _plain(hierarchy)
    if hierarchy is None:
        raise ConfigError(f"cost={kind} needs a hierarchy: the dataset has none (dataset.hierarchy); set "
                          f"cost.hierarchy=... or use cost=ordinal / cost=csv")
    flat = isinstance(hierarchy, (list, tuple)) and all(p is None or isinstance(p, int) for p in hierarchy) \
        and len(hierarchy) >= n_classes and any(p is None or p == -1 for p in hierarchy)
    parents, depth = _tree_from_parents(hierarchy, n_classes) if flat else _tree_from_nested(hierarchy, n_classes)
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
