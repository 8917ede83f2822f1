"""The symmetric (one-triangle) kNN scan returns what the plain row-block scan returns, tie for tie.

Both are also checked against a brute-force NumPy reference: float32 scores from one product over
all rows, self at -inf, neighbours ordered by (score desc, index asc). D is small (6 and 16), where
the BLAS kernel variants round alike. With 350 rows the plain scan's last block is a partial one
(64- and 100-row blocks) and the symmetric scan's last block is longer than the others.
"""

import tracemalloc

import numpy as np
import pytest
import torch

import vmf_embeddings.eval.knn as knn_module
import vmf_embeddings.eval.knn_symmetric as knn_symmetric
from vmf_embeddings.eval.geometry import search_space
from vmf_embeddings.eval.knn import knn_self
from vmf_embeddings.eval.knn_symmetric import gram_form
from vmf_embeddings.eval.retrieval import retrieval_metrics

N = 350
#: rows per block of the plain scan (block_bytes = 4 N rows); the symmetric scan cuts 5, 5, 4 and 2
#: blocks of at least 64 rows out of these budgets
BLOCK_ROWS = [64, 100, 175, N]
KS = [1, 7, 120, N - 1]  # 120: more neighbours than a block has rows; N - 1: every other item


def _data(kind):
    rng = np.random.default_rng(3)
    if kind == "gaussian":
        x = rng.standard_normal((N, 16)).astype(np.float32)
        x[200:230] = x[10:40]  # exact duplicates: exact ties
    else:  # integer-valued with duplicates: ties among distinct vectors as well, at every rank
        x = rng.integers(-2, 3, size=(N, 6)).astype(np.float32)
        x[300:340] = x[0:40]
    y = rng.integers(0, 40, N)
    y[:3] = [40, 41, 42]  # lone labels: no positive, rank -1
    return x, y


DATA = {kind: _data(kind) for kind in ("gaussian", "integer")}


def brute_force(q, r, k, labels):
    s = q @ np.ascontiguousarray(r.T)
    np.fill_diagonal(s, -np.inf)
    idx = np.broadcast_to(np.arange(len(q)), s.shape)
    order = np.lexsort((idx, -s.astype(np.float64)), axis=1)[:, :-1]  # self (at -inf) is last
    same = labels[order] == labels[:, None]
    ranks = np.where(same.any(1), same.argmax(1), -1)
    return order[:, :k], np.take_along_axis(s, order[:, :k], 1), ranks


def _both(q, r, k, y, backend, block_rows, **kw):
    kw = dict(labels=y, with_ranks=True, backend=backend, device="cpu", block_bytes=4 * N * block_rows, **kw)
    return knn_self(q, r, k, symmetric=True, **kw), knn_self(q, r, k, symmetric=False, **kw)


