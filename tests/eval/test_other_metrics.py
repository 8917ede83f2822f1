"""Few-shot episodes with CI, regression MAE, hierarchical average cost (hand-computed cases)."""

import numpy as np
import pytest

from vmf_embeddings.eval.fewshot import confidence_interval95, few_shot_accuracy
from vmf_embeddings.eval.hierarchy import hierarchical_metrics, path_to_lca_height
from vmf_embeddings.eval.regression import mae, regression_metrics

D_G = np.array([[0, 2, 4], [2, 0, 4], [4, 4, 0]], float)


def test_ci_hand_computed():
    assert confidence_interval95([0.8, 0.9, 1.0, 0.7]) == pytest.approx(0.1265175, abs=1e-7)
    assert np.isnan(confidence_interval95([0.5]))


def test_average_cost_and_mae_hand_computed():
    m = hierarchical_metrics([0, 1, 2, 2], [0, 0, 1, 2], D_G)
    assert m == pytest.approx({"error_rate": 0.5, "avg_cost": 1.5, "mean_mistake_cost": 3.0})
    h = hierarchical_metrics([0, 1, 2, 2], [0, 0, 1, 2], path_to_lca_height(D_G))
    assert h["avg_cost"] == pytest.approx(0.75) and h["mean_mistake_cost"] == pytest.approx(1.5)
    assert mae([1550, 1700], [1500, 1800]) == pytest.approx(75.0)
    assert regression_metrics(np.array([1.0, 3.0]), np.array([0.0, 0.0]))["rmse"] == pytest.approx(np.sqrt(5))


def test_average_cost_against_float64_loop():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 5, (7, 7))
    d = a + a.T
    np.fill_diagonal(d, 0)
    logits = rng.standard_normal((300, 7))
    y = rng.integers(0, 7, 300)
    m = hierarchical_metrics(logits, y, d)
    pred = logits.argmax(1)
    assert m["avg_cost"] == pytest.approx(sum(d[t, p] for t, p in zip(y, pred)) / 300, abs=1e-12)
    assert m["avg_cost"] == pytest.approx(m["error_rate"] * m["mean_mistake_cost"], abs=1e-12)
    assert hierarchical_metrics(y, y, d)["avg_cost"] == 0.0
    unit = 1 - np.eye(7)
    assert hierarchical_metrics(pred, y, unit)["avg_cost"] == pytest.approx(np.mean(pred != y))


def test_cost_matrix_and_length_errors():
    with pytest.raises(ValueError, match="zero diagonal"):
        hierarchical_metrics([0], [0], np.ones((2, 2)))
    with pytest.raises(ValueError, match="C x C"):
        hierarchical_metrics([0], [0], np.zeros((2, 3)))
    with pytest.raises(ValueError, match="0..2"):
        hierarchical_metrics([3], [0], D_G)
    with pytest.raises(ValueError, match="differ in length"):
        mae([1, 2], [1])


@pytest.fixture(scope="module")
def episodes_data():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((12, 16)) * 3
    y = np.repeat(np.arange(12), 25)
    x = centers[y] + rng.standard_normal((300, 16))
    y[-3:] = 99  # a class too small for the episodes: must never be sampled
    return x.astype(np.float32), y


@pytest.mark.parametrize("geometry", ["euclidean", "cosine", "vmf", "hyperbolic"])
def test_few_shot_episodes(episodes_data, geometry):
    x, y = episodes_data
    c = 0.05 if geometry == "hyperbolic" else None
    r = few_shot_accuracy(x, y, n_way=5, k_shot=3, n_query=5, n_episodes=40, seed=7, geometry=geometry, curvature=c)
    again = few_shot_accuracy(x, y, n_way=5, k_shot=3, n_query=5, n_episodes=40, seed=7, geometry=geometry,
                              curvature=c)
    np.testing.assert_array_equal(r["per_episode"], again["per_episode"])
    assert r["accuracy"] > 0.9
    assert r["ci95"] == pytest.approx(1.96 * np.std(r["per_episode"], ddof=1) / np.sqrt(40))
    assert np.all(np.isin(np.round(r["per_episode"] * 25), np.arange(26)))  # multiples of 1/(N Q)


def test_few_shot_random_is_chance_and_errors(episodes_data):
    x, y = episodes_data
    noise = np.random.default_rng(1).standard_normal(x.shape)
    r = few_shot_accuracy(noise, y, n_way=5, k_shot=1, n_query=5, n_episodes=200, seed=0)
    assert abs(r["accuracy"] - 0.2) < 4 * r["std"] / np.sqrt(200) + 0.02
    with pytest.raises(ValueError, match="only 0 have"):
        few_shot_accuracy(x, y, n_way=5, k_shot=20, n_query=10, n_episodes=1)
