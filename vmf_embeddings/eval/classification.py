"""Classification metrics: top-k accuracy, calibration (ECE, MCE), NLL, Brier, reliability diagram.

Everything takes log-probabilities (N x C, float64 inside) so deterministic methods (log_softmax of
logits) and Monte-Carlo methods (log of the sample-averaged softmax, `mc_log_probs`) share one path.
Prediction = argmax (first index on ties), confidence = max_c p(c|x).

ECE: the headline `ece` is Guo et al.'s (2017) l1 ECE over 15 EQUAL-WIDTH bins ((m-1)/15, m/15], the
standard definition. The vMF paper's code (google-research/vmf_embeddings) reports an l2 ECE over 15
EQUAL-MASS bins instead; we keep it as `ece_l2_em15`, named for what it is -- the two are not comparable.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch

from .arrays import Array



def _t64(x: Array) -> torch.Tensor:
    return torch.as_tensor(x.detach().cpu() if isinstance(x, torch.Tensor) else np.asarray(x)).to(torch.float64)


def _labels(y: Array) -> torch.Tensor:
    return torch.as_tensor(y.detach().cpu() if isinstance(y, torch.Tensor) else np.asarray(y)).long().reshape(-1)


def log_probs_from_logits(logits: Array) -> torch.Tensor:
    """log softmax in float64 (N x C)."""
    return torch.log_softmax(_t64(logits), dim=1)


def mc_log_probs(logits: Array) -> torch.Tensor:
    """log of the sample-averaged softmax from N x S x C logits: logsumexp_s(log_softmax) - log S.

    Averages PROBABILITIES, not logits (the vMF paper's predictive distribution), in log space so a
    float32 mean can never underflow to log 0.
    """
    lp = torch.log_softmax(_t64(logits), dim=2)
    return torch.logsumexp(lp, dim=1) - math.log(lp.shape[1])


def accuracy(logits: Array, labels: Array) -> float:
    """Top-1 accuracy of N x C scores (logits or probabilities); ties go to the lowest class index."""
    s = torch.as_tensor(logits.detach().cpu() if isinstance(logits, torch.Tensor) else np.asarray(logits))
    y = _labels(labels)
    _check_rows(s, y)
    return float((s.argmax(1) == y).double().mean())


def topk_accuracy(scores: Array, labels: Array, k: int) -> float:
    """Fraction of items whose label is among the k highest scores.

    Ties are broken toward the lower class index, as in `accuracy` (torch.topk's tie order is
    unspecified), by counting the classes ranked before the label instead of sorting.
    """
    s = _t64(scores)
    y = _labels(labels)
    _check_rows(s, y)
    sy = s.gather(1, y[:, None])
    cols = torch.arange(s.shape[1])[None, :]
    before = (s > sy).sum(1) + ((s == sy) & (cols < y[:, None])).sum(1)
    return float((before < int(k)).double().mean())


def _check_rows(s: torch.Tensor, y: torch.Tensor) -> None:
    if s.shape[0] != y.shape[0]:
        raise ValueError(f"scores have {s.shape[0]} rows but labels have {y.shape[0]}")


def confidence_and_correct(log_probs: Array, labels: Array):
    """(confidence = max_c p, correct = [argmax == label]) as float64 NumPy arrays."""
    lp = _t64(log_probs)
    y = _labels(labels)
    _check_rows(lp, y)
    conf, pred = lp.max(1)
    return conf.exp().numpy(), (pred == y).double().numpy()


def calibration_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15, mode: str = "width"):
    """Per-bin (count, mean accuracy, mean confidence) arrays; empty bins have count 0.

    width: B_m = ((m-1)/M, m/M], index clip(ceil(M c) - 1, 0, M-1) in float64 (confidence 0 -> bin 0).
    mass:  sort by confidence (stable), bin = min(M-1, floor(rank M / N)) -- the vMF code's equal-mass
           bins; with tied confidences straddling an edge the value depends on input order (ties split by position).
    """
    c = np.asarray(confidence, np.float64)
    a = np.asarray(correct, np.float64)
    n = len(c)
    if mode == "width":
        idx = np.clip(np.ceil(n_bins * c).astype(np.int64) - 1, 0, n_bins - 1)
    elif mode == "mass":
        order = np.argsort(c, kind="stable")
        idx = np.empty(n, np.int64)
        idx[order] = np.minimum(n_bins - 1, (np.arange(n) * n_bins) // max(n, 1))
    else:
        raise ValueError(f"unknown binning {mode!r}: width | mass")
    cnt = np.bincount(idx, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(idx, weights=a, minlength=n_bins) / cnt
        conf = np.bincount(idx, weights=c, minlength=n_bins) / cnt
    return cnt, acc, conf


def ece(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15, norm: str = "l1", mode: str = "width") -> float:
    """Expected calibration error: (sum_m |B_m|/N |acc_m - conf_m|^p)^(1/p), empty bins skipped."""
    cnt, acc, conf = calibration_bins(confidence, correct, n_bins, mode)
    nz = cnt > 0
    w = cnt[nz] / cnt.sum()
    gap = np.abs(acc[nz] - conf[nz])
    if norm == "l1":
        return float(np.sum(w * gap))
    if norm == "l2":
        return float(np.sqrt(np.sum(w * gap**2)))
    raise ValueError(f"unknown ECE norm {norm!r}: l1 | l2")


def mce(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """Maximum calibration error over non-empty equal-width bins."""
    cnt, acc, conf = calibration_bins(confidence, correct, n_bins, "width")
    nz = cnt > 0
    return float(np.max(np.abs(acc[nz] - conf[nz])))


def nll(log_probs: Array, labels: Array) -> float:
    """Mean negative log-likelihood of the true labels, -(1/N) sum log p(y|x)."""
    lp = _t64(log_probs)
    y = _labels(labels)
    _check_rows(lp, y)
    return float(-lp.gather(1, y[:, None]).mean())


def brier(log_probs: Array, labels: Array) -> float:
    """Multi-class Brier score (1/N) sum ||p - onehot(y)||^2."""
    p = _t64(log_probs).exp()
    y = _labels(labels)
    onehot = torch.zeros_like(p).scatter_(1, y[:, None], 1.0)
    return float(((p - onehot) ** 2).sum(1).mean())


def classification_metrics(
    log_probs: Array, labels: Array, n_bins: int = 15, topk: Sequence[int] = (5,)
) -> Dict[str, float]:
    """accuracy, top-k accuracies (only for k < C: otherwise trivially 1), ECE (l1 equal-width, the
    headline), MCE, the vMF paper's l2 equal-mass ECE, NLL and Brier score."""
    lp = _t64(log_probs)
    y = _labels(labels)
    _check_rows(lp, y)
    if lp.numel() and not torch.allclose(lp.exp().sum(1), torch.ones(lp.shape[0], dtype=lp.dtype), atol=1e-4):
        raise ValueError("log_probs rows do not normalise: pass log-probabilities, e.g. log_probs_from_logits(logits)")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= lp.shape[1]):
        raise ValueError(f"labels must lie in 0..{lp.shape[1] - 1} (one column per training class)")
    conf, corr = confidence_and_correct(lp, y)
    out = {"accuracy": float(corr.mean())}
    for k in topk:
        if k < lp.shape[1]:
            out[f"top{k}_accuracy"] = topk_accuracy(lp, y, k)
    out["ece"] = ece(conf, corr, n_bins, "l1", "width")
    out["mce"] = mce(conf, corr, n_bins)
    out["ece_l2_em15"] = ece(conf, corr, n_bins, "l2", "mass")
    out["nll"] = nll(lp, y)
    out["brier"] = brier(lp, y)
    return out


def reliability_diagram(
    confidence: np.ndarray, correct: np.ndarray, path: Union[str, Path], n_bins: int = 15, title: Optional[str] = None
) -> Path:
    """Save a reliability diagram (accuracy vs confidence per equal-width bin, with bin counts) as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cnt, acc, conf = calibration_bins(confidence, correct, n_bins, "width")
    edges = np.linspace(0, 1, n_bins + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    nz = cnt > 0
    fig, (ax, axh) = plt.subplots(2, 1, figsize=(4.5, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.bar(centers[nz], acc[nz], width=1.0 / n_bins, edgecolor="k", alpha=0.7, label="accuracy")
    ax.plot(conf[nz], acc[nz], "o", color="C3", ms=3, label="(mean conf, acc)")
    e = ece(confidence, correct, n_bins)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title or f"reliability (ECE {e:.4f}, {n_bins} equal-width bins)", fontsize=9)
    ax.legend(loc="upper left", fontsize=7)
    axh.bar(centers, cnt, width=1.0 / n_bins, edgecolor="k", color="C7")
    axh.set_xlabel("confidence")
    axh.set_ylabel("count")
    axh.set_xlim(0, 1)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
