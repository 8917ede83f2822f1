"""The spherization paper's toy task: the points, both networks, and 100% training accuracy when spherized."""

from __future__ import annotations

import json

import torch

from tests.conftest import FAST, compose_config
from vmf_embeddings.build import build_model
from vmf_embeddings.datasets.toy import load_toy_points


def test_the_toy_points():
    data = load_toy_points(seed=1)
    x = data.train.images.view(-1, 2)
    assert x.shape == (200, 2) and data.train.labels.bincount().tolist() == [100, 100]
    assert float((x[:100]).abs().max()) <= 0.05 and float((x[100:] - 1).abs().max()) <= 0.05
    assert not torch.equal(data.val.images, data.train.images)


def test_spherized_toy_net_is_bias_free_on_the_circle():
    model = build_model(compose_config(FAST + ["experiment=sph_toy"]))
    assert model.backbone.fc.bias is None and model.head.classifier.in_features == 2
    out = model(torch.rand(4, 1, 1, 2))
    torch.testing.assert_close(out.norm(dim=1), torch.ones(4))
    baseline = build_model(compose_config(FAST + ["experiment=sph_toy_baseline"]))
    assert baseline.backbone.fc.bias is not None and isinstance(baseline.backbone.tail, torch.nn.Sigmoid)


def test_the_spherized_toy_task_reaches_full_training_accuracy(tmp_path):
    from vmf_embeddings.main import run

    run(compose_config(FAST + ["experiment=sph_toy", "mode.projector=false"]), tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train"]["accuracy"] == 1.0
