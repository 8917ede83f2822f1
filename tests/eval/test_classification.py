"""Accuracy, ECE (both variants), MCE, NLL, Brier against hand values and independent float64 loops."""

import math

import numpy as np
import pytest
import torch

from vmf_embeddings.eval.classification import (
    accuracy,
    calibration_bins,
    classification_metrics,
    confidence_and_correct,
    ece,
    log_probs_from_logits,
    mc_log_probs,
    mce,
    nll,
    reliability_diagram,
    topk_accuracy,
)

C_D = np.array([0.9, 0.9, 0.9, 0.9, 0.62, 0.62])
A_D = np.array([1, 1, 1, 0, 1, 0])


def loop_ece(conf, correct, n_bins=15):
    """Independent float64 loop with the (lo, hi] rule on exact fractions."""
    total = 0.0
    for m in range(n_bins):
        lo, hi = m / n_bins, (m + 1) / n_bins
        sel = [(c, a) for c, a in zip(conf, correct) if (lo < c <= hi) or (m == 0 and c == 0)]
        if sel:
            acc = sum(a for _, a in sel) / len(sel)
            cf = sum(c for c, _ in sel) / len(sel)
            total += len(sel) / len(conf) * abs(acc - cf)
    return total


def test_ece_hand_computed():
    assert ece(C_D, A_D) == pytest.approx(0.14, abs=1e-12)
    assert mce(C_D, A_D) == pytest.approx(0.15, abs=1e-12)
    assert ece(C_D, A_D, norm="l2") == pytest.approx(0.1407125, abs=1e-7)
    assert ece(C_D, A_D, norm="l2", mode="mass") == pytest.approx(0.4776331, abs=1e-7)
    assert ece(C_D, A_D, norm="l1", mode="mass") == pytest.approx(0.3666667, abs=1e-7)


def test_ece_extremes_and_order_invariance():
    assert ece(np.ones(10), np.zeros(10)) == pytest.approx(1.0)
    c = np.array([0.95] * 20 + [0.55] * 20)
    a = np.array([1] * 19 + [0] + [1] * 11 + [0] * 9)
    assert ece(c, a) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.1, 1, 500)
    conf = conf[np.abs(conf * 15 - np.round(conf * 15)) > 1e-6]  # off bin edges (float32 rounding)
    corr = (rng.uniform(size=len(conf)) < conf).astype(float)
    perm = rng.permutation(len(conf))
    assert ece(conf, corr) == pytest.approx(loop_ece(conf, corr), abs=1e-12)
    assert ece(conf[perm], corr[perm]) == pytest.approx(ece(conf, corr), abs=1e-12)
    assert 0 <= ece(conf, corr) <= mce(conf, corr) <= 1


def test_bins_edges_float64_rule():
    cnt, _, _ = calibration_bins(np.array([0.0, 1 / 15, 1.0, 0.5]), np.ones(4))
    assert cnt[0] == 2 and cnt[14] == 1 and cnt[7] == 1


def test_accuracy_topk_and_ties():
    logits = torch.tensor([[2.0, 2.0, 0.0], [0.0, 1.0, 3.0], [5.0, 0.0, 1.0]])
    y = torch.tensor([0, 1, 2])
    assert accuracy(logits, y) == pytest.approx(1 / 3)  # tie -> lowest index (class 0): correct
    assert topk_accuracy(logits, y, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(logits, y, 2) == 1.0
    assert topk_accuracy(torch.tensor([[1.0, 1.0, 1.0]]), [2], 2) == 0.0  # ties: lower indices first
    assert topk_accuracy(logits, y, 5) == 1.0
    with pytest.raises(ValueError, match="rows"):
        accuracy(logits, y[:2])


def test_mc_probabilities_and_nll():
    logits = torch.tensor([[[3.0, 0.0], [0.0, 1.0]]])  # 1 item, 2 samples, 2 classes
    lp = mc_log_probs(logits)
    np.testing.assert_allclose(lp.exp().numpy(), [[0.6107578, 0.3892422]], atol=1e-7)
    assert nll(lp, [0]) == pytest.approx(0.4930548, abs=1e-7)
    assert nll(lp, [1]) == pytest.approx(0.9435534, abs=1e-7)
    p = torch.tensor([[0.5, 0.5], [0.75, 0.25]]).log()
    assert nll(p, [0, 1]) == pytest.approx(1.0397208, abs=1e-7)


def test_mc_of_identical_draws_is_deterministic_and_underflow_safe():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((50, 7)) * 5
    same = np.repeat(logits[:, None, :], 4, axis=1)
    np.testing.assert_allclose(mc_log_probs(same).numpy(), log_probs_from_logits(logits).numpy(), atol=1e-12)
    huge = torch.tensor([[[0.0, 2000.0]], [[0.0, 2000.0]]]).permute(1, 0, 2)  # p(class 0) = e^-2000
    assert math.isfinite(nll(mc_log_probs(huge), [0]))


def test_metrics_against_float64_reference():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((400, 10)) * 3
    y = rng.integers(0, 10, 400)
    m = classification_metrics(log_probs_from_logits(torch.tensor(logits, dtype=torch.float32)), y)
    z = logits.astype(np.float32).astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert m["accuracy"] == pytest.approx(np.mean(p.argmax(1) == y), abs=1e-12)
    assert m["nll"] == pytest.approx(-np.mean(np.log(p[np.arange(400), y])), abs=1e-9)
    onehot = np.eye(10)[y]
    assert m["brier"] == pytest.approx(np.mean(((p - onehot) ** 2).sum(1)), abs=1e-9)
    conf = p.max(1)
    assert m["ece"] == pytest.approx(loop_ece(conf, (p.argmax(1) == y).astype(float)), abs=1e-9)
    top5 = np.mean([y[i] in np.argsort(-p[i])[:5] for i in range(400)])
    assert m["top5_accuracy"] == pytest.approx(top5)
    uniform = classification_metrics(log_probs_from_logits(torch.zeros(5, 4)), [0, 1, 2, 3, 0])
    assert uniform["nll"] == pytest.approx(math.log(4))
    assert "top5_accuracy" not in uniform  # C <= 5: trivially 1, not reported
    with pytest.raises(ValueError, match="labels must lie"):
        classification_metrics(log_probs_from_logits(torch.zeros(2, 3)), [0, 3])
    with pytest.raises(ValueError, match="log-probabilities"):
        classification_metrics(torch.tensor(logits), y)


def test_reliability_png(tmp_path):
    lp = log_probs_from_logits(np.random.default_rng(3).standard_normal((100, 5)))
    conf, corr = confidence_and_correct(lp, np.zeros(100, int))
    path = reliability_diagram(conf, corr, tmp_path / "rel.png")
    assert path.stat().st_size > 1000
    assert path.read_bytes()[:4] == b"\x89PNG"
