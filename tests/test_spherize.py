"""arch.spherize=true: the spherization layer on an arch's pre-activation output, through the whole run lifecycle."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import FAST, compose_config
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
    import vmf_embeddings.train as train_module
    from vmf_embeddings import checkpoint
    from vmf_embeddings.main import run

    overrides = FAST + SPHERE + ["mode.epochs=3", "sampler.n_episodes=4", "mode.extract_at_end=false",
                                 "mode.evaluate_at_end=false"]
    run(compose_config(overrides), tmp_path / "straight")
    monkeypatch.setattr(train_module, "_after_epoch", lambda e: (_ for _ in ()).throw(KeyboardInterrupt) if e == 0
                        else None)
    with pytest.raises(KeyboardInterrupt):
        run(compose_config(overrides), tmp_path / "killed")
    monkeypatch.setattr(train_module, "_after_epoch", lambda e: None)
    run(compose_config(overrides + ["resume=true"]), tmp_path / "killed")
    a = checkpoint.load(tmp_path / "straight" / "checkpoints" / "last.pt")["model"]
    b = checkpoint.load(tmp_path / "killed" / "checkpoints" / "last.pt")["model"]
    assert {"backbone.spherization.scaling", "backbone.spherization.radius"} <= set(a)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)
