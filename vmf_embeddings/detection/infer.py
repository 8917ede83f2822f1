"""Running a trained detector over a split, and scoring it with VOC mAP (`vmf_embeddings.eval.detection`)."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from vmf_embeddings.datasets.detection import DetectionSplit
from vmf_embeddings.eval.detection import detection_metrics


@torch.no_grad()
def detect(model, split: DetectionSplit, device: torch.device, batch_size: int = 8,
           indices: Optional[Sequence[int]] = None) -> List[Dict[str, torch.Tensor]]:
    """Per image (all of `split`, or `indices`): boxes (n x 4, the image's own pixels), scores, labels 0..C-1."""
    model.eval()
    order = list(range(len(split))) if indices is None else list(indices)
    out: List[Dict[str, torch.Tensor]] = []
    for start in range(0, len(order), int(batch_size)):
        images = [split.load_image(i).to(device).float().div_(255.0) for i in order[start:start + int(batch_size)]]
        for result in model(images):
            out.append({"boxes": result["boxes"].cpu(), "scores": result["scores"].cpu(),
                        "labels": result["labels"].cpu() - 1})
    return out


def ground_truth(split: DetectionSplit, indices: Optional[Sequence[int]] = None) -> List[Dict[str, torch.Tensor]]:
    order = range(len(split)) if indices is None else indices
    return [split.target(i) for i in order]


def split_map(model, split: DetectionSplit, device: torch.device, class_names: Sequence[str],
              batch_size: int = 8) -> Dict[str, float]:
    """VOC mAP@0.5 (all-point `map50`, 11-point `map50_07`) and per-class APs of the detector on a split."""
    detections = detect(model, split, device, batch_size)
    return detection_metrics(detections, ground_truth(split), n_classes=len(class_names), class_names=class_names)


def detections_arrays(detections: List[Dict[str, torch.Tensor]], truth: List[Dict[str, torch.Tensor]]
                      ) -> Dict[str, np.ndarray]:
    """Flat arrays for an npz: every detection and ground-truth box with the index of its image."""
    def flat(items, keys):
        index = np.concatenate([np.full(len(item["boxes"]), i, dtype=np.int64) for i, item in enumerate(items)]
                               or [np.zeros(0, np.int64)])
        arrays = {key: np.concatenate([np.asarray(item[key]) for item in items]) if items else np.zeros(0)
                  for key in keys}
        return index, arrays

    det_index, det = flat(detections, ("boxes", "scores", "labels"))
    gt_index, gt = flat(truth, ("boxes", "labels", "difficult"))
    return {"n_images": np.int64(len(truth)), "det_image": det_index, "det_boxes": det["boxes"].reshape(-1, 4),
            "det_scores": det["scores"], "det_labels": det["labels"].astype(np.int64),
            "gt_image": gt_index, "gt_boxes": gt["boxes"].reshape(-1, 4), "gt_labels": gt["labels"].astype(np.int64),
            "gt_difficult": gt["difficult"].astype(bool)}


def _rows_per_image(index: np.ndarray, n: int) -> List[np.ndarray]:
    order = np.argsort(index, kind="stable")
    return np.split(order, np.cumsum(np.bincount(index, minlength=n))[:-1])


def from_arrays(arrays) -> tuple:
    """(detections, ground truth) per image back from `detections_arrays`."""
    n = int(arrays["n_images"])
    det = [{key: arrays[f"det_{key}"][rows] for key in ("boxes", "scores", "labels")}
           for rows in _rows_per_image(arrays["det_image"], n)]
    gt = [{key: arrays[f"gt_{key}"][rows] for key in ("boxes", "labels", "difficult")}
          for rows in _rows_per_image(arrays["gt_image"], n)]
    return det, gt
