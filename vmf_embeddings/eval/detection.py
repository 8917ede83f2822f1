"""Pascal VOC detection mAP (the metric of RepMet's few-shot detection, Karlinsky et al., CVPR 2019).

Defined as the official VOC devkit (VOCevaldet.m / VOCap.m) and py-faster-rcnn's `voc_eval.py` define
it, per class c with npos_c = #non-difficult ground truths of c:

- Detections of c over ALL images are sorted by descending score; ties keep the input order (image
  order, then the order within an image), a stable sort like MATLAB's `sort` (voc_eval.py's
  `np.argsort(-confidence)` is not stable, so its tie order is arbitrary).
- Each detection takes the ground truth of c in its image with the largest IoU over ALL of them,
  matched or not (first one on ties, i.e. annotation order); with IoU >= iou_threshold: difficult ->
  ignored (neither TP nor FP, every time), not yet matched -> TP (and now matched), already matched
  -> FP (a duplicate). Otherwise FP. Like the devkit, a detection whose best box is taken is a
  duplicate even when a second, free box also overlaps it enough (COCO would match the free box).
  The devkit compares `ovmax >= minoverlap`; voc_eval.py uses `>`: they differ only at an IoU of
  exactly the threshold (e.g. integer boxes with pixel_offset=1), where we follow the devkit.
- recall = cumTP / npos_c, precision = cumTP / max(cumTP + cumFP, eps) (ignored detections stay in
  the list as points repeating the previous counts, as in voc_eval.py; they change no AP).
- AP (`voc_ap`): the all-point area under the monotone precision envelope (VOC2010+), or VOC2007's
  11-point mean of max{precision : recall >= t} (0 where none), t = np.arange(0., 1.1, 0.1), the very
  floats voc_eval.py uses: 0.30000000000000004, 0.6000000000000001 and 0.7000000000000001 are above
  3/10, 6/10 and 7/10, so e.g. a maximum recall of exactly 3/10 does not reach the 0.3 point.

IoU: inter / (area_d + area_g - inter), widths (x2 - x1 + pixel_offset), intersections clipped at 0.
pixel_offset=0 (default) is the continuous convention for 0-based float boxes (torchvision, pycocotools);
pixel_offset=1 is the VOC devkit's inclusive integer-pixel convention (voc_eval.py's "+ 1."). An IoU
with a zero union (degenerate boxes, offset 0) counts as 0.

A class without non-difficult ground truth has AP NaN (voc_eval.py divides by npos = 0 and returns 0 or
NaN depending on the metric and the detections) and is left out of the mAP; its `ap50/<name>` is NaN.
mAP = mean AP over the other classes, NaN when there are none. A class with ground truth but no
detections has AP 0. The 11-point AP is summed as voc_eval.py sums it (p / 11 one at a time), so a
perfect detector scores 1.0000000000000002 there.

Matching is vectorised: a detection's box is found by a segmented argmax over (image, class) pairs,
and since the devkit's argmax ignores the matched state, "TP" = the first detection in score order
that claims a given box -- no loop over detections or ground truths.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .arrays import Array, to_numpy
from .fewshot import confidence_interval95

#: The 11 recall points of VOC2007, the exact floats of voc_eval.py's `np.arange(0., 1.1, 0.1)`
VOC07_RECALL_POINTS = np.arange(0.0, 1.1, 0.1)

#: Per image: {"boxes": (n, 4) xyxy, "scores": (n,), "labels": (n,)} or the tuple (boxes, scores, labels)
Detections = Union[Mapping[str, Array], Tuple[Array, Array, Array]]
#: Per image: {"boxes": (m, 4), "labels": (m,), "difficult": (m,) optional} or (boxes, labels[, difficult])
GroundTruth = Union[Mapping[str, Array], Tuple[Array, ...]]


def voc_ap(recall: Array, precision: Array, use_07_metric: bool) -> float:
    """VOC AP of a PR curve (points in detection order): 11-point (VOC2007) or all-point (VOC2010+).

    Exactly voc_eval.py's `voc_ap`: 11-point = sum_t max(precision[recall >= t]) / 11 over
    VOC07_RECALL_POINTS; all-point = sum over recall changes of delta-recall x the precision envelope
    (running max from the right) of the curve padded with (0, 0) in front and (1, 0) behind.
    An empty curve has AP 0.
    """
    rec = to_numpy(recall, np.float64).reshape(-1)
    prec = to_numpy(precision, np.float64).reshape(-1)
    if rec.shape != prec.shape:
        raise ValueError(f"recall ({rec.size}) and precision ({prec.size}) differ in length")
    if use_07_metric:
        if rec.size == 0:
            return 0.0
        reached = rec[None, :] >= VOC07_RECALL_POINTS[:, None]
        best = np.where(reached, prec[None, :], -np.inf).max(axis=1)
        ap = 0.0
        for p, any_reached in zip(best, reached.any(axis=1)):
            ap = ap + (p if any_reached else 0.0) / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _fields(item, keys: Sequence[str], optional: int, what: str, index: int) -> List[Optional[np.ndarray]]:
    """The arrays `keys` of one image's dict or tuple (the last `optional` ones may be absent)."""
    if isinstance(item, Mapping):
        missing = [k for k in keys[: len(keys) - optional] if k not in item]
        if missing:
            raise ValueError(f"{what}[{index}] lacks {missing} (keys: {list(keys)})")
        values = [item.get(k) for k in keys]
    else:
        values = list(item)
        if not len(keys) - optional <= len(values) <= len(keys):
            raise ValueError(f"{what}[{index}] must be a tuple ({', '.join(keys)}), got {len(values)} items")
        values += [None] * (len(keys) - len(values))
    return [None if v is None else to_numpy(v) for v in values]


