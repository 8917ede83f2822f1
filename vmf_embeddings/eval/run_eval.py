"""Evaluate one run dir: every metric that fits the method and dataset -> RUN_DIR/metrics.json.

Which metrics (from the saved config and what each `embeddings/<split>.npz` holds); nothing here
compares method, dataset or geometry names:

- classification (the npz holds `log_probs`, the head's predictive log-probabilities written at
  extraction; files of older versions hold `logits`, whose softmax is used): accuracy, top5_accuracy
  when C > 5, ece, mce, ece_l2_em15, nll, brier; `reliability_<split>.png` in the run dir (`eval.plots`).
  Sampled predictions (vMF's Monte Carlo) are drawn at extraction (`eval.vmf_samples`, `eval.seed`).
- plot (`eval.plots`, test embeddings of width 2): `embeddings_test.png`, the stored test embeddings by class
  with the npz's class prototypes (`vmf_embeddings.eval.plots.embedding_scatter`).
- retrieval on `test` (and on `val` for open-set data: `dataset.open_set`), in the geometry the npz
  names (`vmf_embeddings.eval.geometry`, its parameters read from the npz): recall@K with K from
  `eval.recall_ks`, else `dataset.recall_ks`, else 1, 2, 4, 8; precision@1, r_precision, map@r (PML
  AccuracyCalculator definitions, lone queries dropped: n_queries / n_lone), nmi / ami (faiss k-means,
  seed 1234; eval.clustering=false skips them). A geometry whose embeddings are distributions (vMF)
  adds the sampled retrieval: mc_recall@1 (majority vote), mc_precision@1, mc_r_precision, mc_map@r
  over `eval.vmf_retrieval_samples` draws (default eval.vmf_samples; 0 skips).
- regression (`targets` and `predictions` in the npz, target units): mae, rmse -- any task, any split.
- hierarchy (a C x C cost matrix: `eval.cost_matrix` = tree | lca | ordinal (from the run's dataset) or a path
  to a .npy, else the run's `cost_matrix.npy` written by training):
  error_rate, avg_cost, mean_mistake_cost.
- projection analysis (test split, when the npz holds `projection_input` and `projection_output`: angular heads,
  spherized runs): n_overlap, n_overlap_errors, overlap_error_ratio (#ovlp, #err, ratio of the spherization paper's
  comparison; a reconstruction, `vmf_embeddings.eval.overlap`; tolerance `eval.overlap_tol`).
- few-shot (`eval.few_shot: {n_way, k_shot, n_query, n_episodes}` or a list of them; val/test):
  fewshot_<N>way<K>shot and ..._ci95 (mean episode accuracy, 95% half-width, ddof=1).

metrics.json layout::

    {"meta": {"run_dir", "method", "dataset", "geometry", "task", "dim", "seed", "name", "open_set",
              "overrides" (training CLI overrides or null), "config" (flattened resolved config),
              "eval" (options used), "versions", "created"},
     "test":  {"n": N, "accuracy": ..., "ece": ..., "nll": ..., "recall@1": ..., "map@r": ..., "seconds": ...},
     "val":   {...}, "train": {...}}

Every value is a float (NaN written as NaN) or an int; keys absent when they do not apply.

Cost on SOP-sized test sets (60,502 x 512) on CPU: the kNN pass is ~25-45 s on 2 cores; NMI/AMI's
k-means has 11,316 centroids (20 iterations of 60,502 x 11,316 distances, ~4 kNN passes) and the vMF sampled
retrieval repeats the kNN pass per draw -- set `clustering=false` / `vmf_retrieval_samples=0` for a
quick look.
Options: the defaults of `vmf_embeddings.schema.EvalOptions` < the run's `eval:` config node < `options`.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np
import torch

from vmf_embeddings.schema import EVAL_DEFAULTS

from .classification import (
    classification_metrics,
    confidence_and_correct,
    log_probs_from_logits,
    mc_log_probs,
    reliability_diagram,
)
from .fewshot import few_shot_accuracy, spec_tag
from .hierarchy import hierarchical_metrics
from .regression import regression_metrics
from vmf_embeddings.config_keys import flatten
from .geometry import get_geometry
from .retrieval import DEFAULT_KS, retrieval_metrics
from .run_dir import RunDir, RunDirError, Split, load_config, load_run_dir, read_overrides, reextract
from .vmf_classification import vmf_sampled_retrieval

log = logging.getLogger(__name__)

#: every evaluation option with its default (one place: vmf_embeddings/schema.py)
DEFAULT_OPTIONS: Dict[str, Any] = EVAL_DEFAULTS


def eval_options(rd: RunDir, options: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Defaults < the run's `eval:` node < `options`."""
    from omegaconf import OmegaConf

    opts = dict(DEFAULT_OPTIONS)
    node = OmegaConf.select(rd.config, "eval", default=None)
    if node is not None:
        opts.update({k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k in opts})
    opts.update(options or {})
    if opts["vmf_retrieval_samples"] is None:
        opts["vmf_retrieval_samples"] = opts["vmf_samples"]
    return opts


