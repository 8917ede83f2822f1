"""Embedding plots: a 2-D scatter of embeddings coloured by class, with the class prototypes marked.

`embedding_scatter(...)` draws what Figure 1 of Garnot & Landrieu ("Leveraging Class Hierarchies with
Metric-Guided Prototype Learning", BMVC 2021) shows for a 2-D embedding: one point per sample in its class
colour, the prototypes as large black-edged markers in the same colours, labelled with the class id.
`run_eval` writes it for the test split of runs whose embeddings are 2-D (`eval.plots`). The reliability
diagram lives with the calibration metrics, in `classification.py`.

The vectors plotted are the npz's `embeddings` as stored, before the geometry's search map
(`geometry.py`: cosine and vMF normalise, hyperbolic maps into the Poincare ball);
`embedding_space(geometry)` names that space for the plot's title.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

#: what the stored `embeddings` are, per geometry, and what retrieval does with them (for plot titles)
_SPACES = {
    "euclidean": "raw embeddings f(x), searched as they are (Euclidean)",
    "cosine": "raw embeddings f(x); retrieval uses the directions f(x)/|f(x)| (cosine)",
    "vmf": "z = s f(x), |z| = kappa; retrieval uses the directions z/|z| (vMF)",
    "hyperbolic": "raw tangent vectors f(x); retrieval maps them into the Poincare ball",
}

#: at most this many classes: a qualitative colormap (tab10 / tab20) and a legend
MAX_QUALITATIVE = 20


def embedding_space(geometry: Optional[str]) -> str:
    """One line saying which space the stored `embeddings` of a geometry live in (unplotted maps named)."""
    if geometry is None:
        return "stored embeddings"
    return _SPACES.get(str(geometry), f"stored embeddings (geometry {geometry}, before its search map)")


def _colours(n_classes: int):
    """n_classes RGBA colours: tab10 / tab20 up to 20 classes, a continuous colormap beyond."""
    from matplotlib import colormaps

    if n_classes <= 10:
        return [colormaps["tab10"](i) for i in range(n_classes)]
    if n_classes <= MAX_QUALITATIVE:
        return [colormaps["tab20"](i) for i in range(n_classes)]
    cmap = colormaps["turbo"]
    return [cmap(v) for v in np.linspace(0.05, 0.95, n_classes)]


def embedding_scatter(
    embeddings: np.ndarray,
    labels: np.ndarray,
    path: Union[str, Path],
    prototypes: Optional[np.ndarray] = None,
    class_names: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
) -> Path:
    """Save a scatter plot of 2-D `embeddings` (N x 2) coloured by `labels` (N class ids >= 0) as PNG.

    `prototypes` (C x 2, row c = class c) are drawn as large black-edged markers in their class colour,
    labelled with the class id; `class_names` (indexed by class id) name the legend entries, shown for at
    most 20 classes. Equal aspect ratio, so distances read true. Written atomically (temporary file beside
    `path`, then os.replace). Raises ValueError on shapes that do not fit.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels).reshape(-1)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"embedding_scatter needs N x 2 embeddings, got shape {x.shape}")
    if len(y) != len(x):
        raise ValueError(f"{len(x)} embeddings but {len(y)} labels")
    if y.size and (y.dtype.kind not in "iu" or int(y.min()) < 0):
        raise ValueError("labels must be non-negative integer class ids")
    y = y.astype(np.int64)
    protos = None
    if prototypes is not None:
        protos = np.asarray(prototypes, dtype=np.float64)
        if protos.ndim != 2 or protos.shape[1] != 2:
            raise ValueError(f"prototypes must be C x 2, got shape {protos.shape}")
        if y.size and int(y.max()) >= len(protos):
            raise ValueError(f"labels reach class {int(y.max())} but only {len(protos)} prototypes were given")
    n_classes = max(int(y.max()) + 1 if y.size else 0, len(protos) if protos is not None else 0)
    colours = _colours(max(n_classes, 1))

    def name(c: int) -> str:
        if class_names is not None and c < len(class_names) and class_names[c] is not None:
            return f"{c}: {class_names[c]}"
        return str(c)

    fig, ax = plt.subplots(figsize=(6.0, 6.0))
    size = 6 if len(x) > 2000 else 10
    for c in np.unique(y):
        members = x[y == c]
        ax.scatter(members[:, 0], members[:, 1], s=size, alpha=0.5, color=colours[c], linewidths=0,
                   label=name(int(c)), rasterized=len(x) > 20000)
    if protos is not None:
        ax.scatter(protos[:, 0], protos[:, 1], s=160, marker="*", c=[colours[c] for c in range(len(protos))],
                   edgecolors="black", linewidths=1.2, zorder=3)
        for c, (px, py) in enumerate(protos):
            ax.annotate(str(c), (px, py), xytext=(5, 5), textcoords="offset points", fontsize=8,
                        fontweight="bold", zorder=4)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("dim 0")
    ax.set_ylabel("dim 1")
    ax.grid(True, lw=0.3, alpha=0.5)
    if title:
        ax.set_title(title, fontsize=8)
    if 0 < n_classes <= MAX_QUALITATIVE:
        if protos is not None:
            ax.scatter([], [], s=50, marker="*", color="white", edgecolors="black", label="prototype")
        ax.legend(loc="best", fontsize=6, markerscale=1.5, framealpha=0.7, ncol=2 if n_classes > 10 else 1)
    return _save(fig, path)


