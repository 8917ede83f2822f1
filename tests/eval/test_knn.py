"""Exact chunked kNN: every backend against a float64 stable-argsort reference, tie rule, self-exclusion."""

import numpy as np
import pytest
import torch

from vmf_embeddings.eval.geometry import poincare_distance, scores_to_distances, search_space, to_ball
from vmf_embeddings.eval.knn import choose_backend, knn_self

BACKENDS = ["faiss", "blas", "torch"]


def reference_knn(q, r, k):
    """float64 scores of the float32 search space, self -> -inf, order (score desc, index asc)."""
    s = q.astype(np.float64) @ r.astype(np.float64).T
    np.fill_diagonal(s, -np.inf)
    idx = np.broadcast_to(np.arange(len(q)), s.shape)
    return np.lexsort((idx, -s), axis=1)[:, :k]


def reference_ranks(q, r, labels):
    s = q.astype(np.float64) @ r.astype(np.float64).T
    np.fill_diagonal(s, -np.inf)
    idx = np.broadcast_to(np.arange(len(q)), s.shape)
    order = np.lexsort((idx, -s), axis=1)[:, :-1]  # self is last
    same = labels[order] == labels[:, None]
    return np.where(same.any(1), same.argmax(1), -1)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 16)).astype(np.float32)
    y = rng.integers(0, 30, 600)
    y[:2] = [30, 31]  # two lone labels
    return x, y


@pytest.mark.parametrize("geometry", ["cosine", "euclidean", "hyperbolic"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_float64_reference(data, geometry, backend):
    x, y = data
    q, r = search_space(x, geometry, 0.3)
    k = 25
    res = knn_self(q, r, k, labels=y, with_ranks=backend != "faiss", backend=backend, device="cpu",
                   block_bytes=4 * 600 * 64)
    ref = reference_knn(q, r, k)
    # float32 vs float64 may swap items whose scores agree to ~1e-7: allow a handful of swapped pairs
    assert (res.indices == ref).mean() > 0.999
    assert (res.indices[:, 0] == ref[:, 0]).mean() > 0.998
    assert not (res.indices == np.arange(len(x))[:, None]).any()
    if backend != "faiss":
        ranks = reference_ranks(q, r, y)
        assert (res.first_positive_rank == ranks).mean() > 0.995
        assert (res.first_positive_rank[:2] == -1).all()


@pytest.mark.parametrize("backend", ["blas", "torch"])
def test_independent_of_block_size(data, backend):
    x, y = data
    q, r = search_space(x, "cosine")
    a = knn_self(q, r, 10, labels=y, with_ranks=True, backend=backend, device="cpu", block_bytes=4 * 600 * 7)
    b = knn_self(q, r, 10, labels=y, with_ranks=True, backend=backend, device="cpu", block_bytes=1 << 30)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.first_positive_rank, b.first_positive_rank)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [1, 5, 20, 59])
def test_duplicate_heavy_ties_follow_index_order(backend, k):
    """50 distinct vectors x 6 copies: ties everywhere; the reference rule must hold row for row."""
    rng = np.random.default_rng(1)
    base = rng.integers(-3, 4, size=(50, 4)).astype(np.float32)
    x = base[rng.permutation(np.repeat(np.arange(50), 6))]
    y = rng.integers(0, 10, len(x))
    q, r = search_space(x, "euclidean")
    res = knn_self(q, r, k, labels=y, with_ranks=backend != "faiss", backend=backend, device="cpu",
                   block_bytes=4 * 300 * 16)
    np.testing.assert_array_equal(res.indices, reference_knn(q, r, k))
    if backend != "faiss":
        np.testing.assert_array_equal(res.first_positive_rank, reference_ranks(q, r, y))
    # exact duplicates of the query come first
    dup = (x[res.indices[:, 0]] == x).all(1)
    assert dup.all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [1, 2])
def test_tie_lower_index_first(backend, k):
    a = 0.7
    x = np.array([[1, 0], [np.cos(a), np.sin(a)], [np.cos(a), -np.sin(a)]], np.float32)
    q, r = search_space(x, "cosine")
    res = knn_self(q, r, k, backend=backend, device="cpu")
    assert res.indices[0, 0] == 1  # q1 and q2 tie for q0: lower index first
    assert res.indices[2, 0] == 0


def test_hyperbolic_search_ranks_like_poincare_distance(data):
    x, _ = data
    c = 0.5
    q, r = search_space(x[:200] * 2, "hyperbolic", c)
    res = knn_self(q, r, 5, backend="blas", device="cpu")
    ball = to_ball(x[:200] * 2, c)
    d = poincare_distance(ball, ball, c)
    np.fill_diagonal(d, np.inf)
    np.testing.assert_array_equal(res.indices[:, 0], d.argmin(1))
    back = scores_to_distances(res.scores, q, "hyperbolic", c)
    np.testing.assert_allclose(back, np.take_along_axis(d, res.indices, 1), rtol=2e-3, atol=2e-3)


def test_euclidean_and_cosine_distances_round_trip(data):
    x, _ = data
    for geometry in ("euclidean", "cosine"):
        q, r = search_space(x, geometry)
        res = knn_self(q, r, 3, backend="blas", device="cpu")
        d = scores_to_distances(res.scores, q, geometry)
        if geometry == "euclidean":
            true = np.linalg.norm(x[:, None, :] - x[res.indices], axis=2)
        else:
            xn = x / np.linalg.norm(x, axis=1, keepdims=True)
            true = 1 - np.einsum("nd,nkd->nk", xn, xn[res.indices])
        np.testing.assert_allclose(d, true, atol=1e-3)


def test_torch_tensors_and_bad_arguments(data):
    x, _ = data
    q, r = search_space(x, "cosine")
    res = knn_self(torch.from_numpy(q), torch.from_numpy(r), 3, backend="torch", device="cpu")
    assert res.indices.shape == (600, 3)
    with pytest.raises(ValueError, match="k must be"):
        knn_self(q, r, 600)
    with pytest.raises(ValueError, match="unknown kNN backend"):
        knn_self(q, r, 3, backend="annoy")
    with pytest.raises(ValueError, match="needs labels"):
        knn_self(q, r, 3, with_ranks=True)


def test_backend_choice():
    assert choose_backend("auto", "cpu", with_ranks=True, k=5)[0] == "blas"
    assert choose_backend("auto", "cpu", with_ranks=False, k=5)[0] == "blas"
    assert choose_backend("auto", "cpu", with_ranks=False, k=199)[0] == "faiss"
    assert choose_backend("faiss", "cpu", with_ranks=True, k=199)[0] == "blas"


def test_without_faiss_the_scan_uses_torch_topk(data, monkeypatch):
    import vmf_embeddings.eval.knn as knn_module
    import vmf_embeddings.eval.knn_symmetric as knn_symmetric

    x, y = data
    q, r = search_space(x, "cosine")
    with_faiss = knn_self(q, r, 12, labels=y, with_ranks=True, backend="blas")
    monkeypatch.setattr(knn_module, "faiss", None)
    monkeypatch.setattr(knn_symmetric, "faiss", None)
    assert choose_backend("auto", "cpu", with_ranks=False, k=199)[0] == "blas"
    without = knn_self(q, r, 12, labels=y, with_ranks=True)
    assert without.backend == "blas"
    np.testing.assert_array_equal(with_faiss.indices, without.indices)
    np.testing.assert_array_equal(with_faiss.first_positive_rank, without.first_positive_rank)
