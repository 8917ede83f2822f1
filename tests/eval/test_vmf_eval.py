"""vMF Monte-Carlo classification and sampled retrieval (the kappa -> infinity limit, seeded draws)."""

import numpy as np
import pytest
import torch

from vmf_embeddings.eval.retrieval import retrieval_metrics
from vmf_embeddings.eval.vmf_classification import vmf_mc_log_probs, vmf_sampled_retrieval


def _standin(mu, kappa, n_samples, generator=None):
    """Large-kappa approximation (tangent Gaussian, std 1/sqrt(kappa)), used only if the real sampler is absent."""
    noise = torch.randn((n_samples,) + tuple(mu.shape), generator=generator, dtype=mu.dtype, device=mu.device)
    x = mu[None] + noise / kappa.clamp_min(1e-6).sqrt()[None, :, None]
    return x / x.norm(dim=-1, keepdim=True)


@pytest.fixture
def sampler():
    try:
        from vmf_embeddings.methods.vmf_distribution import sample_vmf
    except ImportError:
        return _standin
    return sample_vmf


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((60, 8)).astype(np.float32)
    w = rng.standard_normal((5, 8)).astype(np.float32)
    y = rng.integers(0, 5, 60)
    return z, w, y


def cosine_softmax(z, w, temperature):
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    wn = w / np.linalg.norm(w, axis=1, keepdims=True)
    logits = zn.astype(np.float64) @ wn.T.astype(np.float64) / temperature
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


def test_huge_kappa_equals_cosine_softmax(problem, sampler):
    z, w, _ = problem
    big = 1e7
    zk = z / np.linalg.norm(z, axis=1, keepdims=True) * big
    wk = w / np.linalg.norm(w, axis=1, keepdims=True) * big
    lp = vmf_mc_log_probs(zk, wk, temperature=0.25, n_samples=4, seed=0, sampler=sampler)
    ref = cosine_softmax(z, w, 0.25)
    np.testing.assert_allclose(lp.exp().numpy(), ref, atol=2e-3)
    np.testing.assert_array_equal(lp.argmax(1).numpy(), ref.argmax(1))


def test_seeded_and_normalised(problem, sampler):
    z, w, _ = problem
    z3 = z * 0.5  # moderate kappa: draws really differ
    a = vmf_mc_log_probs(z3, w * 3, temperature=0.5, n_samples=6, seed=11, sampler=sampler)
    b = vmf_mc_log_probs(z3, w * 3, temperature=0.5, n_samples=6, seed=11, sampler=sampler)
    c = vmf_mc_log_probs(z3, w * 3, temperature=0.5, n_samples=6, seed=12, sampler=sampler)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    torch.testing.assert_close(a.exp().sum(1), torch.ones(60, dtype=torch.float64))
    small = vmf_mc_log_probs(z3, w * 3, temperature=0.5, n_samples=6, seed=11, sampler=sampler, chunk_bytes=1)
    assert small.shape == (60, 5)
    with pytest.raises(ValueError, match="dim"):
        vmf_mc_log_probs(z, w[:, :4], sampler=sampler)


def test_identical_draws_give_deterministic_cosine_retrieval(problem):
    z, _, _ = problem
    rng = np.random.default_rng(1)
    y = rng.integers(0, 6, 60)

    def mean_only(mu, kappa, n_samples, generator=None):
        return mu[None].expand(n_samples, -1, -1).clone()

    mc = vmf_sampled_retrieval(z * 40, y, n_samples=10, seed=0, sampler=mean_only)
    det = retrieval_metrics(z, y, "cosine", clustering=False)
    assert mc["mc_recall@1"] == det["precision@1"]
    assert mc["mc_map@r"] == pytest.approx(det["map@r"], abs=1e-12)
    assert mc["mc_r_precision"] == pytest.approx(det["r_precision"], abs=1e-12)


def test_majority_vote_split_counts_as_miss():
    mu = np.array([[1, 0], [1, 0.1], [-1, 0], [-1, 0.1]], np.float32)
    y = np.array([0, 0, 1, 1])
    good = torch.tensor(mu)
    bad = torch.tensor(mu[[0, 2, 1, 3]])  # crossed: every nearest neighbour has the other label

    def scripted(order):
        it = iter(order)

        def sample(mu, kappa, n_samples, generator=None):
            d = next(it)
            return (d / d.norm(dim=1, keepdim=True))[None]

        return sample

    assert vmf_sampled_retrieval(mu, y, n_samples=2, sampler=scripted([good, bad]))["mc_recall@1"] == 0.0
    assert vmf_sampled_retrieval(mu, y, n_samples=3, sampler=scripted([good, bad, good]))["mc_recall@1"] == 1.0
    m = vmf_sampled_retrieval(mu, y, n_samples=2, sampler=scripted([good, bad]))
    assert m["mc_precision@1"] == pytest.approx(0.5)


def test_real_sampler_runs_and_is_reproducible(problem, sampler):
    z, _, y = problem
    a = vmf_sampled_retrieval(z * 20, y, n_samples=3, seed=5, sampler=sampler)
    b = vmf_sampled_retrieval(z * 20, y, n_samples=3, seed=5, sampler=sampler)
    assert a == b
    assert 0 <= a["mc_recall@1"] <= 1 and a["mc_samples"] == 3