def sphere_scatter(
    embeddings: np.ndarray,
    labels: np.ndarray,
    path: Union[str, Path],
    title: Optional[str] = None,
) -> Path:
    """Save a 3-D scatter of N x 3 `embeddings` coloured by class as PNG (the spherization paper's Figure:
    spherized 3-d MNIST embeddings on the sphere octant). When every point lies on one sphere (norms equal to
    1e-3) its surface is drawn as a wireframe, only the positive octant when every coordinate is >= 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels).reshape(-1).astype(np.int64)
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"sphere_scatter needs N x 3 embeddings, got shape {x.shape}")
    if len(y) != len(x):
        raise ValueError(f"{len(x)} embeddings but {len(y)} labels")
    n_classes = int(y.max()) + 1 if y.size else 1
    colours = _colours(n_classes)
    fig = plt.figure(figsize=(6.5, 6.0))
    ax = fig.add_subplot(projection="3d")
    norms = np.linalg.norm(x, axis=1)
    if len(x) and np.ptp(norms) <= 1e-3 * max(float(norms.mean()), 1e-12):
        radius = float(norms.mean())
        top = np.pi / 2 if (x >= -1e-9).all() else np.pi
        u, v = np.meshgrid(np.linspace(0, top if top < np.pi else 2 * np.pi, 16), np.linspace(0, top, 16))
        ax.plot_wireframe(radius * np.cos(u) * np.sin(v), radius * np.sin(u) * np.sin(v), radius * np.cos(v),
                          color="grey", linewidth=0.3, alpha=0.5)
    for c in np.unique(y):
        members = x[y == c]
        ax.scatter(members[:, 0], members[:, 1], members[:, 2], s=6, alpha=0.6, color=colours[c], linewidths=0,
                   label=str(int(c)))
    ax.set_xlabel("dim 0")
    ax.set_ylabel("dim 1")
    ax.set_zlabel("dim 2")
    if title:
        ax.set_title(title, fontsize=8)
    if 0 < n_classes <= MAX_QUALITATIVE:
        ax.legend(loc="upper left", fontsize=6, markerscale=2, framealpha=0.7)
    return _save(fig, path)


def _save(fig, path: Union[str, Path]) -> Path:
    """Write a figure as PNG atomically (temporary file, then os.replace) and close it."""
    import matplotlib.pyplot as plt

    from vmf_embeddings.checkpoint import atomic_write

    fig.tight_layout()
    path = Path(path)
    try:
        atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=120))
    finally:
        plt.close(fig)
    return path