def _assert_same(a, b):
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(a.first_positive_rank, b.first_positive_rank)


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("block_rows", BLOCK_ROWS)
@pytest.mark.parametrize("backend", ["blas", "torch"])
@pytest.mark.parametrize("geometry", ["cosine", "euclidean", "hyperbolic"])
@pytest.mark.parametrize("kind", ["gaussian", "integer"])
def test_symmetric_equals_plain_and_brute_force(kind, geometry, backend, block_rows, k):
    x, y = DATA[kind]
    q, r = search_space(x, geometry, 0.3)
    sym, plain = _both(q, r, k, y, backend, block_rows)
    # hyperbolic search spaces have no Gram form: the plain scan runs
    assert sym.symmetric == (geometry != "hyperbolic")
    assert not plain.symmetric
    _assert_same(sym, plain)
    ref_i, ref_v, ref_rank = brute_force(q, r, k, y)
    np.testing.assert_array_equal(sym.indices, ref_i)
    np.testing.assert_allclose(sym.scores, ref_v, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(sym.first_positive_rank, ref_rank)


def test_the_data_exercise_ties_and_counted_ranks():
    """The cases above are not vacuous: k-th place ties (exact recomputation), ranks beyond k read
    off the longer candidate list, and ranks beyond it (full-row counting) all occur."""
    for kind in ("gaussian", "integer"):
        x, y = DATA[kind]
        q, r = search_space(x, "euclidean")
        _, v, ranks = brute_force(q, r, 8, y)
        assert (v[:, 6] == v[:, 7]).any(), kind  # a tie across the boundary of k = 7
        assert ((ranks >= 7) & (ranks < knn_symmetric._RANK_CANDIDATES - 1)).any(), kind
        assert (ranks >= knn_symmetric._RANK_CANDIDATES).any() and (ranks[:3] == -1).all(), kind


@pytest.mark.parametrize("k", [1, 3, 30])
@pytest.mark.parametrize("backend", ["blas", "torch"])
@pytest.mark.parametrize("geometry", ["cosine", "euclidean"])
@pytest.mark.parametrize("kind", ["gaussian", "integer"])
def test_max_rank_cutoff_is_the_plain_scans(kind, geometry, backend, k):
    """Ranks >= max_rank may be any value >= max_rank: the symmetric scan reports the plain scan's."""
    x, y = DATA[kind]
    q, r = search_space(x, geometry)
    sym, plain = _both(q, r, k, y, backend, 64, max_rank=5)
    assert sym.symmetric
    _assert_same(sym, plain)
    _, _, ref_rank = brute_force(q, r, k, y)
    low = ref_rank < 5
    np.testing.assert_array_equal(sym.first_positive_rank[low], ref_rank[low])
    assert (sym.first_positive_rank[~low] >= 5).all()


def test_torch_tensors_in_and_without_faiss(monkeypatch):
    x, y = DATA["gaussian"]
    q, r = search_space(x, "euclidean")
    sym, plain = _both(torch.from_numpy(q), torch.from_numpy(r), 9, y, "torch", 100)
    assert sym.symmetric
    _assert_same(sym, plain)
    with_faiss = knn_self(q, r, 9, labels=y, with_ranks=True, backend="blas", block_bytes=4 * N * 100)
    monkeypatch.setattr(knn_module, "faiss", None)  # running top-k by torch.topk merges instead of heaps
    monkeypatch.setattr(knn_symmetric, "faiss", None)
    sym, plain = _both(q, r, 9, y, "blas", 100)
    assert sym.symmetric
    _assert_same(sym, plain)
    _assert_same(sym, with_faiss)


def test_default_takes_the_symmetric_scan_for_small_k():
    x, y = DATA["gaussian"]
    q, r = search_space(x, "cosine")
    assert knn_self(q, r, 7, labels=y, with_ranks=True, backend="blas").symmetric
    assert knn_self(q, r, 7, backend="torch", device="cpu").symmetric
    assert knn_self(q, r, 63, labels=y, with_ranks=True, backend="blas").symmetric
    assert not knn_self(q, r, 64, backend="blas").symmetric
    assert not knn_self(q, r, 100, backend="blas").symmetric
    assert not knn_self(*search_space(x, "hyperbolic", 0.3), 7, backend="blas").symmetric


def test_column_tiles_cover_the_block_from_aligned_starts():
    from vmf_embeddings.eval.knn_symmetric import _MIN_COLS, _MIN_ROWS, _TILE_COLS, _column_tiles

    for s, n, m, budget in [(0, 60502, 1024, 256 << 20), (128, 5000, 64, 4 * 64 * 1000), (640, 700, 60, 1 << 30),
                            (0, _TILE_COLS + _MIN_COLS - 1, 1024, 256 << 20), (0, _TILE_COLS + _MIN_COLS, 1024, 1 << 30)]:
        cuts = _column_tiles(s, n, m, budget)
        assert cuts[0] == s and cuts[-1] == n and all(a < b for a, b in zip(cuts, cuts[1:]))
        assert all((c - s) % _MIN_ROWS == 0 for c in cuts[:-1])
        widths = np.diff(cuts)
        assert widths.max() < _TILE_COLS + _MIN_COLS and (len(widths) == 1 or widths.min() >= _MIN_COLS)
        assert (widths[:-1] * m * 4 <= max(budget, _MIN_COLS * m * 4)).all()
    assert len(_column_tiles(0, _TILE_COLS + _MIN_COLS, 1024, 1 << 30)) == 3  # a full tile and a 256-wide one


@pytest.mark.parametrize("k", [1, 7, 120])
@pytest.mark.parametrize("block_rows", [64, 175])
@pytest.mark.parametrize("geometry", ["cosine", "euclidean"])
@pytest.mark.parametrize("kind", ["gaussian", "integer"])
def test_narrow_column_tiles_change_nothing(monkeypatch, kind, geometry, block_rows, k):
    """The CPU scan multiplies each block in column tiles; with 64-column tiles (and a stretched last one)
    instead of one tile per block here, the result is still the plain scan's and the brute force's."""
    monkeypatch.setattr(knn_symmetric, "_TILE_COLS", 64)
    monkeypatch.setattr(knn_symmetric, "_MIN_COLS", 64)
    x, y = DATA[kind]
    q, r = search_space(x, geometry)
    sym, plain = _both(q, r, k, y, "blas", block_rows)
    assert sym.symmetric
    _assert_same(sym, plain)
    ref_i, _, ref_rank = brute_force(q, r, k, y)
    np.testing.assert_array_equal(sym.indices, ref_i)
    np.testing.assert_array_equal(sym.first_positive_rank, ref_rank)


def test_the_scan_restores_faiss_threads():
    faiss = pytest.importorskip("faiss")
    before = faiss.omp_get_max_threads()
    x, y = DATA["gaussian"]
    assert knn_self(*search_space(x, "cosine"), 7, labels=y, with_ranks=True, backend="blas").symmetric
    assert faiss.omp_get_max_threads() == before


def test_gram_forms():
    x, _ = DATA["gaussian"]
    q, r = search_space(x, "cosine")
    X, v = gram_form(q, r)
    assert X is q and v is None
    q, r = search_space(x, "euclidean")
    X, v = gram_form(q, r)
    np.testing.assert_array_equal(X, x)
    np.testing.assert_array_equal(v, r[:, -1])
    assert gram_form(*search_space(x, "hyperbolic", 0.3)) is None


def test_memory_stays_within_the_block_budget():
    """3,000 items: the score matrix would be 36 MB; both scans keep ~one 128-row block (1.5 MB) of
    scores plus per-row candidates and rank work arrays."""
    rng = np.random.default_rng(0)
    n = 3000
    x = rng.standard_normal((n, 8)).astype(np.float32)
    y = rng.integers(0, 300, n)
    q, r = search_space(x, "cosine")
    peaks = {}
    for symmetric in (True, False):
        tracemalloc.start()
        try:
            res = knn_self(q, r, 10, labels=y, with_ranks=True, backend="blas", block_bytes=4 * n * 128,
                           symmetric=symmetric)
            peaks[symmetric] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert res.symmetric == symmetric
    assert peaks[True] < 1.5 * peaks[False], peaks
    assert peaks[True] < 4 * n * n / 3, peaks


def test_retrieval_metrics_are_the_same_either_way():
    x, y = DATA["gaussian"]
    kw = dict(ks=(1, 2, 50), clustering=False, backend="blas", block_bytes=4 * N * 64)
    for geometry in ("cosine", "euclidean"):
        a = retrieval_metrics(x, y, geometry, symmetric=True, **kw)
        b = retrieval_metrics(x, y, geometry, symmetric=False, **kw)
        assert a == b
