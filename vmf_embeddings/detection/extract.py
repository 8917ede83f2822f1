"""Extraction for detection runs: the checkpoint's detections on val and test (`detections/<split>.npz`, boxes in
each image's own pixels, labels 0..C-1 of the base classes), and with `eval.detection_episodes` the few-shot
episodes' mAPs on the novel classes (`detections/episodes.json`). `scripts/evaluate.py` scores them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from vmf_embeddings import checkpoint
from vmf_embeddings.detection.data import base_training_data, build_detection_data
from vmf_embeddings.detection.fewshot import episode_options, run_episodes
from vmf_embeddings.detection.infer import detect, detections_arrays, ground_truth
from vmf_embeddings.detection.model import build_detector
from vmf_embeddings.errors import CheckpointError
from vmf_embeddings.runtime import resolve_device

log = logging.getLogger(__name__)


def extract_detection(cfg: DictConfig, run_dir: Path) -> None:
    run_dir = Path(run_dir)
    device = resolve_device(cfg.device)
    full = build_detection_data(cfg)
    data = base_training_data(full)
    model = build_detector(cfg, data.n_classes).to(device)
    last, best = checkpoint.checkpoint_paths(run_dir)
    path = best if cfg.mode.checkpoint == "best" and best.is_file() else last
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint to extract from; train first (mode=train)")
    weights, epoch = checkpoint.weights_from(path, map_location=device)
    model.load_state_dict(weights)
    out = run_dir / "detections"
    out.mkdir(parents=True, exist_ok=True)
    batch = int(cfg.method.detector.get("inference_batch", 4))
    for name in ("val", "test"):
        if name not in cfg.mode.splits:
            continue
        split = getattr(data, name)
        arrays = detections_arrays(detect(model, split, device, batch), ground_truth(split))
        checkpoint.savez_atomic(out / f"{name}.npz", class_names=np.array(data.class_names),
                                epoch=np.int64(-1 if epoch is None else epoch),
                                **arrays)
        log.info("wrote %s (%d images, %d detections)", out / f"{name}.npz", len(split), len(arrays["det_scores"]))
    episodes = cfg.eval.get("detection_episodes")
    if episodes:
        options = episode_options(episodes)
        maps = run_episodes(model, full, device, seed=int(cfg.eval.seed), batch_size=batch, **options)
        record = {**options, "map50": maps}
        checkpoint.atomic_write(out / "episodes.json", lambda f: f.write(json.dumps(record).encode()))
        log.info("few-shot detection: %d episodes, mean mAP@0.5 %.4f", len(maps), float(np.mean(maps)))