def _boxes(b: np.ndarray, what: str, index: int) -> np.ndarray:
    b = b.astype(np.float64, copy=False).reshape(-1, 4) if b.size == 0 else b.astype(np.float64, copy=False)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{what}[{index}] boxes must be (n, 4) xyxy, got shape {b.shape}")
    if not np.isfinite(b).all():
        raise ValueError(f"{what}[{index}] boxes have NaN/inf")
    if (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any():
        raise ValueError(f"{what}[{index}] has boxes with x2 < x1 or y2 < y1 (boxes must be xyxy)")
    return b


def _labels(y: np.ndarray, n: int, n_classes: int, what: str, index: int) -> np.ndarray:
    y = y.reshape(-1)
    if y.size != n:
        raise ValueError(f"{what}[{index}] has {n} boxes but {y.size} labels")
    if y.size and (np.any(y != np.round(y)) or y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"{what}[{index}] labels must be integers 0..{n_classes - 1}")
    return y.astype(np.int64)


def _flatten_detections(detections: Sequence[Detections], n_classes: int):
    boxes, scores, labels, counts = [], [], [], []
    for i, item in enumerate(detections):
        b, s, y = _fields(item, ("boxes", "scores", "labels"), 0, "detections", i)
        b = _boxes(b, "detections", i)
        s = s.astype(np.float64, copy=False).reshape(-1)
        if s.size != len(b) or not np.isfinite(s).all():
            raise ValueError(f"detections[{i}] needs one finite score per box ({len(b)} boxes, {s.size} scores)")
        boxes.append(b), scores.append(s), labels.append(_labels(y, len(b), n_classes, "detections", i))
        counts.append(len(b))
    image = np.repeat(np.arange(len(counts)), counts)
    return (np.concatenate(boxes) if boxes else np.zeros((0, 4)), np.concatenate(scores) if scores else np.zeros(0),
            np.concatenate(labels) if labels else np.zeros(0, np.int64), image)


def _flatten_ground_truth(ground_truth: Sequence[GroundTruth], n_classes: int):
    boxes, labels, difficult, counts = [], [], [], []
    for i, item in enumerate(ground_truth):
        b, y, d = _fields(item, ("boxes", "labels", "difficult"), 1, "ground_truth", i)
        b = _boxes(b, "ground_truth", i)
        d = np.zeros(len(b), bool) if d is None else d.reshape(-1).astype(bool)
        if d.size != len(b):
            raise ValueError(f"ground_truth[{i}] has {len(b)} boxes but {d.size} difficult flags")
        boxes.append(b), labels.append(_labels(y, len(b), n_classes, "ground_truth", i)), difficult.append(d)
        counts.append(len(b))
    image = np.repeat(np.arange(len(counts)), counts)
    return (np.concatenate(boxes) if boxes else np.zeros((0, 4)), np.concatenate(labels) if labels else
            np.zeros(0, np.int64), np.concatenate(difficult) if difficult else np.zeros(0, bool), image)


def _pair_iou(a: np.ndarray, b: np.ndarray, pixel_offset: float) -> np.ndarray:
    """IoU of row i of `a` with row i of `b` (voc_eval.py's formula and operation order)."""
    iw = np.maximum(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]) + pixel_offset, 0.0)
    ih = np.maximum(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]) + pixel_offset, 0.0)
    inters = iw * ih
    uni = ((a[:, 2] - a[:, 0] + pixel_offset) * (a[:, 3] - a[:, 1] + pixel_offset)
           + (b[:, 2] - b[:, 0] + pixel_offset) * (b[:, 3] - b[:, 1] + pixel_offset) - inters)
    out = np.zeros_like(inters)
    np.divide(inters, uni, out=out, where=uni > 0)
    return out


