"""The paper's ranking prior L_PI (not the official psmmettes/hpn code path, broken: its GitHub issue #5)."""

from __future__ import annotations

import numpy as np
import pytest

from vmf_embeddings.prototypes import place_prototypes
from vmf_embeddings.prototypes.geometry import normalize_rows
from vmf_embeddings.prototypes.privileged import RankingPrior, load_word_vectors


def _words(k=8, d=5, seed=0):
    return np.random.default_rng(seed).standard_normal((k, d))


def _loop_loss(prior_words, p, n_positives):
    """float64 loop reference: mean over triplets of -log(e^c_ij / (e^c_ij + e^c_ik))."""
    w = normalize_rows(prior_words)
    k = len(w)
    total, count = 0.0, 0
    for i in range(k):
        others = sorted((j for j in range(k) if j != i), key=lambda j: -(w[i] @ w[j]))
        if n_positives is None:
            pairs = [(others[a], others[b]) for a in range(k - 1) for b in range(a + 1, k - 1)]
        else:
            pairs = [(j, kk) for j in others[:n_positives] for kk in others[n_positives:]]
        for j, kk in pairs:
            cij, cik = p[i] @ p[j], p[i] @ p[kk]
            total += -np.log(np.exp(cij) / (np.exp(cij) + np.exp(cik)))
            count += 1
    return total / count


@pytest.mark.parametrize("n_positives", [2, None])
def test_loss_matches_the_paper_formula_and_gradient_is_exact(n_positives):
    words = _words()
    prior = RankingPrior(words, n_positives=n_positives)
    p = normalize_rows(np.random.default_rng(1).standard_normal((8, 4)))
    loss, grad = prior.loss_and_grad(p)
    assert loss == pytest.approx(_loop_loss(words, p, n_positives), rel=1e-10)
    numeric = np.zeros_like(p)
    for index in np.ndindex(p.shape):
        step = np.zeros_like(p)
        step[index] = 1e-6
        numeric[index] = (prior.loss_and_grad(p + step)[0] - prior.loss_and_grad(p - step)[0]) / 2e-6
    assert np.abs(numeric - grad).max() < 1e-7


def test_triplets_use_class_ids_exclude_self_and_keep_the_farthest():
    words = _words(10, 6, 2)
    prior = RankingPrior(words, n_positives=2)
    w = normalize_rows(words)
    sim = w @ w.T
    for i in range(10):
        assert i not in prior.positives[i] and i not in prior.negatives[i]
        expected = np.argsort(-np.where(np.arange(10) == i, -np.inf, sim[i]))[:2]
        assert set(prior.positives[i]) == set(expected)
        farthest = int(np.argmin(np.where(np.arange(10) == i, np.inf, sim[i])))
        assert farthest in prior.negatives[i]  # the code's off-by-one slice dropped it
    assert prior.n_triplets == 10 * 2 * 7


def test_prior_orders_prototypes_like_the_words():
    """With the prior, more word-space triplets are respected by the prototypes, and they stay separated."""
    words = _words(20, 8, 3)
    prior = RankingPrior(words, n_positives=2)

    def satisfied(p):
        cos = p @ p.T
        rows = np.arange(20)[:, None, None]
        return float((cos[rows, prior.positives[:, :, None]] > cos[rows, prior.negatives[:, None, :]]).mean())

    plain = place_prototypes(20, 4, method="annealed").prototypes
    guided = place_prototypes(20, 4, method="annealed", prior=prior)
    assert satisfied(guided.prototypes) > satisfied(plain) + 0.1
    assert guided.stats["max_cosine"] < 0.99
    paper = place_prototypes(20, 4, method="paper", steps=500, prior=prior)
    assert satisfied(paper.prototypes) > satisfied(plain)


def test_closed_forms_refuse_a_prior():
    with pytest.raises(ValueError, match="word vectors"):
        place_prototypes(4, 3, method="simplex", prior=RankingPrior(_words(4, 3), n_positives=1))


def test_word_vector_files(tmp_path):
    words = _words(4, 3)
    np.save(tmp_path / "wtv.npy", words)
    assert np.allclose(load_word_vectors(str(tmp_path / "wtv.npy"), 4), words)
    names = ["cat", "dog", "car", "bus"]
    text = "\n".join(f"{n} " + " ".join(map(str, row)) for n, row in zip(names, words))
    (tmp_path / "wtv.txt").write_text(text)
    reordered = load_word_vectors(str(tmp_path / "wtv.txt"), class_names=["bus", "car", "dog", "cat"])
    assert np.allclose(reordered, words[::-1])
    with pytest.raises(ValueError, match="one per class"):
        load_word_vectors(str(tmp_path / "wtv.npy"), 5)
    with pytest.raises(FileNotFoundError):
        load_word_vectors(str(tmp_path / "missing.npy"))
