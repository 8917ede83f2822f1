"""arch=mgp_conv: metric-guided prototypes' MNIST CNN (shapes, layers, parameter count, config, training)."""

from __future__ import annotations

import json

import numpy as np
import torch
from torch import nn

from tests.conftest import FAST, compose_config
from vmf_embeddings.archs.mgp_conv import MGPConv
from vmf_embeddings.build import build_model, build_optimizer


def test_two_d_embeddings_of_28_px_digits():
    net = MGPConv()
    assert net.embedding_dim == 2
    assert net(torch.rand(5, 1, 28, 28)).shape == (5, 2)
    assert MGPConv(embedding_dim=3, in_channels=3)(torch.rand(2, 3, 32, 32)).shape == (2, 3)  # any size: global pool


def test_layers_and_parameter_count():
    net = MGPConv()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 16), (16, 16), (16, 32)]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) and c.stride == (1, 1) for c in convs)
    kinds = [type(m).__name__ for m in net.features]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"] * 2 + ["Conv2d", "BatchNorm2d", "ReLU",
                                                                         "AdaptiveMaxPool2d", "Flatten"]
    assert [type(m) for m in net.head] == [nn.Linear, nn.Linear]  # no nonlinearity between the two
    assert [(m.in_features, m.out_features) for m in net.head] == [(32, 64), (64, 2)]
    # convs 160 + 2,320 + 4,640, BatchNorms 32 + 32 + 64, linears 2,112 + 130
    assert sum(p.numel() for p in net.parameters()) == 9_490
    # a 28-px image reaches the global pool as 32 x 7 x 7 maps: the output is their spatial maximum
    net.eval()
    x = torch.rand(2, 1, 28, 28)
    maps = net.features[:-2](x)
    assert maps.shape == (2, 32, 7, 7)
    torch.testing.assert_close(net(x), net.head(maps.amax(dim=(2, 3))))


def test_composes_builds_and_trains_a_few_steps():
    cfg = compose_config(["arch=mgp_conv"])
    assert cfg.arch.name == "mgp_conv" and cfg.arch.params.embedding_dim == 2
    torch.manual_seed(0)
    model = build_model(cfg)
    assert isinstance(model.backbone, MGPConv) and model.backbone.embedding_dim == 2
    optimizer = build_optimizer(cfg, model)
    before = [p.detach().clone() for p in model.backbone.parameters()]
    x = torch.rand(20, 1, 28, 28)
    y = torch.arange(20) % cfg.dataset.n_train_classes
    model.train()
    for _ in range(2):
        loss = model.head.loss(model(x), y, None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.backbone.parameters()))


def test_end_to_end_run_with_the_affine_augmentation(tmp_path, monkeypatch):
    """One short run of the runner on digits with the paper's augmentation writes 2-d embeddings."""
    import vmf_embeddings.datasets.augment as augment
    from vmf_embeddings.main import run

    calls = []
    original = augment.random_affine
    monkeypatch.setattr(augment, "random_affine", lambda x, *a, **k: calls.append(a) or original(x, *a, **k))
    cfg = compose_config(FAST + ["arch=mgp_conv", "dataset.loader.augment=affine", "mode.epochs=1",
                                 "sampler.n_episodes=3"])
    run(cfg, tmp_path / "run")
    assert len(calls) == 3 and calls[0][:2] == ((-40.0, 40.0), (1.3, 1.3))  # every training batch, the recipe's ranges
    test = np.load(tmp_path / "run" / "embeddings" / "test.npz")
    assert test["embeddings"].shape == (len(test["labels"]), 2) and np.isfinite(test["embeddings"]).all()
    assert "accuracy" in json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
