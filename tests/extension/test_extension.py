"""A method, a dataset and a backbone that live under tests/ (nothing in the package edited) run the whole
lifecycle through the real command line: train -> get_embeddings -> scripts/evaluate.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
EXTENSION_CONF = Path(__file__).resolve().parent / "conf"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_user_method_dataset_and_backbone_run_end_to_end(tmp_path):
    common = [f"hydra.searchpath=[file://{EXTENSION_CONF}]", "allowed_targets=[tests.extension.]", "method=toy_ncm", "dataset=toy_blobs", "arch=toy_mlp",
              "sampler.n_classes=4",
              f"runs_root={tmp_path}", "device=cpu", "progress_bar=false", "num_workers=0"]
    trained = _cli("-m", "vmf_embeddings.main", *common, "mode.evaluate_at_end=false", "mode.extract_at_end=false")
    assert trained.returncode == 0, trained.stderr[-3000:]
    run_dir = tmp_path / "toy_blobs" / "toy_ncm" / "4dim" / "arch:toy_mlp"  # the arch is not in the path
    state = __import__("torch").load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    assert int(state["model"]["head.steps"]) == 4 * 10  # after_step ran every step and is checkpointed

    extracted = _cli("-m", "vmf_embeddings.main", *common, "mode=get_embeddings")
    assert extracted.returncode == 0, extracted.stderr[-3000:]
    with np.load(run_dir / "embeddings" / "test.npz") as test:
        assert str(test["geometry"]) == "euclidean" and test["log_probs"].shape == (len(test["labels"]), 4)
        assert test["embeddings"].shape[1] == 4

    evaluated = _cli("scripts/evaluate.py", str(run_dir))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] > 0.8  # blobs are easy; chance is 0.25
    assert metrics["meta"]["method"] == "toy_ncm" and metrics["meta"]["dataset"] == "toy_blobs"