def _pr_curves(detections, ground_truth, n_classes, iou_threshold, pixel_offset):
    """Per class: recall and precision in score order (arrays) and npos."""
    if len(detections) != len(ground_truth):
        raise ValueError(f"detections ({len(detections)} images) and ground_truth ({len(ground_truth)}) differ")
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    d_box, d_score, d_label, d_img = _flatten_detections(detections, n_classes)
    g_box, g_label, g_diff, g_img = _flatten_ground_truth(ground_truth, n_classes)

    order = np.lexsort((-d_score, d_label))  # class-major, descending score, stable on ties
    d_box, d_label = d_box[order], d_label[order]
    d_key = d_img[order] * n_classes + d_label
    g_key = g_img * n_classes + g_label
    g_order = np.argsort(g_key, kind="stable")  # keeps the annotation order within an (image, class)
    g_key_sorted = g_key[g_order]
    lo = np.searchsorted(g_key_sorted, d_key, "left")
    cnt = np.searchsorted(g_key_sorted, d_key, "right") - lo
    start = np.cumsum(cnt) - cnt
    rep = np.repeat(np.arange(len(d_key)), cnt)  # (detection, candidate box) pairs, grouped by detection
    gt = g_order[np.repeat(lo - start, cnt) + np.arange(len(rep))]
    iou = _pair_iou(d_box[rep], g_box[gt], pixel_offset)

    has = cnt > 0
    ovmax = np.full(len(d_key), -np.inf)
    if len(rep):
        ovmax[has] = np.maximum.reduceat(iou, start[has])
    at_max = np.flatnonzero(iou == ovmax[rep])
    first = at_max[np.r_[True, rep[at_max][1:] != rep[at_max][:-1]]] if len(at_max) else at_max
    jmax = np.full(len(d_key), -1)
    jmax[rep[first]] = gt[first]

    hit = ovmax >= iou_threshold  # -inf (no box of the class in the image) never hits
    hard = np.zeros(len(d_key), bool)
    hard[hit] = g_diff[jmax[hit]]
    claims = np.flatnonzero(hit & ~hard)  # TP or duplicate; hit & hard: ignored
    tp = np.zeros(len(d_key))
    tp[claims[np.unique(jmax[claims], return_index=True)[1]]] = 1.0
    fp = np.zeros(len(d_key))
    fp[~hit] = 1.0
    fp[claims] = 1.0 - tp[claims]

    npos = np.bincount(g_label[~g_diff], minlength=n_classes).astype(np.int64)
    bounds = np.searchsorted(d_label, np.arange(n_classes + 1))
    recall, precision = [], []
    for c in range(n_classes):
        ctp = np.cumsum(tp[bounds[c]:bounds[c + 1]])
        cfp = np.cumsum(fp[bounds[c]:bounds[c + 1]])
        recall.append(ctp / float(npos[c]) if npos[c] else np.full(len(ctp), np.nan))
        precision.append(ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps))
    return recall, precision, npos


