"""arch.spherize=true: the spherization layer on an arch's pre-activation output, through the whole run lifecycle."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import FAST, assert_same_weights, compose_config, killed_and_resumed_weights
from vmf_embeddings.build import Spherized, build_model
from vmf_embeddings.errors import ConfigError

SPHERE = ["arch.spherize=true", "spherization.scaling=1.0", "spherization.radius=2.0"]  # s = 1 for a 3-d layer


def test_the_head_sees_one_more_dimension():
    model = build_model(compose_config(FAST + SPHERE))
    assert isinstance(model.backbone, Spherized)
    assert model.head.classifier.in_features == 4  # n_digit_mnist's 3-d pre-activation + 1
    out = model(torch.rand(5, 1, 28, 28))
    torch.testing.assert_close(out.norm(dim=1), torch.full((5,), 2.0))


def test_an_arch_without_a_pre_activation_output_is_refused():
    with pytest.raises(ConfigError, match="arch=conv4 does not end in a pre-activation layer"):
        build_model(compose_config(FAST + ["arch=conv4", "+arch.spherize=true"]))


def test_a_spherized_run_trains_logs_and_exports_points_on_the_sphere(tmp_path):
    from vmf_embeddings.main import run

    run(compose_config(FAST + SPHERE + ["mode.projector=false"]), tmp_path / "run")
    test = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert test["accuracy"] >= 0.9, test
    epochs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"train/spherization/scaling", "train/spherization/radius",
            "train/spherization/saturated_fraction"} <= set(epochs[0])
    assert epochs[-1]["train/spherization/scaling"] != 1.0  # s is learnt; r is fixed
    assert epochs[-1]["train/spherization/radius"] == 2.0
    embeddings = np.load(tmp_path / "run" / "embeddings" / "test.npz")["embeddings"]
    assert embeddings.shape[1] == 4
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 2.0, rtol=1e-5)


def test_a_spherized_run_resumes_bit_for_bit(tmp_path, monkeypatch):
    overrides = FAST + SPHERE + ["mode.epochs=3", "sampler.n_episodes=4", "mode.extract_at_end=false",
                                 "mode.evaluate_at_end=false"]
    a, b = killed_and_resumed_weights(overrides, tmp_path, monkeypatch)
    assert {"backbone.spherization.scaling", "backbone.spherization.radius"} <= set(a)
    assert_same_weights(a, b)
