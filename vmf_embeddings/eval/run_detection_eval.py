"""Evaluation of detection run dirs (`task: detection`): VOC mAP@0.5 from `detections/<split>.npz` (all-point
`map50`, 11-point VOC2007 `map50_07`, per-class `ap50/<class>`), and the few-shot episodes' mean mAP with its 95%
interval from `detections/episodes.json` (`fewshot_det_<N>way<K>shot_map50`, `..._ci95`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import numpy as np

from vmf_embeddings.eval.detection import detection_metrics, episode_summary
from vmf_embeddings.eval.run_dir import RunDirError


def evaluate_detection(run_dir: Path, config) -> Dict[str, Any]:
    from vmf_embeddings.detection.infer import from_arrays

    folder = Path(run_dir) / "detections"
    result: Dict[str, Any] = {"meta": {"task": "detection", "run_dir": str(run_dir), "method": str(config.method.name),
                                       "dataset": str(config.dataset.name), "seed": int(config.seed)}}
    for name in ("val", "test"):
        path = folder / f"{name}.npz"
        if not path.is_file():
            continue
        try:
            with np.load(path, allow_pickle=False) as arrays:
                names = [str(n) for n in arrays["class_names"]]
                detections, truth = from_arrays(arrays)
        except (KeyError, ValueError, OSError) as error:
            raise RunDirError(f"{path}: unreadable detections ({error}); extract again with "
                              f"mode=get_embeddings") from None
        scores = detection_metrics(detections, truth, n_classes=len(names), class_names=names)
        result[name] = {"n": len(truth), **scores}
    episodes = folder / "episodes.json"
    if episodes.is_file():
        record = json.loads(episodes.read_text())
        summary = episode_summary(record["map50"])
        tuned = "_ft" if record.get("finetune_steps") else ""
        key = f"fewshot_det_{record['n_way']}way{record['k_shot']}shot{tuned}"
        result.setdefault("test", {}).update({f"{key}_map50": summary["map50_mean"], f"{key}_map50_ci95":
                                              summary["map50_ci95"], f"{key}_episodes": len(record["map50"])})
    if len(result) == 1:
        raise RunDirError(f"{folder}: no detections/{{val,test}}.npz; extract them: python -m vmf_embeddings.main "
                          f"mode=get_embeddings run_dir={run_dir}")
    return result
