"""Retrieval metrics against pytorch-metric-learning's AccuracyCalculator (to 1e-6) and hand-computed cases."""

import faiss
import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import FaissKNN

from vmf_embeddings.eval.geometry import poincare_distance, to_ball
from vmf_embeddings.eval.retrieval import DEFAULT_KS, metrics_from_neighbours, recall_at_1, retrieval_metrics

CPU = torch.device("cpu")
KNN_METRICS = ("precision_at_1", "r_precision", "mean_average_precision_at_r")
OURS = {"precision_at_1": "precision@1", "r_precision": "r_precision", "mean_average_precision_at_r": "map@r"}


@pytest.fixture(scope="module")
def tie_free():
    """2,000 x 32 Gaussian float32, 50 classes plus 3 singletons (PML drops those as queries)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 32)).astype(np.float32)
    y = rng.integers(0, 50, 2000)
    y[:3] = [100, 101, 102]
    return x, y


def pml(x, y, knn_func=None, include=KNN_METRICS):
    kw = {} if knn_func is None else {"knn_func": knn_func}
    return AccuracyCalculator(include=include, k="max_bin_count", device=CPU, **kw).get_accuracy(x, y)


def paper_recall(idx, y, ks):
    """PML-style neighbours -> hit rate over non-lone queries."""
    keep = np.bincount(y)[y] > 1
    return {K: (y[idx[:, :K]] == y[:, None]).any(1)[keep].mean() for K in ks}


@pytest.mark.parametrize("backend", ["auto", "faiss", "blas", "torch"])
def test_cosine_matches_pml(tie_free, backend):
    x, y = tie_free
    xn = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    ref = pml(xn, y, FaissKNN(index_init_fn=faiss.IndexFlatIP))
    ours = retrieval_metrics(x, y, "cosine", ks=(1, 2, 4, 8, 500), clustering=False, backend=backend, device="cpu")
    for k, v in ref.items():
        assert abs(ours[OURS[k]] - v) <= 1e-6, (k, ours[OURS[k]], v)
    assert ours["recall@1"] == ours["precision@1"]
    assert ours["n_lone"] == 3 and ours["n_queries"] == 1997
    _, idx = FaissKNN(index_init_fn=faiss.IndexFlatIP)(torch.from_numpy(xn), 500, torch.from_numpy(xn), True)
    hit = paper_recall(idx.numpy(), np.unique(y, return_inverse=True)[1], (1, 2, 4, 8, 500))
    for K, v in hit.items():
        assert abs(ours[f"recall@{K}"] - v) <= 1e-6


@pytest.mark.parametrize("backend", ["auto", "blas", "torch"])
def test_euclidean_matches_pml(tie_free, backend):
    x, y = tie_free
    x = x * 3 + 1  # raw, non-normalised embeddings
    ref = pml(x, y)  # default FaissKNN = IndexFlatL2 on raw embeddings
    ours = retrieval_metrics(x, y, "euclidean", ks=(1, 4), clustering=False, backend=backend, device="cpu")
    for k, v in ref.items():
        assert abs(ours[OURS[k]] - v) <= 1e-6, (k, ours[OURS[k]], v)


def test_hyperbolic_matches_pml_with_mobius_distance(tie_free):
    """PML's metric code fed float64 Mobius-form Poincare neighbours vs our one-matmul ranking."""
    x, y = tie_free
    x, y = x[:800] * 1.5, y[:800]
    c = 0.2

    def poincare_knn(query, k, reference, ref_includes_query):
        b = to_ball(query.numpy(), c)
        d = poincare_distance(b, b, c)
        np.fill_diagonal(d, np.inf)
        idx = np.argsort(d, axis=1, kind="stable")[:, :k]
        return torch.from_numpy(np.take_along_axis(d, idx, 1)), torch.from_numpy(idx)

    ref = pml(x, y, poincare_knn)
    ours = retrieval_metrics(x, y, "hyperbolic", curvature=c, clustering=False)
    for k, v in ref.items():
        assert abs(ours[OURS[k]] - v) <= 1e-6, (k, ours[OURS[k]], v)