def _meta(rd: RunDir, opts: Dict[str, Any]) -> Dict[str, Any]:
    from omegaconf import OmegaConf

    try:
        flat = flatten(OmegaConf.to_container(rd.config, resolve=True))
    except Exception:  # noqa: BLE001 - an unresolvable interpolation: keep the raw values
        flat = flatten(OmegaConf.to_container(rd.config, resolve=False))
    try:
        import faiss  # type: ignore

        faiss_version = faiss.__version__
    except ImportError:  # pragma: no cover
        faiss_version = None
    return {
        "run_dir": str(rd.path),
        "method": rd.cfg("method.name"),
        "dataset": rd.cfg("dataset.name"),
        "geometry": _first_scalar(rd, "geometry"),
        "task": _first_scalar(rd, "task") or "classification",
        "dim": rd.cfg("arch.params.embedding_dim"),
        "seed": rd.cfg("seed"),
        "name": rd.cfg("name"),
        "open_set": bool(rd.cfg("dataset.open_set", False)),
        "overrides": read_overrides(rd.path),
        "config": flat,
        "eval": {k: v for k, v in opts.items() if k not in ("device",)},
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "faiss": faiss_version},
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
    }


def _first_scalar(rd: RunDir, key: str) -> Any:
    """A 0-d entry (geometry, task) from the first split that has it."""
    for split in rd.splits.values():
        value = split.scalar(key)
        if value is not None:
            return value
    return None


def _geometry(rd: RunDir, split: Split):
    """The split's geometry record and its parameters, both read from the npz."""
    name = split.scalar("geometry")
    if name is None:
        raise reextract(split.path, "no 'geometry' entry", rd.path)
    try:
        geometry = get_geometry(str(name))
    except ValueError as exc:
        raise reextract(split.path, str(exc), rd.path) from None
    params = {}
    for key in geometry.params:
        value = split.scalar(key)
        if value is None:
            raise reextract(split.path, f"{geometry.name} embeddings without a '{key}' entry", rd.path)
        try:
            params[key] = float(value)
        except (TypeError, ValueError):
            raise reextract(split.path, f"'{key}' must be a number, got {value!r}", rd.path) from None
    problem = geometry.check_params(params)
    if problem:
        raise reextract(split.path, f"geometry {geometry.name!r} {problem}", rd.path)
    return geometry, params


def sampled_batch_accuracy(correct: np.ndarray, labels: np.ndarray, n_classes: int = 12, n_samples: int = 4,
                           n_batches: int = 500, seed: int = 1234) -> Dict[str, float]:
    """Mean accuracy over `n_batches` random batches of `n_classes` classes x `n_samples` images each, as the RepMet
    seed's "episodic test" reports it: every image is still classified among all training classes, so this is a
    sampled estimate of plain test accuracy (some images counted several times, others never), not few-shot."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    members = {c: np.flatnonzero(labels == c) for c in classes}
    accuracies = []
    for _ in range(int(n_batches)):
        picked = rng.choice(classes, size=min(int(n_classes), len(classes)), replace=False)
        index = np.concatenate([rng.choice(members[c], size=int(n_samples), replace=len(members[c]) < int(n_samples))
                                for c in picked])
        accuracies.append(float(np.mean(correct[index])))
    return {"sampled_batch_accuracy": float(np.mean(accuracies))}


def prototype_distortion(prototypes: np.ndarray, cost: np.ndarray, geometry) -> float:
    """Scale-free distortion of the prototypes' pairwise distances against the cost matrix (0 = an isometry up to
    scale), in the geometry's distance: cosine distance for unit-vector geometries, Euclidean otherwise."""
    from vmf_embeddings.methods.prototypes import scale_free_distortion

    metric = "cosine" if geometry.angular else "euclidean"
    return float(scale_free_distortion(torch.as_tensor(np.asarray(prototypes, np.float64)),
                                       torch.as_tensor(np.asarray(cost, np.float64)), metric))


def _log_probs(split: Split) -> Optional[torch.Tensor]:
    """The predictive log-probabilities written at extraction (or the softmax of older files' logits)."""
    log_probs = split.get("log_probs")
    if log_probs is not None:
        return torch.from_numpy(np.asarray(log_probs, dtype=np.float64))
    logits = split.get("logits")
    if logits is not None:
        return mc_log_probs(logits) if logits.ndim == 3 else log_probs_from_logits(logits)
    return None


