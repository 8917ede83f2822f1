"""The file-backed, class-disjoint path end to end: a tiny CUB-200 in its own archive layout, a
torchvision ResNet, DataLoader decoding, Recall@1 validation and extraction with original class ids."""

from __future__ import annotations

import numpy as np

from tests.conftest import FAST, compose_config
from tests.datasets.dataset_fakes import write_cub200
from vmf_embeddings.main import run


def test_cub200_trains_validates_on_recall_and_extracts(tmp_path):
    write_cub200(tmp_path / "cub", n_classes=200, per_class=2, n_images=None)
    overrides = FAST + [
        "dataset=cub200", f"dataset.dataset_path={tmp_path / 'cub'}", "dataset.image_size=32",
        "arch=resnet18", "arch.params.embedding_dim=8", "method=vmf_softmax",
        "sampler.n_classes=8", "sampler.n_samples=2", "sampler.n_episodes=2", "mode.epochs=1",
        "mode.learning_rate=0.001", "mode.momentum=0.9", "mode.nesterov=false",
    ]
    run_dir = tmp_path / "run"
    best = run(compose_config(overrides), run_dir)
    assert 0.0 <= best <= 1.0  # Recall@1 on the 15 class-disjoint validation classes
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert '"val/recall@1"' in lines[0] and '"train/mean_kappa"' in lines[0]
    run(compose_config(FAST + ["mode=get_embeddings"]), run_dir)
    test = np.load(run_dir / "embeddings" / "test.npz")
    assert test["embeddings"].shape == (200, 8)
    assert "logits" not in test.files  # no classifier over the disjoint test classes
    assert sorted(set(test["labels"].tolist())) == list(range(100))
    assert sorted(set(test["original_ids"].tolist())) == list(range(100, 200))