def test_vmf_geometry_is_cosine_on_directions(tie_free):
    x, y = tie_free
    kappa = np.random.default_rng(3).uniform(1, 500, len(x)).astype(np.float32)
    z = x / np.linalg.norm(x, axis=1, keepdims=True) * kappa[:, None]
    a = retrieval_metrics(z, y, "vmf", clustering=False)
    b = retrieval_metrics(x, y, "cosine", clustering=False)
    for k in ("precision@1", "r_precision", "map@r", "recall@8"):
        assert abs(a[k] - b[k]) <= 1e-6


def test_nmi_ami_match_pml(tie_free):
    x, y = tie_free
    x = x[:1500]
    y = y[:1500] % 10
    ref = pml(x, y, include=("NMI", "AMI"))
    ours = retrieval_metrics(x, y, "euclidean", clustering=True)
    assert abs(ours["nmi"] - ref["NMI"]) <= 1e-6
    assert abs(ours["ami"] - ref["AMI"]) <= 1e-6


# --- hand-computed cases: A = 1-D L2 retrieval, B = an exact tie ----------------------------

X_A = np.array([0, 1, 2.5, 4, 10, 11.5, 30], np.float32)[:, None]
Y_A = np.array([0, 0, 1, 0, 1, 1, 2])


@pytest.mark.parametrize("backend", ["faiss", "blas", "torch"])
def test_case_a_one_dimensional(backend):
    m = retrieval_metrics(X_A, Y_A, "euclidean", ks=(1, 2, 4), clustering=False, backend=backend, device="cpu")
    assert m["precision@1"] == pytest.approx(2 / 3, abs=1e-12)
    assert m["r_precision"] == pytest.approx(5 / 12, abs=1e-12)
    assert m["map@r"] == pytest.approx(0.375, abs=1e-12)
    assert m["n_lone"] == 1
    # lone query 6 is dropped (PML rule), so recall@K is over the other 6 (paper-style 4/7, 5/7, 6/7
    # count it as a miss): q2 -> 1, 3 (tie, lower index first), 0, 4 hits at K=4; q3 -> 2, 1 at K=2.
    assert m["recall@1"] == pytest.approx(4 / 6)
    assert m["recall@2"] == pytest.approx(5 / 6)
    assert m["recall@4"] == pytest.approx(1.0)


def test_case_a_invariances():
    base = retrieval_metrics(X_A, Y_A, "euclidean", ks=(1, 2), clustering=False)
    moved = retrieval_metrics(3 * X_A + 7, Y_A + 40, "euclidean", ks=(1, 2), clustering=False)
    perm = np.array([3, 6, 0, 5, 1, 4, 2])
    permuted = retrieval_metrics(X_A[perm], Y_A[perm], "euclidean", ks=(1, 2), clustering=False)
    for k in ("precision@1", "r_precision", "map@r", "recall@1", "recall@2"):
        assert moved[k] == pytest.approx(base[k], abs=1e-12)
        assert permuted[k] == pytest.approx(base[k], abs=1e-12)


def test_case_a_pml_agrees():
    ref = pml(X_A, Y_A)
    ours = retrieval_metrics(X_A, Y_A, "euclidean", clustering=False)
    for k, v in ref.items():
        assert ours[OURS[k]] == pytest.approx(v, abs=1e-7)


def test_case_b_tie_rule():
    a = 0.7
    x = np.array([[1, 0], [np.cos(a), np.sin(a)], [np.cos(a), -np.sin(a)]], np.float32)
    y = np.array([0, 1, 0])
    m = retrieval_metrics(x, y, "cosine", ks=(1,), clustering=False)
    assert m["precision@1"] == 0.5  # q0's tied neighbours: lower index (q1, wrong label) first
    assert m["n_lone"] == 1