#: eval.cost_matrix values computed from the run's dataset config instead of read from a file
NAMED_COSTS = ("tree", "lca", "ordinal")


def _cost_matrix(rd: RunDir, split: Split, opts: Dict[str, Any]) -> Optional[np.ndarray]:
    """eval.cost_matrix (a cost name or a .npy path) first, then the matrix training stored."""
    choice = opts.get("cost_matrix")
    if choice in NAMED_COSTS:  # e.g. train with cost=ordinal, measure mistakes on the dataset's hierarchy
        from vmf_embeddings.costs import lca_cost, ordinal_cost, tree_cost

        n_classes = int(rd.cfg("dataset.n_train_classes"))
        if choice == "ordinal":
            return ordinal_cost(n_classes)
        return (tree_cost if choice == "tree" else lca_cost)(n_classes, rd.cfg("dataset.hierarchy"))
    if not choice:
        if split.get("cost_matrix") is not None:
            return split.get("cost_matrix")
        if (rd.path / "cost_matrix.npy").is_file():  # written by training with cost=<tree|lca|...>
            choice = rd.path / "cost_matrix.npy"
    if not choice:
        return None
    p = Path(choice)
    if not p.is_absolute():
        p = rd.path / p
    if not p.is_file():
        raise RunDirError(f"{p}: eval.cost_matrix file not found; point eval.cost_matrix at a C x C .npy file or "
                          f"name one of {', '.join(NAMED_COSTS)}")
    return np.load(p, allow_pickle=False)


def _embedding_plot(rd: RunDir, split: Split, geometry: str, task: str, open_set: bool) -> None:
    """`embeddings_<split>.png`: 3-D embeddings in 3-D (on their sphere when they lie on one); 2-D embeddings by
    class, with the npz's C x 2 `prototypes` when
    they are the classes the labels index (not for open-set data, whose test classes are not the training
    classes, nor for regression, whose prototypes are target bounds). Skipped when matplotlib is missing."""
    try:
        import importlib

        importlib.import_module("matplotlib")
        from .plots import embedding_scatter, embedding_space, sphere_scatter
    except ImportError:
        log.warning("matplotlib is not installed: skipping embeddings_%s.png", split.name)
        return
    labels = split.labels
    title = (f"{rd.cfg('method.name')} / {rd.cfg('dataset.name')} / {split.name} (n={len(labels)})\n"
             f"{embedding_space(geometry)}")
    if split.embeddings.shape[1] == 3:  # e.g. the spherization paper's 3-d visualisation
        sphere_scatter(split.embeddings, labels, rd.path / f"embeddings_{split.name}.png", title=title)
        return
    prototypes = split.get("prototypes")
    if (prototypes is None or open_set or task == "regression" or prototypes.ndim != 2 or prototypes.shape[1] != 2
            or prototypes.dtype.kind not in "fiu" or not np.isfinite(prototypes).all()
            or (len(labels) and (labels.min() < 0 or labels.max() >= len(prototypes)))):
        prototypes = None
    embedding_scatter(split.embeddings, labels, rd.path / f"embeddings_{split.name}.png", prototypes=prototypes,
                      title=title)


def _projection_overlap(rd: RunDir, split: Split, lp: torch.Tensor, opts: Dict[str, Any]) -> Dict[str, Any]:
    """#ovlp / #err / ratio of the projection step (vmf_embeddings/eval/overlap.py, a reconstruction)."""
    from .overlap import projection_overlap

    try:
        tol = float(opts["overlap_tol"])
    except (TypeError, ValueError):
        tol = float("nan")
    if not 0 <= tol < 1:
        raise RunDirError(f"eval.overlap_tol={opts['overlap_tol']!r} must be a number in [0, 1) (a relative distance)")
    correct = lp.argmax(1).numpy() == split.labels
    try:
        return projection_overlap(split.get("projection_input"), split.get("projection_output"), correct, tol=tol)
    except ValueError as exc:
        raise reextract(split.path, str(exc), rd.path) from None


