"""Evaluate one run dir: every metric that fits the method and dataset -> RUN_DIR/metrics.json.

Which metrics (from the saved config and what each `embeddings/<split>.npz` holds):

- closed-set classification data (dataset.open_set false, method.task classification|joint):
  classification metrics on every split (accuracy, top5_accuracy when C > 5, ece, mce, ece_l2_em15,
  nll, brier; `reliability_<split>.png` in the run dir), retrieval on `test` only.
  Predictive distribution: softmax(logits) (a 3-D N x S x C `logits` is averaged over S in probability
  space); vMF (no logits) -> Monte-Carlo over `eval.vmf_samples` draws (seed `eval.seed`), skipped on
  `train` (cost) unless eval.mc_on_train=true.
- open-set data (Cars196, CUB200, SOP): retrieval only, on `val` and `test`, with the dataset's
  Recall@K list (sop: 1, 10, 100, 1000; otherwise 1, 2, 4, 8).
- retrieval = recall@K, precision@1, r_precision, map@r (PML AccuracyCalculator definitions, lone
  queries dropped: n_queries / n_lone), nmi / ami (faiss k-means, seed 1234; eval.clustering=false
  skips them). Distance from the geometry: euclidean, cosine, vmf (cosine on mu), hyperbolic
  (Poincare, curvature from the npz). vMF adds the paper's sampled retrieval: mc_recall@1 (majority
  vote), mc_precision@1, mc_r_precision, mc_map@r over `eval.vmf_retrieval_samples` draws (default
  eval.vmf_samples; 0 skips).
- regression (`targets` and `predictions` in the npz, target units): mae, rmse -- any task, any split.
- hierarchy (a C x C cost matrix: npz key `cost_matrix` or `eval.cost_matrix: path.npy`):
  error_rate, average_cost, mistake_severity.
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
Options live in the run's `eval:` config node and can be overridden per call (`options=`).
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

from .classification import (
    classification_metrics,
    confidence_and_correct,
    log_probs_from_logits,
    mc_log_probs,
    reliability_diagram,
)
from .fewshot import few_shot_accuracy
from .hierarchy import hierarchical_metrics
from .regression import regression_metrics
from .report import flatten
from .retrieval import recall_ks_for, retrieval_metrics
from .run_dir import RunDir, RunDirError, Split, load_config, load_run_dir, read_overrides, reextract
from .vmf_classification import vmf_mc_log_probs, vmf_sampled_retrieval

log = logging.getLogger(__name__)

DEFAULT_OPTIONS: Dict[str, Any] = {
    "vmf_samples": 10,
    "vmf_retrieval_samples": None,  # None -> vmf_samples
    "seed": 1234,
    "n_bins": 15,
    "recall_ks": None,  # None -> per dataset
    "clustering": True,
    "splits": ["train", "val", "test"],
    "cost_matrix": None,
    "few_shot": None,
    "mc_on_train": False,
    "backend": "auto",
    "device": None,
    "plots": True,
}


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
        "geometry": rd.cfg("method.geometry"),
        "task": rd.cfg("method.task", "classification"),
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


def _geometry(rd: RunDir, split: Split) -> str:
    geometry = split.scalar("geometry") or rd.cfg("method.geometry")
    if geometry is None:
        raise reextract(split.path, "no 'geometry' entry and no method.geometry in config.yaml", rd.path)
    return str(geometry)


def _curvature(rd: RunDir, split: Split) -> Optional[float]:
    c = split.scalar("curvature")
    if c is None:
        c = rd.cfg("method.params.c")
    if c is None:
        raise reextract(split.path, "hyperbolic embeddings without a 'curvature' entry", rd.path)
    return float(c)


def _log_probs(rd: RunDir, split: Split, geometry: str, opts: Dict[str, Any]) -> Optional[torch.Tensor]:
    logits = split.get("logits")
    if logits is not None:
        return mc_log_probs(logits) if logits.ndim == 3 else log_probs_from_logits(logits)
    if geometry == "vmf" and split.get("weights") is not None:
        if split.name == "train" and not opts["mc_on_train"]:
            return None
        weights = split.get("weights")
        if weights.shape[1] != split.embeddings.shape[1]:
            problem = f"'weights' dim {weights.shape[1]} != embeddings dim {split.embeddings.shape[1]}"
            raise reextract(split.path, problem, rd.path)
        return vmf_mc_log_probs(
            split.embeddings, weights, float(split.scalar("temperature", 1.0)),
            n_samples=int(opts["vmf_samples"]), seed=int(opts["seed"]), device=opts["device"],
        )
    return None


def _cost_matrix(rd: RunDir, split: Split, opts: Dict[str, Any]) -> Optional[np.ndarray]:
    if split.get("cost_matrix") is not None:
        return split.get("cost_matrix")
    path = opts.get("cost_matrix")
    if not path:
        return None
    p = Path(path)
    if not p.is_absolute():
        p = rd.path / p
    if not p.is_file():
        raise RunDirError(f"{p}: eval.cost_matrix file not found; point eval.cost_matrix at a C x C .npy file")
    return np.load(p)


def evaluate_split(rd: RunDir, split: Split, opts: Dict[str, Any]) -> Dict[str, Any]:
    """All metrics of one split (module docstring says which)."""
    t0 = time.perf_counter()
    out: Dict[str, Any] = {"n": int(len(split.labels))}
    geometry = _geometry(rd, split)
    curvature = _curvature(rd, split) if geometry == "hyperbolic" else None
    task = str(split.scalar("task") or rd.cfg("method.task", "classification"))
    open_set = bool(rd.cfg("dataset.open_set", False))
    if task in ("classification", "joint") and not open_set:
        lp = _log_probs(rd, split, geometry, opts)
        if lp is not None:
            if lp.shape[0] != len(split.labels):
                raise reextract(split.path, f"logits rows {lp.shape[0]} != labels {len(split.labels)}", rd.path)
            try:
                out.update(classification_metrics(lp, split.labels, n_bins=int(opts["n_bins"])))
            except ValueError as exc:
                raise reextract(split.path, str(exc), rd.path) from None
            cost = _cost_matrix(rd, split, opts)
            if cost is not None:
                out.update(hierarchical_metrics(lp.argmax(1), split.labels, cost))
            if opts["plots"]:
                conf, corr = confidence_and_correct(lp, split.labels)
                title = f"{rd.cfg('method.name')} / {rd.cfg('dataset.name')} / {split.name}"
                reliability_diagram(conf, corr, rd.path / f"reliability_{split.name}.png", int(opts["n_bins"]),
                                    title=f"{title}: ECE {out['ece']:.4f}")
    if split.get("targets") is not None and split.get("predictions") is not None:
        out.update(regression_metrics(split.get("predictions"), split.get("targets")))
    wants_retrieval = task != "regression" and (split.name == "test" or (open_set and split.name == "val"))
    if wants_retrieval and len(split.labels) > 1:
        ks = opts["recall_ks"] or recall_ks_for(rd.cfg("dataset.name"))
        out.update(retrieval_metrics(split.embeddings, split.labels, geometry, curvature, ks=ks,
                                     clustering=bool(opts["clustering"]), backend=opts["backend"],
                                     device=opts["device"]))
        if geometry == "vmf" and int(opts["vmf_retrieval_samples"]) > 0:
            out.update(vmf_sampled_retrieval(split.embeddings, split.labels, int(opts["vmf_retrieval_samples"]),
                                             seed=int(opts["seed"]), device=opts["device"]))
    if opts["few_shot"] and split.name in ("val", "test") and task != "regression":
        specs = opts["few_shot"] if isinstance(opts["few_shot"], list) else [opts["few_shot"]]
        for spec in specs:
            spec = dict(spec)
            r = few_shot_accuracy(split.embeddings, split.labels, geometry=geometry, curvature=curvature,
                                  seed=int(spec.pop("seed", opts["seed"])), **spec)
            tag = f"fewshot_{r_spec(spec)}"
            out[tag], out[f"{tag}_ci95"] = r["accuracy"], r["ci95"]
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def r_spec(spec: Dict[str, Any]) -> str:
    return f"{spec.get('n_way', 5)}way{spec.get('k_shot', 1)}shot"


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
    opts = eval_options(RunDir(run_dir, load_config(run_dir)), options)
    rd = load_run_dir(run_dir, splits=tuple(opts["splits"]))
    result: Dict[str, Any] = {"meta": _meta(rd, opts)}
    for name in ("train", "val", "test"):
        if name in rd.splits:
            result[name] = evaluate_split(rd, rd.splits[name], opts)
            log.info("%s %s: %s", run_dir, name, {k: v for k, v in result[name].items() if isinstance(v, float)})
    result = _jsonable(result)
    if write:
        tmp = run_dir / "metrics.json.tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=2, allow_nan=True)
        tmp.replace(run_dir / "metrics.json")
    return result