def test_metrics_from_neighbours_hand_rows():
    # R_i = 2 for every query; neighbour labels chosen by hand
    y = np.array([0, 0, 0, 1, 1, 1])
    L = np.array([[0, 1], [1, 0], [1, 1], [1, 0], [0, 0], [1, 1]])
    m = metrics_from_neighbours(L, y)
    assert m["precision@1"] == pytest.approx(3 / 6)
    assert m["r_precision"] == pytest.approx((0.5 + 0.5 + 0 + 0.5 + 0 + 1) / 6)
    assert m["map@r"] == pytest.approx((0.5 + 0.25 + 0 + 0.5 + 0 + 1) / 6)


def test_properties_separated_and_random():
    rng = np.random.default_rng(5)
    centers = rng.standard_normal((20, 8)) * 100
    y = np.repeat(np.arange(20), 15)
    x = (centers[y] + rng.standard_normal((300, 8))).astype(np.float32)
    m = retrieval_metrics(x, y, "euclidean", ks=(1, 2, 4, 8, 100), clustering=True)
    for k in ("precision@1", "r_precision", "map@r", "recall@1", "recall@8", "recall@100"):
        assert m[k] == pytest.approx(1.0)
    assert m["nmi"] > 0.9  # k-means (random init, one run) may still merge two clusters
    noise = rng.standard_normal((300, 8)).astype(np.float32)
    m = retrieval_metrics(noise, y, "cosine", ks=(1, 2, 4, 8, 100), clustering=False)
    assert m["map@r"] <= m["r_precision"]
    r = [m[f"recall@{K}"] for K in (1, 2, 4, 8, 100)]
    assert r == sorted(r)


def test_singleton_far_away_changes_nothing_but_counts():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((200, 4)).astype(np.float32)
    y = rng.integers(0, 5, 200)
    a = retrieval_metrics(x, y, "euclidean", clustering=False)
    b = retrieval_metrics(np.vstack([x, np.full((1, 4), 1e3, np.float32)]), np.append(y, 99), "euclidean",
                          clustering=False)
    for k in ("precision@1", "r_precision", "map@r", "recall@8"):
        assert a[k] == b[k]
    assert b["n_lone"] == 1


def test_all_singletons_give_nan():
    m = retrieval_metrics(np.eye(4, dtype=np.float32), np.arange(4), "cosine", clustering=False)
    assert np.isnan(m["precision@1"]) and m["n_queries"] == 0


def test_recall_at_1_entry_point(tie_free):
    x, y = tie_free
    full = retrieval_metrics(x, y, "cosine", clustering=False)
    r1 = recall_at_1(torch.from_numpy(x), torch.from_numpy(y), "cosine")
    assert r1 == full["precision@1"]
    assert recall_at_1(torch.from_numpy(x).to(torch.bfloat16), torch.from_numpy(y), "euclidean") > 0
    with pytest.raises(ValueError, match="curvature"):
        recall_at_1(torch.from_numpy(x), torch.from_numpy(y), "hyperbolic")


def test_input_errors(tie_free):
    x, y = tie_free
    with pytest.raises(ValueError, match="differ in length"):
        retrieval_metrics(x, y[:-1], "cosine")
    bad = x.copy()
    bad[7, 3] = np.nan
    with pytest.raises(ValueError, match="row 7"):
        retrieval_metrics(bad, y, "cosine")
    with pytest.raises(ValueError, match="unknown geometry"):
        retrieval_metrics(x, y, "manhattan")


def test_recall_ks_come_from_the_dataset_config():
    from tests.conftest import compose_config

    assert list(compose_config(["dataset=sop"]).dataset.recall_ks) == [1, 10, 100, 1000]
    for name in ("cub200", "cars196"):
        assert compose_config([f"dataset={name}"]).dataset.get("recall_ks") in (None, list(DEFAULT_KS))
    assert DEFAULT_KS == (1, 2, 4, 8)
