"""Magnet loss and RepMet: hand-computed cases, invariances, the neighbourhood sampler, and digits runs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.conftest import FAST, compose_config
from vmf_embeddings.datasets.samplers import MagnetSampler
from vmf_embeddings.methods.clustering import per_class_kmeans
from vmf_embeddings.methods.magnet import MagnetLoss, magnet_losses
from vmf_embeddings.methods.repmet import RepMet

# ------------------------------------------------------------------ magnet


def test_magnet_variance_uses_md_minus_one_and_loss_is_the_mean():
    r = torch.tensor([[-2.0], [0.0], [0.0], [2.0]], dtype=torch.float64)
    losses, variance = magnet_losses(r, torch.tensor([0, 0, 1, 1]), 2, 2, alpha=1.0)
    assert float(variance) == pytest.approx(4 / 3)  # (1 + 1 + 1 + 1) / (MD - 1)
    torch.testing.assert_close(losses, torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=torch.float64))
    assert float(losses.mean()) == pytest.approx(0.5) and (losses >= 0).all()


def test_magnet_paper_form_is_scale_invariant_and_sigma4_is_not():
    labels = torch.tensor([0, 0, 1, 1])
    r = torch.tensor([[-4.0], [0.0], [0.0], [4.0]], dtype=torch.float64)
    paper, _ = magnet_losses(r, labels, 2, 2, 1.0, "paper")
    sigma4, _ = magnet_losses(r, labels, 2, 2, 1.0, "sigma4")
    torch.testing.assert_close(paper, torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(sigma4, torch.tensor([0.4375, 1.0, 1.0, 0.4375], dtype=torch.float64))
    assert float(sigma4.mean()) == pytest.approx(0.71875)
    shifted, _ = magnet_losses(r + 3.0, labels, 2, 2, 1.0, "sigma4")
    torch.testing.assert_close(shifted, sigma4)  # both forms are translation invariant


def test_magnet_zero_loss_condition():
    """l_n = 0 when every impostor is at least 2 sigma^2 (alpha + log #impostors) further than the own mean."""
    g = torch.Generator().manual_seed(0)
    r = torch.cat([torch.randn(3, 2, generator=g) * 0.1 + torch.tensor([10.0 * m, 0.0]) for m in range(3)])
    losses, _ = magnet_losses(r.double(), torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2]), 3, 3, alpha=1.0)
    assert torch.equal(losses, torch.zeros_like(losses))


def test_magnet_prediction_sums_to_one_and_l1_is_nearest_cluster():
    head = MagnetLoss(embedding_dim=2, n_classes=3, k_clusters=2, m_clusters=2, d_per_cluster=2, eval_neighbours=1)
    head.centroids.copy_(torch.tensor([[0.0, 0], [1, 0], [5, 5], [6, 5], [-5, 5], [-6, 5]]))
    head.variance_sum.fill_(2.0)
    head.variance_count.fill_(2.0)  # running mean 1.0, no spurious 0 in it
    x = torch.tensor([[0.9, 0.1], [5.8, 5.1], [-5.2, 4.9]])
    lp = head.log_probs(x)
    torch.testing.assert_close(lp.exp().sum(1), torch.ones(3), rtol=0, atol=1e-6)
    assert lp.argmax(1).tolist() == [0, 1, 2] and float(lp.exp().max()) > 0.99  # L = 1: one-hot (up to the floor)
    head.eval_neighbours = 100  # L >= #clusters: all of them
    assert head.log_probs(x).argmax(1).tolist() == [0, 1, 2]


class _Index:
    def __init__(self, assignments, centroids, cluster_class):
        self.assignments, self.centroids, self.cluster_class = assignments, centroids, cluster_class
        self.example_losses = torch.zeros(assignments.shape[0])


def test_magnet_sampler_blocks():
    labels = torch.arange(4).repeat_interleave(10)
    features = torch.randn(40, 2, generator=torch.Generator().manual_seed(0)) + labels[:, None].float() * 4
    centres, assignment = per_class_kmeans(features, labels, 4, 1)
    for c in range(4):  # K = 1: each centroid is the class mean
        torch.testing.assert_close(centres[c], features[labels == c].mean(0))
    index = _Index(assignment, centres, torch.arange(4))
    sampler = MagnetSampler(labels, m_clusters=3, d_per_cluster=4, n_episodes=20, seed=1)
    sampler.attach(index)
    for batch in sampler:
        blocks = batch.reshape(3, 4)
        owners = assignment[blocks]
        assert (owners == owners[:, :1]).all() and len(set(owners[:, 0].tolist())) == 3  # one cluster per block
        assert len(set(batch.tolist())) == 12  # no duplicates
        seed_cluster = int(owners[0, 0])
        others = [c for c in range(4) if c != seed_cluster]
        nearest = sorted(others, key=lambda c: float((centres[c] - centres[seed_cluster]).pow(2).sum()))[:2]
        assert sorted(owners[1:, 0].tolist()) == sorted(nearest)  # the M-1 nearest impostor clusters


def test_magnet_trains_on_digits(tmp_path):
    from vmf_embeddings.main import run

    run(compose_config(FAST + ["method=magnet", "mode.projector=false"]), tmp_path / "run")
    test = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert test["accuracy"] >= 0.9 and math.isfinite(test["nll"]), test
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["train/loss"]) for r in rows)