def average_precision_per_class(
    detections: Sequence[Detections],
    ground_truth: Sequence[GroundTruth],
    n_classes: int,
    iou_threshold: float = 0.5,
    use_07_metric: bool = True,
    pixel_offset: float = 0.0,
) -> Dict[str, object]:
    """VOC AP of every class: {"ap": (C,) float64, NaN without ground truth; "npos": (C,) int64;
    "recall", "precision": C arrays, the PR points in descending score order (recall NaN when npos = 0)}.

    `detections[i]` / `ground_truth[i]` belong to image i (see `Detections`, `GroundTruth`; NumPy or
    torch, difficult defaults to all False). `pixel_offset=1.0` with integer pixel boxes reproduces
    voc_eval.py / the devkit; 0.0 (default) is for continuous 0-based float boxes.
    """
    recall, precision, npos = _pr_curves(detections, ground_truth, n_classes, iou_threshold, pixel_offset)
    ap = np.array([voc_ap(r, p, use_07_metric) if n else np.nan for r, p, n in zip(recall, precision, npos)])
    return {"ap": ap, "npos": npos, "recall": recall, "precision": precision}


def _mean_ap(ap: np.ndarray) -> float:
    ap = ap[~np.isnan(ap)]
    return float(ap.mean()) if len(ap) else float("nan")


def detection_metrics(
    detections: Sequence[Detections],
    ground_truth: Sequence[GroundTruth],
    n_classes: Optional[int] = None,
    class_names: Optional[Sequence[str]] = None,
    iou_threshold: float = 0.5,
    pixel_offset: float = 0.0,
) -> Dict[str, float]:
    """{"map50": all-point mAP, "map50_07": 11-point mAP, "ap50/<name>", "ap50_07/<name>": per class}.

    The 50 is 100 x iou_threshold (e.g. "map75" at 0.75). Names are `class_names[c]`, else the index c.
    Classes without non-difficult ground truth: NaN entries, left out of both mAPs.
    """
    if n_classes is None:
        if class_names is None:
            raise ValueError("give n_classes or class_names")
        n_classes = len(class_names)
    if class_names is not None and len(class_names) != n_classes:
        raise ValueError(f"{len(class_names)} class names for {n_classes} classes")
    names = [str(c) for c in range(n_classes)] if class_names is None else [str(n) for n in class_names]
    recall, precision, npos = _pr_curves(detections, ground_truth, n_classes, iou_threshold, pixel_offset)
    tag = f"{100 * iou_threshold:g}"
    ap = np.array([voc_ap(r, p, False) if n else np.nan for r, p, n in zip(recall, precision, npos)])
    ap07 = np.array([voc_ap(r, p, True) if n else np.nan for r, p, n in zip(recall, precision, npos)])
    out = {f"map{tag}": _mean_ap(ap), f"map{tag}_07": _mean_ap(ap07)}
    out.update({f"ap{tag}/{name}": float(a) for name, a in zip(names, ap)})
    out.update({f"ap{tag}_07/{name}": float(a) for name, a in zip(names, ap07)})
    return out


def episode_summary(maps: Sequence[float]) -> Dict[str, float]:
    """{"map50_mean", "map50_ci95"} over few-shot episodes: mean and 1.96 * std (ddof=1) / sqrt(E),
    the few-shot accuracy's CI (`confidence_interval95`; NaN for one episode). NaN episodes propagate."""
    m = to_numpy(maps, np.float64).reshape(-1)
    if m.size == 0:
        raise ValueError("episode_summary needs at least one episode")
    return {"map50_mean": float(m.mean()), "map50_ci95": confidence_interval95(m)}
