"""VOC detection mAP: hand-computed cases, a literal port of py-faster-rcnn's voc_eval.py (to 1e-12) and
torchmetrics / pycocotools where COCO's AP coincides with VOC's (to 1e-6).

COCO vs VOC, and how the comparison is made exactly comparable:
- COCO's AP is the mean over `rec_thresholds` r of max{precision : recall >= r} (0 past the last recall).
  With r = np.arange(0., 1.1, 0.1) that is VOC2007's 11-point AP, floats included. With r = k / npos,
  k = 1..npos (one class per run), it is the all-point AP: the VOC envelope is a step function constant
  on ((k-1)/npos, k/npos], and fl(k/npos) is the very float of recall = tp/npos.
- COCO matches a detection to the best still-unmatched box; VOC to the best box overall (a duplicate if
  taken). They agree when no detection has IoU >= 0.5 with two boxes of its class: ground truths are
  drawn in disjoint grid cells (two disjoint boxes cannot both have IoU >= 0.5 with one box).
- COCO's crowd (`iscrowd`) is not VOC's difficult: its IoU is intersection / detection area and a crowd box
  absorbs any number of detections; so no difficult boxes in the torchmetrics comparison (the voc_eval
  port covers them).
- Scores are distinct (voc_eval.py's argsort is not stable); coordinates are multiples of 1/16, exact in
  the float32 / xywh round trips of torchmetrics; at most 100 detections per image (COCO's maxDets).
"""

import math

import numpy as np
import pytest
import torch

from vmf_embeddings.eval.detection import (
    VOC07_RECALL_POINTS,
    average_precision_per_class,
    detection_metrics,
    episode_summary,
    voc_ap,
)
from vmf_embeddings.eval.fewshot import confidence_interval95


# --------------------------------------------------------------------------------------------------
# Reference: a literal port of py-faster-rcnn lib/datasets/voc_eval.py (rbg, Bharath Hariharan), with the
# detection file and the XML annotations replaced by in-memory lists; `one` is its "+ 1." pixel term.
# --------------------------------------------------------------------------------------------------
def ref_voc_ap(rec, prec, use_07_metric=False):
    if use_07_metric:
        ap = 0.
        for t in np.arange(0., 1.1, 0.1):
            if np.sum(rec >= t) == 0:
                p = 0
            else:
                p = np.max(prec[rec >= t])
            ap = ap + p / 11.
    else:
        mrec = np.concatenate(([0.], rec, [1.]))
        mpre = np.concatenate(([0.], prec, [0.]))
        for i in range(mpre.size - 1, 0, -1):
            mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
        i = np.where(mrec[1:] != mrec[:-1])[0]
        ap = np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])
    return ap