def evaluate_split(rd: RunDir, split: Split, opts: Dict[str, Any]) -> Dict[str, Any]:
    """All metrics of one split (module docstring says which)."""
    t0 = time.perf_counter()
    out: Dict[str, Any] = {"n": int(len(split.labels))}
    geometry, params = _geometry(rd, split)
    task = str(split.scalar("task") or "classification")
    open_set = bool(rd.cfg("dataset.open_set", False))
    lp = _log_probs(split)
    if lp is not None:
        if lp.shape[0] != len(split.labels):
            raise reextract(split.path, f"log_probs rows {lp.shape[0]} != labels {len(split.labels)}", rd.path)
        try:
            out.update(classification_metrics(lp, split.labels, n_bins=int(opts["n_bins"])))
        except ValueError as exc:
            raise reextract(split.path, str(exc), rd.path) from None
        if opts.get("sampled_batches") and split.name == "test":
            out.update(sampled_batch_accuracy(lp.argmax(1).numpy() == split.labels, split.labels,
                                              seed=int(opts["seed"]), **dict(opts["sampled_batches"])))
        cost = _cost_matrix(rd, split, opts)
        if cost is not None:
            out.update(hierarchical_metrics(lp.argmax(1), split.labels, cost))
            prototypes = split.get("prototypes")
            if prototypes is not None and prototypes.ndim == 2 and prototypes.shape[0] == len(cost) > 1:
                out["prototype_distortion"] = prototype_distortion(prototypes, cost, geometry)
        if split.name == "test" and split.get("projection_input") is not None \
                and split.get("projection_output") is not None:
            out.update(_projection_overlap(rd, split, lp, opts))
        if opts["plots"]:
            conf, corr = confidence_and_correct(lp, split.labels)
            title = f"{rd.cfg('method.name')} / {rd.cfg('dataset.name')} / {split.name}"
            reliability_diagram(conf, corr, rd.path / f"reliability_{split.name}.png", int(opts["n_bins"]),
                                title=f"{title}: ECE {out['ece']:.4f}")
    if split.get("targets") is not None and split.get("predictions") is not None:
        out.update(regression_metrics(split.get("predictions"), split.get("targets")))
    if opts["plots"] and split.name == "test" and split.embeddings.shape[1] in (2, 3):
        _embedding_plot(rd, split, geometry.name, task, open_set)
    wants_retrieval = task != "regression" and (split.name == "test" or (open_set and split.name == "val"))
    if wants_retrieval and len(split.labels) > 1:
        ks = opts["recall_ks"] or rd.cfg("dataset.recall_ks") or DEFAULT_KS
        out.update(retrieval_metrics(split.embeddings, split.labels, geometry.name, ks=list(ks),
                                     clustering=bool(opts["clustering"]), backend=opts["backend"],
                                     device=opts["device"], params=params))
        if geometry.sampled and int(opts["vmf_retrieval_samples"]) > 0:
            out.update(vmf_sampled_retrieval(split.embeddings, split.labels, int(opts["vmf_retrieval_samples"]),
                                             seed=int(opts["seed"]), device=opts["device"]))
    if opts["few_shot"] and split.name in ("val", "test") and task != "regression":
        specs = opts["few_shot"] if isinstance(opts["few_shot"], list) else [opts["few_shot"]]
        for spec in specs:
            spec = dict(spec)
            spec.setdefault("n_episodes", 1000)  # the ProtoNet authors' test protocol: 1,000 seeded episodes
            r = few_shot_accuracy(split.embeddings, split.labels, geometry=geometry.name, params=params,
                                  seed=int(spec.pop("seed", opts["seed"])), **spec)
            tag = f"fewshot_{spec_tag(spec)}"
            out[tag], out[f"{tag}_ci95"] = r["accuracy"], r["ci95"]
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


def evaluate_run(
    run_dir: Union[str, Path], options: Optional[Dict[str, Any]] = None, write: bool = True
) -> Dict[str, Any]:
    """Evaluate every present split of a run dir; writes RUN_DIR/metrics.json (layout above) and returns it.

    Raises RunDirError (one line: file + fix) for a missing config / embeddings or inconsistent arrays.
    """
    run_dir = Path(run_dir)
    config = load_config(run_dir)
    if str(config.get("dataset", {}).get("task", "classification")) == "detection":
        from vmf_embeddings.eval.run_detection_eval import evaluate_detection

        return _write(run_dir, _jsonable(evaluate_detection(run_dir, config)), write)
    opts = eval_options(RunDir(run_dir, config), options)
    rd = load_run_dir(run_dir, splits=tuple(opts["splits"]))
    result: Dict[str, Any] = {"meta": _meta(rd, opts)}
    for name in ("train", "val", "test"):
        if name in rd.splits:
            result[name] = evaluate_split(rd, rd.splits[name], opts)
            log.debug("%s %s: %s", run_dir, name, {k: v for k, v in result[name].items() if isinstance(v, float)})
    return _write(run_dir, _jsonable(result), write)


def _write(run_dir: Path, result: Dict[str, Any], write: bool) -> Dict[str, Any]:
    if write:
        tmp = run_dir / "metrics.json.tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=2, allow_nan=True)
        tmp.replace(run_dir / "metrics.json")
    return result
