"""Learnt / metric-guided prototypes and DeepNCM: distortion and rank oracles, prototype logits, running means."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tests.conftest import FAST, compose_config
from vmf_embeddings.errors import ConfigError
from vmf_embeddings.methods.prototypes import (
    DeepNCM,
    LearntPrototypes,
    distortion_loss,
    pseudo_huber,
    rank_loss,
    scale_free_distortion,
)


def _points(c=5, d=3, seed=0):
    return torch.randn(c, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _cost_of(x):
    return torch.cdist(x, x)


def test_distortion_of_an_isometry_up_to_scale():
    x = _points()
    cost = _cost_of(x)
    for c in (0.3, 1.0, 7.0):
        assert float(distortion_loss(c * x, cost)) == pytest.approx(0.0, abs=1e-20)
        assert float(scale_free_distortion(c * x, cost)) == pytest.approx(0.0, abs=1e-12)
        assert float(distortion_loss(c * x, cost, scale_free=False)) == pytest.approx((c - 1) ** 2)


def test_distortion_is_scale_invariant_and_its_scale_is_the_least_squares_one():
    x, y = _points(seed=1), _points(seed=2)
    cost = _cost_of(y)
    for c in (0.5, 3.0):
        assert float(distortion_loss(c * x, cost)) == pytest.approx(float(distortion_loss(x, cost)))
        assert float(scale_free_distortion(c * x, cost)) == pytest.approx(float(scale_free_distortion(x, cost)))
    off = ~torch.eye(5, dtype=torch.bool)
    a = (_cost_of(x)[off] / cost[off]).numpy()
    grid = np.linspace(0.01, 5, 20001)
    brute_l2 = min(np.mean((s * a - 1) ** 2) for s in grid)
    brute_l1 = min(np.mean(np.abs(s * a - 1)) for s in grid)
    assert float(distortion_loss(x, cost)) == pytest.approx(brute_l2, rel=1e-4)
    assert float(scale_free_distortion(x, cost)) == pytest.approx(brute_l1, rel=1e-3)


def test_rank_loss_is_near_zero_for_a_well_ordered_embedding_and_positive_otherwise():
    cost = torch.tensor([[0, 1, 4], [1, 0, 4], [4, 4, 0.0]], dtype=torch.float64)
    ordered = torch.tensor([[0.0, 0], [1, 0], [100, 0]], dtype=torch.float64)  # gaps match the cost order
    g = torch.Generator().manual_seed(0)
    assert float(rank_loss(ordered, cost, 200, g)) < 1e-3 + 2 * math.log(2) / 3
    reversed_ = torch.tensor([[0.0, 0], [100, 0], [1, 0]], dtype=torch.float64)
    assert float(rank_loss(reversed_, cost, 200, g)) > 10


def test_prototype_logits():
    head = LearntPrototypes(embedding_dim=2, n_classes=3)
    with torch.no_grad():
        head.prototypes.copy_(torch.tensor([[0.0, 0], [3, 0], [0, 4]]))
    x = torch.tensor([[0.0, 0], [2.9, 0.1], [0.2, 3.0]], requires_grad=True)
    logits = head.logits(x)
    assert (logits <= 0).all() and float(logits[0, 0].detach()) == 0.0
    assert logits.argmax(1).tolist() == [0, 1, 2]
    logits.sum().backward()
    assert torch.isfinite(x.grad).all()  # the zero distance has a finite gradient


def test_pseudo_huber_limits():
    d = torch.tensor([0.0, 1e-3, 1e3], dtype=torch.float64)
    h = pseudo_huber(d, 2.0)
    assert float(h[0]) == 0.0 and float(h[1]) == pytest.approx(1e-6 / 4, rel=1e-3)
    assert float(h[2]) == pytest.approx(1e3 - 2.0, rel=1e-3)


def test_deepncm_running_means():
    head = DeepNCM(embedding_dim=2, n_classes=3)
    head.train()
    b1 = torch.tensor([[1.0, 0], [3, 0], [0, 2]])
    head.loss(b1, torch.tensor([0, 0, 1]))
    torch.testing.assert_close(head.means, torch.tensor([[2.0, 0], [0, 2], [0, 0]]))  # class 2 untouched
    b2 = torch.tensor([[6.0, 0], [0, 0]])
    head.loss(b2, torch.tensor([0, 2]))
    torch.testing.assert_close(head.means[0], torch.tensor([4.0, 0]))  # (m1 + m2) / 2 whatever the counts
    assert head.counts.tolist() == [2.0, 1.0, 1.0]
    head.eval()
    before = head.means.clone()
    x = torch.tensor([[1.0, 1.0]], requires_grad=True)
    logits = head.logits(x)
    torch.testing.assert_close(logits, -(x[:, None] - before[None]).pow(2).sum(-1))
    assert torch.equal(head.means, before) and not head.means.requires_grad
    assert set(head.state_dict()) == {"means", "counts"}  # the counters are checkpointed


@pytest.mark.parametrize("method, extra", [("learnt_prototypes", []), ("deepncm", []),
                                           ("guided_prototypes", ["cost=tree"]),
                                           ("guided_prototypes", ["cost=tree", "method.params.regularizer=rank"])])
def test_each_method_trains_on_digits(tmp_path, method, extra):
    from vmf_embeddings.main import run

    run(compose_config(FAST + [f"method={method}", "mode.projector=false", *extra]), tmp_path / "run")
    test = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert test["accuracy"] >= 0.9, test
    if extra:
        assert "avg_cost" in test


def test_guided_prototypes_need_a_cost_matrix(tmp_path):
    from vmf_embeddings.main import run

    with pytest.raises(ConfigError, match="needs a class cost matrix: add cost=tree"):
        run(compose_config(FAST + ["method=guided_prototypes", "mode.epochs=1"]), tmp_path / "run")


def test_deepncm_resumes_bit_for_bit(tmp_path, monkeypatch):
    import vmf_embeddings.train as train_module
    from vmf_embeddings import checkpoint
    from vmf_embeddings.main import run

    overrides = FAST + ["method=deepncm", "mode.epochs=3", "sampler.n_episodes=5", "mode.extract_at_end=false",
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
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)
    assert float(a["head.counts"].sum()) > 0


def test_soft_targets():
    from vmf_embeddings.costs import tree_cost
    from vmf_embeddings.methods.prototypes import soft_targets

    cost = torch.as_tensor(tree_cost(10, [[[1, 7], [4]], [[0, 6, 9], [3, 8]], [[2, 5]]]))
    labels = torch.arange(10)
    target = soft_targets(cost, labels, beta=5.0)
    torch.testing.assert_close(target.sum(1), torch.ones(10, dtype=target.dtype))
    assert torch.equal(target.argmax(1), labels)
    torch.testing.assert_close(soft_targets(cost, labels, 0.0), torch.full((10, 10), 0.1, dtype=target.dtype))
    torch.testing.assert_close(soft_targets(3 * cost, labels, 5.0), target)  # max-normalised
    assert float(soft_targets(cost, labels, 200.0).diagonal().min()) > 0.99  # -> one-hot, i.e. cross-entropy


def test_soft_labels_train_and_prototype_distortion_is_reported(tmp_path):
    from vmf_embeddings.main import run

    run(compose_config(FAST + ["method=soft_labels", "cost=tree", "mode.projector=false"]), tmp_path / "soft")
    test = json.loads((tmp_path / "soft" / "metrics.json").read_text())["test"]
    assert test["accuracy"] >= 0.9 and "avg_cost" in test, test
    run(compose_config(FAST + ["method=guided_prototypes", "cost=tree", "mode.epochs=2", "sampler.n_episodes=5",
                               "mode.projector=false"]), tmp_path / "guided")
    test = json.loads((tmp_path / "guided" / "metrics.json").read_text())["test"]
    assert 0 <= test["prototype_distortion"] < 1
