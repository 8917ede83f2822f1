"""Prototypical Networks: hand-computed loss, equivalent forms, episode sampler, Conv-4, and end-to-end runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import FAST, compose_config
from vmf_embeddings.archs.conv4 import Conv4, conv4_dim
from vmf_embeddings.datasets.samplers import FewShotSampler
from vmf_embeddings.eval.fewshot import confidence_interval95, few_shot_accuracy
from vmf_embeddings.methods.protonet import PrototypicalNetwork


def _head(n_way, k_shot, n_query, dim=1, **kw):
    return PrototypicalNetwork(embedding_dim=dim, n_classes=n_way, n_way=n_way, k_shot=k_shot, n_query=n_query, **kw)


def test_hand_computed_two_way_one_shot_loss():
    """Supports at 0 (A) and 2 (B), queries at 0.5 (A) and 2 (B): loss = (log(1+e^-2) + log(1+e^-4)) / 2."""
    head = _head(2, 1, 1)
    batch = torch.tensor([[0.0], [2.0], [0.5], [2.0]], dtype=torch.float64)
    loss = head.loss(batch, torch.tensor([0, 1, 0, 1]))
    expected = 0.5 * (math.log1p(math.exp(-2)) + math.log1p(math.exp(-4)))
    assert float(loss) == pytest.approx(0.0725390, abs=1e-7) and float(loss) == pytest.approx(expected, rel=1e-12)
    logits, targets = head.episode_logits(batch)
    assert (logits.argmax(1) == targets).all()


def test_loss_equals_cross_entropy_on_both_logit_forms():
    g = torch.Generator().manual_seed(0)
    n, k, q, d = 4, 3, 5, 7
    z = torch.randn(n * (k + q), d, generator=g, dtype=torch.float64)
    head = _head(n, k, q, dim=d)
    prototypes = z[: n * k].reshape(n, k, d).mean(1)
    queries, targets = z[n * k:], torch.arange(n).repeat_interleave(q)
    direct = F.cross_entropy(-torch.cdist(queries, prototypes).pow(2), targets)
    linear = F.cross_entropy(2 * queries @ prototypes.t() - prototypes.pow(2).sum(1), targets)  # -|z|^2 cancels
    torch.testing.assert_close(head.loss(z, None), direct, rtol=0, atol=1e-6)
    torch.testing.assert_close(head.loss(z, None), linear, rtol=0, atol=1e-6)


def test_one_shot_prototypes_are_the_supports_and_class_order_does_not_matter():
    g = torch.Generator().manual_seed(1)
    n, q, d = 3, 2, 4
    z = torch.randn(n * (1 + q), d, generator=g, dtype=torch.float64)
    head = _head(n, 1, q, dim=d)
    logits, _ = head.episode_logits(z)
    torch.testing.assert_close(logits, -torch.cdist(z[n:], z[:n]).pow(2))
    perm = torch.tensor([2, 0, 1])  # the same episode with its classes in another order
    support = z[:n][perm]
    query = z[n:].reshape(n, q, d)[perm].reshape(-1, d)
    torch.testing.assert_close(head.loss(torch.cat([support, query]), None), head.loss(z, None))


def test_one_query_accuracy_has_no_broadcast_bug():
    """With Q = 1 the accuracy is the share of queries whose nearest prototype is right (not ~1/N)."""
    x = np.array([[0.0], [10.0], [20.0], [0.2], [10.1], [20.4], [9.0]], dtype=np.float32)
    y = np.array([0, 1, 2, 0, 1, 2, 0])
    r = few_shot_accuracy(x, y, n_way=3, k_shot=1, n_query=1, n_episodes=30, seed=0)
    assert r["accuracy"] > 0.6  # a broadcast (N, 1) == (N,) comparison gives about 1/3
    assert r["ci95"] == pytest.approx(confidence_interval95(r["per_episode"]))


@pytest.mark.parametrize("channels, size, dim, params", [(1, 28, 64, 111_936), (3, 84, 1600, 113_088)])
def test_conv4_dimensions_and_parameter_counts(channels, size, dim, params):
    net = Conv4(conv4_dim(size), in_channels=channels, image_size=size)
    assert net(torch.rand(2, channels, size, size)).shape == (2, dim)
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == params
    cfg = compose_config(["arch=conv4", "method=protonet"])
    assert cfg.arch.params.embedding_dim == 64


def test_fewshot_sampler_episodes():
    labels = torch.arange(12).repeat_interleave(8)  # 12 classes x 8 images
    labels = torch.cat([labels, torch.full((3,), 12)])  # a class too small for 2 + 3: never drawn
    sampler = FewShotSampler(labels, n_way=5, k_shot=2, n_query=3, n_episodes=40, seed=7)
    episodes = list(sampler)
    assert len(episodes) == 40 and sampler.episode_layout == (5, 2, 3)
    for batch in episodes:
        support, query = batch[:10].reshape(5, 2), batch[10:].reshape(5, 3)
        classes = labels[support[:, 0]]
        assert len(set(classes.tolist())) == 5 and 12 not in classes.tolist()
        assert (labels[support] == classes[:, None]).all() and (labels[query] == classes[:, None]).all()
        assert len(set(batch.tolist())) == 25  # distinct images
    again = list(FewShotSampler(labels, n_way=5, k_shot=2, n_query=3, n_episodes=40, seed=7))
    assert all(torch.equal(a, b) for a, b in zip(episodes, again))  # seeded, own generator
    with pytest.raises(ValueError, match="need 13 classes with >= 5 images; the split has 12"):
        FewShotSampler(labels, n_way=13, k_shot=2, n_query=3, n_episodes=1, seed=0)


def test_digits_fewshot_splits_are_class_disjoint():
    from vmf_embeddings.datasets.digits import load_digits_fewshot

    data = load_digits_fewshot()
    original = data.extras["original_labels"]
    assert set(original["train"]) == {0, 1, 2, 3, 4} and set(original["val"]) == set(original["test"]) == {5, 6, 7, 8, 9}
    assert data.open_set and data.n_train_classes == 5 and int(data.test.labels.max()) == 4


def test_protonet_needs_the_fewshot_sampler(tmp_path):
    from vmf_embeddings.errors import ConfigError
    from vmf_embeddings.main import run

    with pytest.raises(ConfigError, match="use sampler=fewshot"):
        run(compose_config(FAST + ["method=protonet", "sampler=episodic", "mode.epochs=1"]), tmp_path / "run")


def test_protonet_five_way_five_shot_on_seen_digits(tmp_path):
    """Trained on digits episodes, 5-way 5-shot test episodes (seen classes) reach >= 95%; closed-set too."""
    from vmf_embeddings.main import run

    cfg = compose_config(FAST + ["method=protonet", "arch=conv4", "mode.epochs=5", "sampler.n_episodes=20",
                                 "sampler.n_query=5", "eval.val_episodes=50", "mode.projector=false",
                                 "eval.few_shot={n_way: 5, k_shot: 5, n_query: 15, n_episodes: 200}"])
    run(cfg, tmp_path / "run")
    test = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert test["fewshot_5way5shot"] >= 0.95 and test["accuracy"] >= 0.9, test
    assert 0 < test["fewshot_5way5shot_ci95"] < 0.02
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert "val/fewshot_5way5shot" in json.loads(lines[0])


def test_killed_fewshot_run_resumes_bit_for_bit(tmp_path, monkeypatch):
    import vmf_embeddings.train as train_module
    from vmf_embeddings import checkpoint
    from vmf_embeddings.main import run

    overrides = FAST + ["method=protonet", "arch=conv4", "dataset=digits_fewshot", "mode.epochs=3",
                        "sampler.n_episodes=4", "sampler.n_query=3", "eval.val_episodes=10", "mode.extract_at_end=false",
                        "mode.evaluate_at_end=false", "eval.few_shot={n_way: 5, k_shot: 1, n_query: 5}"]
    run(compose_config(overrides), tmp_path / "straight")

    def kill_after_first(epoch):
        if epoch == 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_after_epoch", kill_after_first)
    with pytest.raises(KeyboardInterrupt):
        run(compose_config(overrides), tmp_path / "killed")
    monkeypatch.setattr(train_module, "_after_epoch", lambda epoch: None)
    run(compose_config(overrides + ["resume=true"]), tmp_path / "killed")
    a = checkpoint.load(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = checkpoint.load(tmp_path / "killed" / "checkpoints" / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    assert torch.equal(a["sampler"]["generator"], b["sampler"]["generator"])
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=0, msg=key)