# ------------------------------------------------------------------ repmet


def _repmet(reps, sigma=0.5, alpha=1.0, k=1):
    head = RepMet(embedding_dim=reps.shape[1], n_classes=reps.shape[0] // k, k_reps=k, sigma=sigma, alpha=alpha,
                  init="random")
    with torch.no_grad():
        head.reps.copy_(reps)
    return head


def test_repmet_margin_worked_example():
    head = _repmet(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    e = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert float(head.loss(e[:1], torch.tensor([1])).detach()) == 0.0
    assert float(head.loss(e[:1], torch.tensor([0])).detach()) == pytest.approx(3.0)
    scores = head.class_scores(e[:1])
    torch.testing.assert_close(scores, torch.tensor([[math.exp(-4), 1.0]]))


def test_repmet_bounds_and_posteriors():
    g = torch.Generator().manual_seed(0)
    head = _repmet(torch.nn.functional.normalize(torch.randn(6, 4, generator=g), dim=-1), k=2)
    x = torch.randn(5, 4, generator=g)
    scores = head.class_scores(x)
    assert ((scores > math.exp(-8) - 1e-9) & (scores <= 1)).all()
    background = head.export_batch(x)["background_score"]
    torch.testing.assert_close(background + scores.max(1).values, torch.ones(5))
    torch.testing.assert_close(head.log_probs(x).exp().sum(1), torch.ones(5), rtol=0, atol=1e-6)
    # the max-form class scores need not sum to 1: two classes whose reps coincide with E both score 1
    both = _repmet(torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    assert float(both.class_scores(torch.tensor([[1.0, 0.0]])).sum().detach()) == pytest.approx(2.0)


def test_repmet_margin_is_flat_beyond_alpha():
    head = _repmet(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), alpha=1.0)
    e = torch.tensor([[1.0, 0.0]], requires_grad=True)
    loss = head.loss(e, torch.tensor([0]))  # min wrong - min correct = 4 >= alpha
    loss.backward()
    assert float(loss.detach()) == 0.0 and float(e.grad.abs().sum()) == 0.0 and float(head.reps.grad.abs().sum()) == 0.0


def test_repmet_one_rep_posterior_argmax_is_nearest_rep():
    g = torch.Generator().manual_seed(3)
    head = _repmet(torch.nn.functional.normalize(torch.randn(5, 3, generator=g), dim=-1))
    x = torch.randn(20, 3, generator=g)
    nearest = head.distances(x).reshape(20, 5).argmin(1)
    assert torch.equal(head.log_probs(x).argmax(1), nearest)


def test_repmet_kmeans_initialisation():
    from vmf_embeddings.embedding import EmbeddedSplit

    class _Context:
        def embed_train(self):
            return EmbeddedSplit(features, labels)

    labels = torch.arange(3).repeat_interleave(6)
    features = torch.randn(18, 4, generator=torch.Generator().manual_seed(0)) + labels[:, None].float()
    head = RepMet(embedding_dim=4, n_classes=3, k_reps=1)
    head.on_train_start(_Context(), resumed=False)
    e = head.embedding(features)
    for c in range(3):  # K = 1: each representative is the class mean of the normalised embeddings
        torch.testing.assert_close(head.reps[c].detach(), e[labels == c].mean(0), rtol=0, atol=1e-6)


def test_repmet_trains_on_digits(tmp_path):
    from vmf_embeddings.main import run

    run(compose_config(FAST + ["method=repmet", "mode.projector=false"]), tmp_path / "run")
    test = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert test["accuracy"] >= 0.9, test
    with __import__("numpy").load(tmp_path / "run" / "embeddings" / "test.npz") as f:
        assert ((f["background_score"] >= 0) & (f["background_score"] < 1)).all()


def test_sampled_batch_accuracy_estimates_plain_accuracy():
    import numpy as np

    from vmf_embeddings.eval.run_eval import sampled_batch_accuracy

    labels = np.repeat(np.arange(4), 25)
    correct = labels < 2  # classes 0 and 1 right, 2 and 3 wrong: plain accuracy 0.5
    out = sampled_batch_accuracy(correct, labels, n_classes=4, n_samples=4, n_batches=50)
    assert out == {"sampled_batch_accuracy": 0.5}  # every batch holds all four classes equally
    estimate = sampled_batch_accuracy(correct, labels, n_classes=2, n_samples=4, n_batches=2000)["sampled_batch_accuracy"]
    assert abs(estimate - 0.5) < 0.03


def test_repmet_layout_conversion_and_head_size():
    from vmf_embeddings.methods.repmet import from_official_layout, to_official_layout

    reps = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(6, 4)  # C=2 classes x K=3 modes, e=4
    official = to_official_layout(reps, 2, 3)
    assert official.shape == (4, 3, 2) and torch.equal(official[:, 2, 1], reps[1 * 3 + 2])
    assert torch.equal(from_official_layout(official), reps)
    # the seed's head on frozen ResNet-18 features: Linear(512 -> 2048) + ReLU + Linear(2048 -> 1024)
    head = RepMet(embedding_dim=512, n_classes=102, k_reps=3, hidden=[2048], rep_dim=1024)
    assert sum(p.numel() for p in head.embed.parameters()) == 3_148_800
    assert head.reps.shape == (102 * 3, 1024)