def ref_voc_eval(det_lines, recs, classname, ovthresh=0.5, use_07_metric=False, one=1.):
    """det_lines: [(image_id, confidence, x1, y1, x2, y2)] of `classname`; recs: {image_id: [objects]}."""
    class_recs = {}
    npos = 0
    for imagename in recs:
        R = [obj for obj in recs[imagename] if obj['name'] == classname]
        bbox = np.array([x['bbox'] for x in R])
        difficult = np.array([x['difficult'] for x in R]).astype(bool)
        det = [False] * len(R)
        npos = npos + sum(~difficult)
        class_recs[imagename] = {'bbox': bbox, 'difficult': difficult, 'det': det}

    image_ids = [x[0] for x in det_lines]
    confidence = np.array([float(x[1]) for x in det_lines])
    BB = np.array([[float(z) for z in x[2:]] for x in det_lines]).reshape(-1, 4)
    sorted_ind = np.argsort(-confidence)
    BB = BB[sorted_ind, :]
    image_ids = [image_ids[x] for x in sorted_ind]

    nd = len(image_ids)
    tp = np.zeros(nd)
    fp = np.zeros(nd)
    for d in range(nd):
        R = class_recs[image_ids[d]]
        bb = BB[d, :].astype(float)
        ovmax = -np.inf
        BBGT = R['bbox'].astype(float)
        if BBGT.size > 0:
            ixmin = np.maximum(BBGT[:, 0], bb[0])
            iymin = np.maximum(BBGT[:, 1], bb[1])
            ixmax = np.minimum(BBGT[:, 2], bb[2])
            iymax = np.minimum(BBGT[:, 3], bb[3])
            iw = np.maximum(ixmax - ixmin + one, 0.)
            ih = np.maximum(iymax - iymin + one, 0.)
            inters = iw * ih
            uni = ((bb[2] - bb[0] + one) * (bb[3] - bb[1] + one) +
                   (BBGT[:, 2] - BBGT[:, 0] + one) *
                   (BBGT[:, 3] - BBGT[:, 1] + one) - inters)
            overlaps = inters / uni
            ovmax = np.max(overlaps)
            jmax = np.argmax(overlaps)
        if ovmax > ovthresh:
            if not R['difficult'][jmax]:
                if not R['det'][jmax]:
                    tp[d] = 1.
                    R['det'][jmax] = 1
                else:
                    fp[d] = 1.
        else:
            fp[d] = 1.

    fp = np.cumsum(fp)
    tp = np.cumsum(tp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    ap = ref_voc_ap(rec, prec, use_07_metric)
    return rec, prec, ap, npos


def to_voc_eval_inputs(dets, gts, n_classes):
    """Our per-image arrays -> per-class detection lines and per-image object lists (voc_eval's inputs)."""
    lines = {c: [] for c in range(n_classes)}
    recs = {}
    for i, (d, g) in enumerate(zip(dets, gts)):
        for b, s, y in zip(d["boxes"], d["scores"], d["labels"]):
            lines[int(y)].append((i, s, *b))
        recs[i] = [{"name": int(y), "bbox": list(b), "difficult": int(h)}
                   for b, y, h in zip(g["boxes"], g["labels"], g["difficult"])]
    return lines, recs


# --------------------------------------------------------------------------------------------------
# Helpers for hand-made cases
# --------------------------------------------------------------------------------------------------
def det(boxes, scores, labels=None):
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    return {"boxes": boxes, "scores": np.asarray(scores, float),
            "labels": np.zeros(len(boxes), int) if labels is None else np.asarray(labels)}


def gt(boxes, labels=None, difficult=None):
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    return {"boxes": boxes, "labels": np.zeros(len(boxes), int) if labels is None else np.asarray(labels),
            "difficult": np.zeros(len(boxes), bool) if difficult is None else np.asarray(difficult, bool)}


def cell(k, size=10.0):
    """A box in the k-th disjoint 20 x 20 cell of a row."""
    return [20.0 * k, 0.0, 20.0 * k + size, size]


MISS = [500.0, 500.0, 510.0, 510.0]  # overlaps nothing


def one_class(outcomes, npos):
    """One image, npos boxes; detection j (score descending) hits box j's cell when outcomes[j] is a box
    index, else misses: a known TP / FP sequence."""
    boxes = [cell(k) for k in range(npos)]
    scores = np.linspace(0.9, 0.1, len(outcomes))
    return [det([cell(o) if o is not None else MISS for o in outcomes], scores)], [gt(boxes)]


# --------------------------------------------------------------------------------------------------
# Hand-computed cases
# --------------------------------------------------------------------------------------------------
def test_known_pr_curve_both_aps_by_hand():
    # TP, FP (duplicate of box 0), TP, FP (miss), TP with 4 boxes:
    # recall .25 .25 .5 .5 .75, precision 1 1/2 2/3 1/2 3/5
    dets, gts = one_class([0, 0, 1, None, 2], npos=4)
    r = average_precision_per_class(dets, gts, 1, use_07_metric=False)
    np.testing.assert_allclose(r["recall"][0], [.25, .25, .5, .5, .75])
    np.testing.assert_allclose(r["precision"][0], [1, .5, 2 / 3, .5, .6])
    assert r["npos"].tolist() == [4]
    # all-point: envelope 1 on (0, .25], 2/3 on (.25, .5], 3/5 on (.5, .75], 0 after
    assert r["ap"][0] == pytest.approx(.25 * 1 + .25 * 2 / 3 + .25 * .6, abs=1e-15)
    # 11-point: t = 0, .1, .2 -> 1; .3, .4, .5 -> 2/3; .6, .7 -> 3/5; .8, .9, 1 -> 0
    ap07 = average_precision_per_class(dets, gts, 1, use_07_metric=True)["ap"][0]
    assert ap07 == pytest.approx((3 * 1 + 3 * 2 / 3 + 2 * .6) / 11, abs=1e-15)
    assert voc_ap(r["recall"][0], r["precision"][0], True) == ap07
    m = detection_metrics(dets, gts, class_names=["dog"])
    assert m == pytest.approx({"map50": 17 / 30, "map50_07": 6.2 / 11, "ap50/dog": 17 / 30,
                               "ap50_07/dog": 6.2 / 11}, abs=1e-15)


def test_voc07_points_are_voc_eval_floats():
    """np.arange(0., 1.1, 0.1)[3] = 0.30000000000000004 > 3/10: a top recall of exactly 3/10 scores 3 of
    the 11 points, not 4 (voc_eval.py's quirk, kept)."""
    assert VOC07_RECALL_POINTS[3] > 0.3 and VOC07_RECALL_POINTS[6] > 0.6 and len(VOC07_RECALL_POINTS) == 11
    dets, gts = one_class([0, 1, 2], npos=10)
    assert average_precision_per_class(dets, gts, 1, use_07_metric=True)["ap"][0] == pytest.approx(3 / 11)
    assert average_precision_per_class(dets, gts, 1, use_07_metric=False)["ap"][0] == pytest.approx(0.3)
    assert voc_ap(np.array([0.31]), np.array([1.0]), True) == pytest.approx(4 / 11)


def test_duplicates_are_false_positives():
    dets, gts = one_class([0, 0, 0, 1], npos=2)  # T F F T: recall .5 .5 .5 1, precision 1 .5 1/3 .5
    r = average_precision_per_class(dets, gts, 1, use_07_metric=False)
    np.testing.assert_allclose(r["precision"][0], [1, .5, 1 / 3, .5])
    assert r["ap"][0] == pytest.approx(.5 * 1 + .5 * .5)
    assert average_precision_per_class(dets, gts, 1)["ap"][0] == pytest.approx((6 * 1 + 5 * .5) / 11)


def test_difficult_boxes_neither_tp_nor_fp_nor_counted():
    boxes = [cell(0), cell(1)]  # box 1 difficult
    dets = [det([cell(1), cell(1), cell(0), MISS], [.9, .85, .8, .7])]
    r = average_precision_per_class(dets, [gt(boxes, difficult=[False, True])], 1, use_07_metric=False)
    assert r["npos"].tolist() == [1]
    # both hits on the difficult box are ignored (the second is no duplicate FP): points (0, 0) twice
    np.testing.assert_allclose(r["recall"][0], [0, 0, 1, 1])
    np.testing.assert_allclose(r["precision"][0], [0, 0, 1, .5])
    assert r["ap"][0] == 1.0
    assert average_precision_per_class(dets, [gt(boxes, difficult=[False, True])], 1)["ap"][0] == pytest.approx(1)
    # not difficult: T, duplicate F, T, F over 2 boxes
    plain = average_precision_per_class(dets, [gt(boxes)], 1, use_07_metric=False)
    assert plain["ap"][0] == pytest.approx(.5 + .5 * 2 / 3)
    # a class whose boxes are all difficult has no positives: NaN, left out of the mAP
    g = gt([cell(0), cell(1)], labels=[0, 1], difficult=[False, True])
    d = det([cell(0), cell(1)], [.9, .8], labels=[0, 1])
    m = detection_metrics([d], [g], n_classes=2)
    assert math.isnan(m["ap50/1"]) and m["map50"] == 1.0 and m["map50_07"] == pytest.approx(1.0)


def test_no_detections_zero_no_ground_truth_nan():
    g = gt([cell(0), cell(1)], labels=[0, 1])
    d = det([cell(0), cell(2)], [.9, .8], labels=[0, 2])  # class 1 undetected, class 2 has no boxes
    m = detection_metrics([d], [g], class_names=["a", "b", "c"])
    assert m["ap50/a"] == 1.0 and m["ap50/b"] == 0.0 and m["ap50_07/b"] == 0.0
    assert math.isnan(m["ap50/c"]) and math.isnan(m["ap50_07/c"])
    assert m["map50"] == 0.5 and m["map50_07"] == pytest.approx(0.5)
    empty = detection_metrics([det([], [])], [gt([])], n_classes=2)
    assert all(math.isnan(v) for v in empty.values())
    assert voc_ap(np.zeros(0), np.zeros(0), True) == 0.0 and voc_ap(np.zeros(0), np.zeros(0), False) == 0.0


def test_best_box_already_taken_is_a_duplicate():
    """The devkit / voc_eval take the max-IoU box over ALL boxes: if it is taken the detection is a FP
    even though a free box overlaps it by >= 0.5 (COCO would match the free box)."""
    boxes = [[0, 0, 10, 10], [1, 0, 11, 10]]  # IoU 0.818
    dets = [det([[0, 0, 10, 10], [0, 0, 10, 10]], [.9, .8])]  # both prefer box 0 (IoU 1 vs 0.818)
    r = average_precision_per_class(dets, [gt(boxes)], 1, use_07_metric=False)
    np.testing.assert_allclose(r["precision"][0], [1, .5])
    assert r["ap"][0] == pytest.approx(0.5)
    rec, prec, ap, _ = ref_voc_eval([(0, .9, 0, 0, 10, 10), (0, .8, 0, 0, 10, 10)],
                                    {0: [{"name": 0, "bbox": b, "difficult": 0} for b in boxes]}, 0, one=0.)
    assert ap == pytest.approx(0.5)


def test_threshold_inclusive_and_pixel_offset():
    # offset 0: [0,0,10,20] vs [0,0,10,10] -> 100 / 200 = 0.5 exactly: a match (devkit's >=)
    d, g = [det([[0, 0, 10, 20]], [1.])], [gt([[0, 0, 10, 10]])]
    assert average_precision_per_class(d, g, 1, use_07_metric=False)["ap"][0] == 1.0
    # inclusive integer pixels: [0,0,9,19] vs [0,0,9,9] -> 100 / 200 with offset 1, 81 / 171 without
    d, g = [det([[0, 0, 9, 19]], [1.])], [gt([[0, 0, 9, 9]])]
    assert average_precision_per_class(d, g, 1, pixel_offset=1.0)["ap"][0] == pytest.approx(1.0)
    assert average_precision_per_class(d, g, 1, pixel_offset=0.0)["ap"][0] == 0.0
    # a higher threshold in the keys
    m = detection_metrics(d, g, n_classes=1, iou_threshold=0.75, pixel_offset=1.0)
    assert set(m) == {"map75", "map75_07", "ap75/0", "ap75_07/0"} and m["map75"] == 0.0


def test_score_ties_keep_input_order():
    dets_fp_first = [det([MISS, cell(0)], [.5, .5])]
    dets_tp_first = [det([cell(0), MISS], [.5, .5])]
    g = [gt([cell(0)])]
    assert average_precision_per_class(dets_fp_first, g, 1, use_07_metric=False)["ap"][0] == 0.5
    assert average_precision_per_class(dets_tp_first, g, 1, use_07_metric=False)["ap"][0] == 1.0
    # across images: image order
    two = [det([MISS], [.5]), det([cell(0)], [.5])]
    assert average_precision_per_class(two, [gt([]), gt([cell(0)])], 1, use_07_metric=False)["ap"][0] == 0.5


def test_input_forms_torch_tuples_dicts_agree():
    rng = np.random.default_rng(3)
    dets, gts = random_scene(rng, n_images=12, n_classes=3)
    ref = detection_metrics(dets, gts, n_classes=3)
    as_tuples = detection_metrics([(d["boxes"], d["scores"], d["labels"]) for d in dets],
                                  [(g["boxes"], g["labels"], g["difficult"]) for g in gts], n_classes=3)
    as_torch = detection_metrics([{k: torch.as_tensor(v) for k, v in d.items()} for d in dets],
                                 [{k: torch.as_tensor(v) for k, v in g.items()} for g in gts], n_classes=3)
    assert as_tuples == ref and as_torch == ref
    no_flags = detection_metrics(dets, [(g["boxes"], g["labels"]) for g in gts], n_classes=3)
    all_false = detection_metrics(dets, [gt(g["boxes"], g["labels"]) for g in gts], n_classes=3)
    assert no_flags == all_false


def test_input_errors():
    d, g = [det([cell(0)], [.5])], [gt([cell(0)])]
    with pytest.raises(ValueError, match="differ"):
        detection_metrics(d + d, g, n_classes=1)
    with pytest.raises(ValueError, match="0..0"):
        detection_metrics([det([cell(0)], [.5], labels=[1])], g, n_classes=1)
    with pytest.raises(ValueError, match="xyxy"):
        detection_metrics([det([[10, 0, 0, 10]], [.5])], g, n_classes=1)
    with pytest.raises(ValueError, match="lacks"):
        detection_metrics([{"boxes": np.zeros((0, 4)), "labels": np.zeros(0)}], g, n_classes=1)
    with pytest.raises(ValueError, match="class names"):
        detection_metrics(d, g, n_classes=2, class_names=["a"])
    with pytest.raises(ValueError, match="iou_threshold"):
        detection_metrics(d, g, n_classes=1, iou_threshold=0.0)
    with pytest.raises(ValueError, match="differ in length"):
        voc_ap([0.5], [1.0, 0.5], False)


def test_episode_summary_matches_fewshot_ci():
    maps = [0.4, 0.5, 0.6, 0.3]
    s = episode_summary(maps)
    assert s["map50_mean"] == pytest.approx(0.45)
    assert s["map50_ci95"] == confidence_interval95(maps)
    assert s["map50_ci95"] == pytest.approx(1.96 * np.std(maps, ddof=1) / 2)
    assert math.isnan(episode_summary([0.5])["map50_ci95"])


# --------------------------------------------------------------------------------------------------
# Randomised: against the voc_eval.py port (overlapping boxes, difficult flags, both pixel conventions)
# --------------------------------------------------------------------------------------------------
def random_scene(rng, n_images, n_classes, p_difficult=0.2, grid=False, max_gt=6, max_extra=10):
    """Boxes in [0, 100]^2 with multiples of 1/16 as coordinates; detections: jittered copies of ground
    truths (TPs, duplicates, near misses, some with a wrong label) plus random boxes; distinct scores."""
    q = lambda x: np.round(np.asarray(x) * 16) / 16  # noqa: E731
    dets, gts = [], []
    for _ in range(n_images):
        m = rng.integers(0, max_gt + 1)
        if grid:  # disjoint: one box per 25 x 25 cell
            cells = rng.choice(16, size=min(m, 16), replace=False)
            xy = np.stack([cells % 4, cells // 4], 1) * 25.0 + rng.uniform(0, 8, (len(cells), 2))
            wh = rng.uniform(6, 16, (len(cells), 2))
        else:
            xy = rng.uniform(0, 70, (m, 2))
            wh = rng.uniform(4, 40, (m, 2))
        g_boxes = np.concatenate([xy, xy + wh], 1).reshape(-1, 4)
        g_labels = rng.integers(0, n_classes, len(g_boxes))
        if not grid:  # crowds: a box close to its predecessor, same class (two candidates for one hit)
            for i in np.flatnonzero(rng.random(len(g_boxes)) < 0.3)[1:] if len(g_boxes) > 1 else []:
                g_boxes[i] = g_boxes[i - 1] + rng.uniform(-0.1, 0.1, 4) * np.tile(wh[i - 1], 2)
                g_labels[i] = g_labels[i - 1]
        g_boxes = q(g_boxes)
        g_boxes[:, 2:] = np.maximum(g_boxes[:, 2:], g_boxes[:, :2] + 1 / 16)
        g_diff = rng.random(len(g_boxes)) < p_difficult
        copies = rng.integers(0, 3, len(g_boxes))  # 0, 1 or 2 detections per box
        src = np.repeat(np.arange(len(g_boxes)), copies)
        size = np.tile((g_boxes[src, 2:] - g_boxes[src, :2]), 2)
        d_boxes = g_boxes[src] + rng.uniform(-1, 1, (len(src), 4)) * rng.uniform(0, 0.3, (len(src), 1)) * size
        d_labels = np.where(rng.random(len(src)) < 0.1, rng.integers(0, n_classes, len(src)), g_labels[src])
        k = rng.integers(0, max_extra + 1)
        xy = rng.uniform(0, 80, (k, 2))
        extra = np.concatenate([xy, xy + rng.uniform(4, 30, (k, 2))], 1)
        d_boxes = q(np.concatenate([d_boxes, extra]).reshape(-1, 4))
        d_boxes[:, 2:] = np.maximum(d_boxes[:, 2:], d_boxes[:, :2] + 1 / 16)
        d_labels = np.concatenate([d_labels, rng.integers(0, n_classes, k)]).astype(int)
        dets.append({"boxes": d_boxes, "scores": rng.random(len(d_boxes)), "labels": d_labels})
        gts.append({"boxes": g_boxes, "labels": g_labels, "difficult": g_diff})
    scores = np.concatenate([d["scores"] for d in dets])
    assert len(np.unique(scores)) == len(scores)
    return dets, gts


@pytest.mark.parametrize("offset", [0.0, 1.0])
@pytest.mark.parametrize("iou_threshold", [0.5, 0.7])
def test_against_voc_eval_port(offset, iou_threshold):
    rng = np.random.default_rng(int(offset * 10 + iou_threshold * 100))
    n_classes = 5
    dets, gts = random_scene(rng, n_images=150, n_classes=n_classes)
    lines, recs = to_voc_eval_inputs(dets, gts, n_classes)
    for use_07 in (False, True):
        ours = average_precision_per_class(dets, gts, n_classes, iou_threshold, use_07, pixel_offset=offset)
        for c in range(n_classes):
            rec, prec, ap, npos = ref_voc_eval(lines[c], recs, c, iou_threshold, use_07, one=offset)
            assert ours["npos"][c] == npos and npos > 0
            np.testing.assert_allclose(ours["recall"][c], rec, rtol=0, atol=1e-12)
            np.testing.assert_allclose(ours["precision"][c], prec, rtol=0, atol=1e-12)
            assert ours["ap"][c] == pytest.approx(ap, abs=1e-12)
    # the scene exercises the cases: detections hitting difficult boxes or two boxes of their class
    hits = [same_class_iou(d, g) >= iou_threshold for d, g in zip(dets, gts)]
    assert sum((h & g["difficult"][None]).any(1).sum() for h, g in zip(hits, gts)) >= 20
    assert sum((h.sum(1) >= 2).sum() for h in hits) >= 10


def same_class_iou(d, g):
    """IoU (offset 0) of every detection with every box of the image, 0 across classes."""
    a, b = d["boxes"][:, None], g["boxes"][None]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    iou = iw * ih / (area(a) + area(b) - iw * ih)
    return np.where(d["labels"][:, None] == g["labels"][None], iou, 0.0)


def test_voc_ap_against_port_on_random_curves():
    rng = np.random.default_rng(7)
    for _ in range(200):
        npos = int(rng.integers(1, 30))
        hits = rng.random(int(rng.integers(0, 60))) < rng.random()
        tp = np.cumsum(hits).astype(float)
        fp = np.cumsum(~hits).astype(float)
        rec = tp / npos
        prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        for use_07 in (False, True):
            assert voc_ap(rec, prec, use_07) == ref_voc_ap(rec, prec, use_07)


# --------------------------------------------------------------------------------------------------
# Randomised: against torchmetrics' MeanAveragePrecision (pycocotools backend), where comparable
# --------------------------------------------------------------------------------------------------
def coco_map(dets, gts, rec_thresholds, class_metrics=False):
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(iou_thresholds=[0.5], rec_thresholds=list(rec_thresholds),
                                  class_metrics=class_metrics, backend="pycocotools")
    metric.update(
        [{"boxes": torch.tensor(d["boxes"]), "scores": torch.tensor(d["scores"]),
          "labels": torch.tensor(d["labels"])} for d in dets],
        [{"boxes": torch.tensor(g["boxes"]), "labels": torch.tensor(g["labels"])} for g in gts],
    )
    return metric.compute()


@pytest.fixture(scope="module")
def coco_comparable():
    pytest.importorskip("pycocotools")
    pytest.importorskip("torchmetrics")
    rng = np.random.default_rng(11)
    dets, gts = random_scene(rng, n_images=60, n_classes=4, p_difficult=0.0, grid=True, max_gt=8)
    # no detection within 1e-9 of IoU 0.5 with a box of its class: the >= decision is float-robust
    for d, g in zip(dets, gts):
        iou = same_class_iou(d, g)
        assert not np.any(np.abs(iou - 0.5) < 1e-9)
        assert (iou >= 0.5).sum(1).max(initial=0) <= 1  # so greedy COCO == VOC matching
    return dets, gts


def test_11_point_ap_equals_coco_with_voc07_recall_thresholds(coco_comparable):
    dets, gts = coco_comparable
    ours = average_precision_per_class(dets, gts, 4, use_07_metric=True)
    coco = coco_map(dets, gts, VOC07_RECALL_POINTS.tolist(), class_metrics=True)
    assert coco["classes"].tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(coco["map_per_class"].numpy(), ours["ap"], rtol=0, atol=1e-6)
    assert float(coco["map"]) == pytest.approx(np.mean(ours["ap"]), abs=1e-6)
    assert detection_metrics(dets, gts, n_classes=4)["map50_07"] == pytest.approx(float(coco["map"]), abs=1e-6)
    assert 0.1 < np.mean(ours["ap"]) < 0.9  # a non-trivial PR curve


def test_all_point_ap_equals_coco_with_recall_thresholds_k_over_npos(coco_comparable):
    dets, gts = coco_comparable
    ours = average_precision_per_class(dets, gts, 4, use_07_metric=False)
    for c in range(4):  # one class per run: its own thresholds k / npos_c, k = 1..npos_c
        npos = int(ours["npos"][c])
        keep_d = [{k: v[d["labels"] == c] for k, v in d.items()} for d in dets]
        keep_g = [{k: v[g["labels"] == c] for k, v in g.items()} for g in gts]
        coco = coco_map(keep_d, keep_g, [k / npos for k in range(1, npos + 1)])
        assert float(coco["map"]) == pytest.approx(ours["ap"][c], abs=1e-6)
    # the default 101-point COCO AP is a different number (why the thresholds above are needed)
    default = coco_map(dets, gts, np.linspace(0, 1, 101).tolist())
    assert abs(float(default["map"]) - np.mean(ours["ap"])) > 1e-6


def test_coco_differs_where_documented():
    """Why the torchmetrics comparison avoids overlapping boxes: COCO matches the free box."""
    pytest.importorskip("pycocotools")
    pytest.importorskip("torchmetrics")
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10]], float)
    d = [{"boxes": boxes[[0, 0]], "scores": np.array([.9, .8]), "labels": np.array([0, 0])}]
    g = [{"boxes": boxes, "labels": np.array([0, 0]), "difficult": np.zeros(2, bool)}]
    assert average_precision_per_class(d, g, 1, use_07_metric=False)["ap"][0] == pytest.approx(0.5)
    assert float(coco_map(d, g, [0.5, 1.0])["map"]) == pytest.approx(1.0)
