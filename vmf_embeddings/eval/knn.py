"""Exact k-nearest neighbours of every item among all the others, in bounded memory.

Input is a search space (Q, R) from `geometry.search_space`: larger <Q_i, R_j> = nearer. Output is,
per query i, the k nearest j != i ordered by (distance, index) ascending -- the order faiss
`IndexFlatL2` (PML's default kNN) produces on ties, so no backend changes a metric -- and,
optionally, the rank of i's nearest same-label item among all N - 1 others, which gives Recall@K
for any K (SOP's R@1000) without a top-1000 search.

Self-exclusion is by index, never by position: the query's own score is set to -inf before
selection, so an exact duplicate of the query is a neighbour like any other.

Backends (chosen on measurement on the 2-core AMD EPYC; numbers in scripts/bench_eval.py's output):

- ``blas``: block scan on CPU: B queries x N references per block (memory 4 B N bytes, never N x N)
  with NumPy's OpenBLAS sgemm (faster here than faiss' bundled OpenBLAS and ~2x faster than torch's
  MKL sgemm on this AMD CPU; on the 2-core Xeon measured since, both ran at ~320-350 GFLOP/s),
  candidates by faiss' C++ heap (`torch.topk` when faiss is absent), and
  first-positive ranks by counting the scores above the best positive. At SOP size (60,502 x 512,
  k = 11, with ranks) it ran in ~0.7x the time of a bare faiss IndexFlatIP search.
- ``faiss``: `faiss.IndexFlatIP` search of k + 2 (self included), self removed by index. Used on CPU
  for large k without ranks: faiss' fused selection beats a heap over score blocks there
  (20,000 x 128, k = 199).
- ``torch``: the same block scan in torch, for CUDA (float32 matmul forced to full precision: TF32
  would reorder near-ties).

Ties: each backend returns k + 1 candidates per row; rows whose k-th and (k+1)-th candidates tie are
recomputed exactly (all strictly nearer items, then the lowest-index tied ones), so the result never
depends on which tied items a selector happened to keep.

Symmetric scan (``blas`` and ``torch``; the default for k < 64, ``symmetric=True`` forces it,
``symmetric=False`` turns it off): when the score matrix is a Gram matrix -- Q = R (cosine, vmf), or
Q = [X, 1], R = [X, v] (the euclidean map), so S_ij = <X_i, X_j> + v_j -- only one triangle of
<X_i, X_j> is multiplied, as BLAS ``syrk`` does (Dongarra et al., "A set of Level 3 Basic Linear
Algebra Subprograms", ACM TOMS 1990). Rows are cut into nb near-equal blocks (at most the plain
scan's B rows, at least 64, starting at multiples of 64; up to 16 blocks of >= 1,024 rows where the
budget asks for fewer), which costs (nb + 1) / (2 nb) of the plain scan's multiply-adds (51 % at SOP
size, 53 % at 20,000 x 128). Block I multiplies its rows by the columns from its own first row on,
on CPU in tiles of 4,096 columns that stay in cache while they are read; each tile's scores go to
their rows' running top-(k + 1) (faiss heaps, fed on one thread) and, transposed, to the later rows:
for k + 1 <= 64 only the scores above such a row's current (k + 1)-th best, picked from the tile as it
lies (blocks run last to first, so those heaps are already full), for larger k a tiled transposed
copy. Afterwards rows tied at the k-th place are recomputed as in the plain scan, and first-positive
ranks come from the k neighbours, else from a list of >= 32 candidates when the positive outscores
the last candidate; only the remaining rows are multiplied again (blocks of >= 64 rows against all
columns) and counted as the plain scan counts them, including its convention above max_rank.

Measured on a quiet 2-core Xeon (OpenBLAS 0.3.31, faiss-cpu 1.15), knn_self with ranks, cosine:
SOP size (60,502 x 512, k = 8) 12.1 s against 19.0 s for the plain scan, of which the triangle's
products ~6.4 s, heap feeding 1.5 s, the transposed feed 1.6 s, the 12 % of rows recomputed for
ranks 1.8 s and their counting 0.9 s. Against the plain scan at 15,000 x 512: k = 31 0.93 s vs 1.36 s,
k = 63 1.11 s vs 1.27 s, k = 100 (transposed copy) 1.25 s vs 1.31 s; at 20,000 x 128: k = 31 0.79 s vs
1.14 s, k = 63 1.32 s vs 1.44 s, k = 199 2.07 s vs 1.75 s. Hence the k < 64 default ("auto" takes faiss
above that when no ranks are asked for). Feeding the heaps from whole blocks in main memory instead of
tiles, on faiss' two OpenMP threads (which then alternate with the BLAS threads hundreds of times and
leave spinning threads on both cores), with 16 rank candidates, and counting ranks over copied rows cost
19.6 s in all.

The result is the plain scan's whenever the matrix product rounds each element independently of
the block shape, of the element's place in the block and of operand order. OpenBLAS and torch's CPU
kernels do, except in products with few rows or columns (gemv, small-matrix kernels) and, at some D,
in narrower edge tiles -- hence the block sizes and alignment above. The tests check it; on a 2-core
Xeon (OpenBLAS 0.3.31) every symmetric result matched a float32 product over all rows bit for bit at
D = 16, 128 and 512 (the plain scan itself does not where its last block has one row). For the
euclidean map the plain scan multiplies the appended column inside the product and the symmetric
scan adds v_j after it; the BLAS rounds both alike when it accumulates the D + 1 terms in one pass
(there: at D = 400 with NumPy and up to D = 383 with torch, not at D = 512, where ~1/4 of the scores
differ in the last bit). One 64-row block is computed both ways first and the scan stays plain when
they differ. Hyperbolic search spaces have no Gram form and always take the plain scan. On CUDA the
same code runs with torch ops; cuBLAS may pick kernels by shape, so there the two scans could differ
in the last bit (not measured).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import numpy as np
import torch

from .arrays import Array, to_numpy

try:  # optional: faster CPU search; everything works without it
    import faiss  # type: ignore
except ImportError:  # pragma: no cover - exercised only where faiss is missing
    faiss = None

BACKENDS = ("auto", "faiss", "blas", "torch")
#: default bound on one block of scores (B x N float32); results do not depend on it
DEFAULT_BLOCK_BYTES = 256 << 20
DEFAULT_BLOCK_BYTES_CUDA = 1 << 30
#: on CPU, faiss above this k (its selection is cheaper than a heap for large k), blas at or below
FAISS_MIN_K = 64
#: the symmetric scan hands a block's transposed scores to the running top-k at least _PIECE columns
#: at a time; above _FILTER_MAX_KK candidates per row it copies them transposed in _PIECE x _TILE tiles
#: (a plain strided copy of a large block ran ~4x slower on a 2-core Xeon), at or below it it picks
#: the few scores that can enter a row's top-k from the block as it lies
_PIECE = 512
_TILE = 128
_FILTER_MAX_KK = 64
#: knn_self's default runs the symmetric scan for k + 1 <= _AUTO_MAX_KK (measurements: module docstring)
_AUTO_MAX_KK = 64
#: with ranks, the symmetric scan keeps at least this many candidates per row: a row whose nearest
#: positive is among them needs no second pass over its scores (at SOP size 16, 32 and 64 candidates
#: left 19 %, 12 % and 7 % of rows to recompute; 32 was fastest overall)
_RANK_CANDIDATES = 32
#: the symmetric scan multiplies at least this many rows at a time (its blocks, and the rows it
#: recomputes afterwards), and its blocks start at multiples of it: BLAS libraries route products with
#: few rows or columns to other kernels (gemv, small-matrix paths) and compute edge tiles with narrower
#: kernels, which can round differently (OpenBLAS 0.3.31 SkylakeX at D = 128)
_MIN_ROWS = 64
#: the symmetric scan cuts up to _MIN_BLOCKS row blocks of at least _GOOD_ROWS rows even when the budget
#: allows fewer: one block is the plain scan's work, 16 blocks 53 % of it; OpenBLAS ran products of
#: 1,024-row blocks at ~90 % of its whole-matrix rate, of 375-row blocks at ~65-75 % (2-core Xeon)
_MIN_BLOCKS = 16
_GOOD_ROWS = 1024
#: on CPU the symmetric scan multiplies a block by _TILE_COLS columns at a time (1,024 x 4,096 scores,
#: 16 MiB: the product runs at full rate and the heaps read it from cache), never fewer than _MIN_COLS
_TILE_COLS = 4096
_MIN_COLS = 256


@dataclass
class KnnResult:
    """k nearest neighbours of every item, self excluded.

    indices: N x k int64, ordered by (distance, index) ascending.
    scores: N x k float32 search scores <Q_i, R_j> (larger = nearer; see geometry.scores_to_distances).
    first_positive_rank: N int64 or None; number of other items ranked strictly before i's nearest
        same-label item (0 = the nearest neighbour is a positive); -1 when i has no positive.
    backend: the backend that ran.
    symmetric: whether the symmetric scan (module docstring) computed it.
    """

    indices: np.ndarray
    scores: np.ndarray
    first_positive_rank: Optional[np.ndarray]
    backend: str
    symmetric: bool = False  # True when the symmetric (one-triangle) scan ran


def choose_backend(
    backend: str, device: Optional[Union[str, torch.device]], with_ranks: bool, k: int = 1
) -> Tuple[str, torch.device]:
    """Resolve "auto" (rule from measurements, module docstring):

    CUDA -> torch; CPU -> blas when ranks are needed or k <= FAISS_MIN_K (NumPy's sgemm beat faiss'
    at SOP size), else faiss (its fused selection wins at large k); blas also when faiss is missing.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown kNN backend {backend!r}: expected one of {BACKENDS}")
    if device is None:
        dev = torch.device("cuda" if torch.cuda.is_available() and backend in ("auto", "torch") else "cpu")
    else:
        dev = torch.device(device)
    if backend == "auto":
        if dev.type != "cpu":
            backend = "torch"
        elif faiss is not None and not with_ranks and k > FAISS_MIN_K:
            backend = "faiss"
        else:
            backend = "blas"
    if backend == "faiss" and with_ranks:
        backend = "blas"  # faiss exposes no per-row counts; the block scan computes both in one pass
    if backend == "faiss" and faiss is None:
        raise ImportError("kNN backend 'faiss' requested but faiss is not installed: pip install faiss-cpu")
    if backend in ("faiss", "blas"):
        dev = torch.device("cpu")
    return backend, dev


def _as_numpy32(x: Array) -> np.ndarray:
    return np.ascontiguousarray(to_numpy(x), dtype=np.float32)


def _block_rows(n: int, block_bytes: int) -> int:
    return int(max(1, min(n, block_bytes // (4 * max(n, 1)))))


def _sort_candidates(vals: np.ndarray, idx: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Order each row by (score descending, index ascending), in place (callers own the arrays).

    Selectors already return rows sorted by score, so only rows holding equal scores are re-sorted
    (a full lexsort of 20,000 x 200 candidates cost ~0.3 s).
    """
    if vals.shape[1] < 2:
        return vals, idx
    if not (vals[:, 1:] <= vals[:, :-1]).all():
        rows = np.arange(len(vals))
    else:
        rows = np.flatnonzero((vals[:, 1:] == vals[:, :-1]).any(1))
    if len(rows) == 0:
        return vals, idx
    v, i = vals[rows], idx[rows]
    order = np.lexsort((i, -v.astype(np.float64)), axis=-1)
    vals[rows], idx[rows] = np.take_along_axis(v, order, 1), np.take_along_axis(i, order, 1)
    return vals, idx


def _exact_row(row: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Top k of one full score row by (score desc, index asc), exactly (used for boundary ties)."""
    order = np.lexsort((np.arange(len(row)), -row.astype(np.float64)))[:k]
    return row[order], order.astype(np.int64)


def _finish_block(
    cand_v: np.ndarray, cand_i: np.ndarray, k: int, full_row
) -> Tuple[np.ndarray, np.ndarray]:
    """Sort k + 1 candidates, keep k; recompute rows with a tie at the k-th place from the full row."""
    v, i = _sort_candidates(cand_v, cand_i)
    if v.shape[1] > k:
        tie = np.flatnonzero(v[:, k - 1] == v[:, k])
        v, i = np.ascontiguousarray(v[:, :k]), np.ascontiguousarray(i[:, :k])
        for r in tie:
            v[r], i[r] = _exact_row(full_row(r), k)
    return v, i


def _positive_block(labels: np.ndarray, starts: np.ndarray, counts: np.ndarray, order: np.ndarray,
                    rows: np.ndarray, width: int) -> np.ndarray:
    """For query rows `rows`: indices of all items with the same label (self included), padded with self."""
    lab = labels[rows]
    j = np.arange(width)[None, :]
    pos = starts[lab][:, None] + j
    valid = j < counts[lab][:, None]
    return np.where(valid, order[np.minimum(pos, len(order) - 1)], rows[:, None])


def _label_layout(labels: np.ndarray):
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return order, counts, starts


def knn_self(
    queries: Array,
    references: Optional[Array],
    k: int,
    labels: Optional[Array] = None,
    with_ranks: bool = False,
    max_rank: Optional[int] = None,
    backend: str = "auto",
    device: Optional[Union[str, torch.device]] = None,
    block_bytes: Optional[int] = None,
    symmetric: Optional[bool] = None,
) -> KnnResult:
    """k nearest neighbours of each row among all other rows (row i of Q and R is the same item).

    labels (0..C-1 ints) and with_ranks=True add `first_positive_rank`; ranks are exact up to
    `max_rank` (larger ranks may be reported as any value >= max_rank; None = exact everywhere).
    block_bytes bounds the score block (B x N float32); the result does not depend on it.
    symmetric: True multiplies one triangle of the score matrix when it has a Gram form (module
    docstring), False runs the plain row-block scan, None (default) the symmetric one for k < 64,
    where it measured faster. Same result either way; the faiss backend ignores it.
    """
    q = queries
    r = queries if references is None else references
    n = int(q.shape[0])
    if r.shape[0] != n:
        raise ValueError(f"queries ({n}) and references ({r.shape[0]}) must be the same items")
    if not 1 <= k <= n - 1:
        raise ValueError(f"k must be in 1..N-1 = 1..{n - 1}, got {k}")
    if with_ranks and labels is None:
        raise ValueError("with_ranks=True needs labels")
    if isinstance(q, torch.Tensor) and q.device.type != "cpu" and device is None:
        device = q.device
    name, dev = choose_backend(backend, device, with_ranks, k)
    if block_bytes is None:
        block_bytes = DEFAULT_BLOCK_BYTES if dev.type == "cpu" else DEFAULT_BLOCK_BYTES_CUDA
    lab = None
    if labels is not None:
        lab = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        lab = lab.astype(np.int64)
    if name == "faiss":
        return _knn_faiss(_as_numpy32(q), _as_numpy32(r), k, block_bytes)
    return _knn_scan(q, r, k, lab, with_ranks, max_rank, name, dev, block_bytes, symmetric)


def _knn_faiss(q: np.ndarray, r: np.ndarray, k: int, block_bytes: int) -> KnnResult:
    n = len(q)
    index = faiss.IndexFlatIP(q.shape[1])
    index.add(r)
    kk = min(k + 2, n)  # self + k + one more to detect a tie at the k-th place
    out_v = np.empty((n, k), np.float32)
    out_i = np.empty((n, k), np.int64)
    # one search call when the results fit the block budget (faiss blocks internally anyway; several
    # calls cost ~0.1 s at 20,000 x 128), else query chunks
    step = max(4096, int(block_bytes // (12 * kk)))
    ar_all = np.arange(n)
    for s in range(0, n, step):
        e = min(n, s + step)
        v, i = index.search(q[s:e], kk)
        own = i == ar_all[s:e, None]
        keep = ~own
        no_self = ~own.any(1)
        keep[no_self, -1] = False  # self pushed out by duplicates: drop the extra column instead
        v = v[keep].reshape(e - s, kk - 1)
        i = i[keep].reshape(e - s, kk - 1)

        def full_row(rr, s=s):
            row = q[s + rr] @ r.T
            row[s + rr] = -np.inf
            return row

        out_v[s:e], out_i[s:e] = _finish_block(v, i, k, full_row)
    return KnnResult(out_i, out_v, None, "faiss")


def _knn_scan(q, r, k, labels, with_ranks, max_rank, name, dev, block_bytes, symmetric=None) -> KnnResult:
    use_torch = name == "torch"
    if symmetric is None:
        symmetric = k + 1 <= _AUTO_MAX_KK
    if not use_torch:
        qn, rn = _as_numpy32(q), _as_numpy32(r)
        form = _gram_form(qn, rn) if symmetric else None
        if form is not None:
            return _scan_symmetric(*form, k, labels, with_ranks, max_rank, name, block_bytes)
        return _scan_plain(qn, rn, k, labels, with_ranks, max_rank, name, dev, block_bytes)
    qt = torch.as_tensor(q).to(dev, torch.float32)
    rt = torch.as_tensor(r).to(dev, torch.float32)
    prec = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        form = _gram_form(qt, rt) if symmetric else None
        if form is not None:
            return _scan_symmetric(*form, k, labels, with_ranks, max_rank, name, block_bytes)
        return _scan_plain(qt, rt, k, labels, with_ranks, max_rank, name, dev, block_bytes)
    finally:
        torch.set_float32_matmul_precision(prec)


def _scan_plain(q, r, k, labels, with_ranks, max_rank, name, dev, block_bytes) -> KnnResult:
    """Row blocks of B queries against all N references (q, r: float32 NumPy, or tensors on `dev`)."""
    n = int(q.shape[0])
    use_torch = name == "torch"
    if use_torch:
        qt, rt = q, r
    else:
        qn, rn = q, r
        rnT = np.ascontiguousarray(rn.T)
    b = _block_rows(n, block_bytes)
    kk = min(k + 1, n)
    out_v = np.empty((n, k), np.float32)
    out_i = np.empty((n, k), np.int64)
    ranks = np.full(n, -1, np.int64) if with_ranks else None
    if with_ranks:
        order, counts, starts = _label_layout(labels)
        width = int(counts.max())
        big = n if max_rank is None else int(max_rank)
    buf = None if use_torch else np.empty((b, n), np.float32)
    for s in range(0, n, b):
        e = min(n, s + b)
        m = e - s
        rows = np.arange(s, e)
        if use_torch:
            S = qt[s:e] @ rt.T
            ar = torch.arange(m, device=dev)
            S[ar, ar + s] = -math.inf
            cv, ci = torch.topk(S, kk, dim=1)
            cv, ci = cv.cpu().numpy(), ci.cpu().numpy()

            def full_row(rr, S=S):
                return S[rr].cpu().numpy()
        else:
            S = buf[:m]
            np.matmul(qn[s:e], rnT, out=S)
            S[np.arange(m), rows] = -np.inf
            cv, ci = _select_cpu(S, kk)

            def full_row(rr, S=S):
                return S[rr]
        v, i = _finish_block(cv, ci, k, full_row)
        out_v[s:e], out_i[s:e] = v, i
        if with_ranks:
            ranks[s:e] = _block_ranks(S, rows, i, labels, order, counts, starts, width, big, use_torch)
    return KnnResult(out_i, out_v, ranks, name)


def _gram_form(q, r):
    """(X, v) with <Q_i, R_j> = <X_i, X_j> + v_j (v None: zero) when the search space has that form.

    Q = R (cosine, vmf) gives (Q, None); Q = [X, 1], R = [X, v] (the euclidean map) gives (X, v) when
    the two forms round alike (checked on one block of rows); anything else (hyperbolic, or a BLAS that
    rounds the two euclidean forms differently) gives None. q, r: float32 NumPy arrays or tensors on
    one device.
    """
    if tuple(q.shape) != tuple(r.shape):
        return None
    is_torch = isinstance(q, torch.Tensor)
    same = torch.equal if is_torch else np.array_equal
    if q is r or same(q, r):
        return q, None
    d = int(q.shape[1]) - 1
    if d < 1 or not bool((q[:, d] == 1).all()) or not same(q[:, :d], r[:, :d]):
        return None
    if is_torch:
        X, v = q[:, :d].contiguous(), r[:, d].contiguous()
    else:
        X, v = np.ascontiguousarray(q[:, :d]), np.ascontiguousarray(r[:, d])
    # <X_i, X_j> + v_j rounds like the product of the appended vectors only if the BLAS adds the last
    # column within the same accumulation; that depends on D and the library, not on the data, so
    # one block of rows decides (a mismatch shows in a large share of its scores)
    rows = slice(0, min(int(q.shape[0]), _MIN_ROWS))
    if is_torch:
        exact = torch.equal(q[rows] @ r.T, X[rows] @ X.T + v[None, :])
    else:
        exact = np.array_equal(q[rows] @ np.ascontiguousarray(r.T), X[rows] @ np.ascontiguousarray(X.T) + v[None, :])
    return (X, v) if exact else None


class _HeapTopK:
    """Running kk largest scores of every row: faiss' C++ min-heaps, fed block by block."""

    def __init__(self, n: int, kk: int):
        self.kk = kk
        self.v = np.empty((n, kk), np.float32)
        self.i = np.empty((n, kk), np.int64)
        self.heap = faiss.float_minheap_array_t()
        self.heap.k, self.heap.nh = kk, n
        self.heap.val, self.heap.ids = faiss.swig_ptr(self.v), faiss.swig_ptr(self.i)
        self.heap.heapify()
        self.buf = np.empty(0, np.float32)

    def add_rows(self, S: np.ndarray, row0: int, col0: int) -> None:
        """Offer S[a, j] (C-contiguous) to row row0 + a as item col0 + j."""
        ni, nj = S.shape
        self.heap.addn(int(nj), faiss.swig_ptr(S), int(col0), int(row0), int(ni))

    def add_columns(self, S: np.ndarray, row0: int, col0: int, offset: Optional[np.ndarray]) -> None:
        """Offer S[a, j] (+ offset[a]) to row row0 + j as item col0 + a: S's transpose.

        A quarter of S's columns at a time (few heap calls: each is an OpenMP region). For small k,
        only scores above a row's current (k + 1)-th best can enter its heap (equal ones neither), so
        those are picked from S as it lies, cheaper than transposing it, and handed to the heaps
        padded with -inf; for large k so many pass that a tiled transposed copy is cheaper.
        """
        m, w = S.shape
        step = w if w <= _TILE_COLS + _MIN_COLS else min(w, max(_PIECE, -(-w // 4)))
        need = m * step
        if self.buf.size < need:
            self.buf = np.empty(need, np.float32)
        for a in range(0, w, step):
            c = min(step, w - a)
            if self.kk > _FILTER_MAX_KK:
                T = self.buf[: c * m].reshape(c, m)
                for p in range(0, c, _PIECE):
                    for t in range(0, m, _TILE):
                        src = S[t:t + _TILE, a + p:a + min(c, p + _PIECE)].T
                        dst = T[p:p + _PIECE, t:t + _TILE]
                        if offset is None:
                            np.copyto(dst, src)
                        else:
                            np.add(src, offset[None, t:t + _TILE], out=dst)
                self.add_rows(T, row0 + a, col0)
                continue
            part = S[:, a:a + c]
            if offset is not None:
                part = np.add(part, offset[:, None], out=self.buf[: m * c].reshape(m, c))
            top = self.v[row0 + a:row0 + a + c, 0]  # each heap's smallest kept score
            ai, ji, vals = _above(part, top)
            if len(ai) == 0:
                continue
            lo, hi = int(ji[0]), int(ji[-1]) + 1
            cnt = np.bincount(ji - lo, minlength=hi - lo)
            width = int(cnt.max())
            pos = np.arange(len(ji)) - (np.cumsum(cnt) - cnt)[ji - lo]
            V = np.full((hi - lo, width), -np.inf, np.float32)
            ids = np.full((hi - lo, width), -1, np.int64)
            V[ji - lo, pos] = vals
            ids[ji - lo, pos] = ai + col0
            self.heap.addn_with_ids(width, faiss.swig_ptr(V), faiss.swig_ptr(ids), width, int(row0 + a + lo),
                                    hi - lo)

    def result(self) -> Tuple[np.ndarray, np.ndarray]:
        """Every row's candidates sorted by score, best first."""
        self.heap.reorder()
        return self.v, self.i


def _above(S: np.ndarray, top: np.ndarray, group: int = 8) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, j, S[a, j]) for every S[a, j] > top[j], ordered by j, then a.

    Few scores pass once the heaps are full, so the maxima of groups of `group` rows are compared
    first and only the groups above a column's bar are read element by element.
    """
    m = S.shape[0]
    full = m // group
    gmax = [S[: full * group].reshape(full, group, -1).max(axis=1)] if full else []
    if full * group < m:
        gmax.append(S[full * group:].max(axis=0, keepdims=True))
    hit = np.concatenate(gmax) > top[None, :]
    # flat indices (a 2-d nonzero, or a transposed copy, cost ~10x more), then by column, then group
    gi, ji = np.divmod(np.flatnonzero(hit), hit.shape[1])
    order = np.argsort(ji, kind="stable")
    gi, ji = gi[order], ji[order]
    a = (gi[:, None] * group + np.arange(group)[None, :]).ravel()
    j = np.repeat(ji, group)
    inside = a < m
    a, j = a[inside], j[inside]
    v = S[a, j]
    keep = v > top[j]
    return a[keep], j[keep], v[keep]


class _TorchTopK:
    """Running kk largest scores of every row with `torch.topk` merges (CUDA, or CPU without faiss)."""

    def __init__(self, n: int, kk: int, device: torch.device, step: int):
        self.kk, self.step = kk, max(1, step)
        self.v = torch.full((n, kk), -math.inf, device=device)
        self.i = torch.full((n, kk), -1, dtype=torch.int64, device=device)

    def add_rows(self, S, row0: int, col0: int) -> None:
        S = torch.as_tensor(S)
        ni, nj = S.shape
        bv, bi = torch.topk(S, min(self.kk, nj), dim=1)
        v = torch.cat([self.v[row0:row0 + ni], bv], 1)
        i = torch.cat([self.i[row0:row0 + ni], bi + col0], 1)
        tv, ti = torch.topk(v, self.kk, dim=1)
        self.v[row0:row0 + ni] = tv
        self.i[row0:row0 + ni] = torch.gather(i, 1, ti)

    def add_columns(self, S, row0: int, col0: int, offset) -> None:
        S = torch.as_tensor(S)
        off = None if offset is None else torch.as_tensor(offset)[None, :]
        w = S.shape[1]
        for a in range(0, w, self.step):
            T = S[:, a:a + self.step].T
            self.add_rows(T if off is None else T + off, row0 + a, col0)

    def result(self) -> Tuple[np.ndarray, np.ndarray]:
        return self.v.cpu().numpy(), self.i.cpu().numpy()


def _full_rows(X, XT, v, rows: np.ndarray, b: int):
    """Yield (row chunk, its full score rows with self at -inf), multiplied as the symmetric scan does.

    Chunks have at most b rows and at least _MIN_ROWS (padded with arbitrary rows, then dropped);
    NumPy products go into one b x N buffer, allocated on the first chunk.
    """
    n = int(X.shape[0])
    pad = min(n, _MIN_ROWS)
    buf = None
    for s in range(0, len(rows), b):
        rr = rows[s:s + b]
        m = len(rr)
        idx = rr if m >= pad else np.concatenate([rr, np.arange(pad - m)])
        if isinstance(X, torch.Tensor):
            S = (X[torch.as_tensor(idx, device=X.device)] @ XT)[:m]
            ar = torch.arange(m, device=X.device)
            if v is not None:
                S += v[None, :]
            S[ar, torch.as_tensor(rr, device=X.device)] = -math.inf
        else:
            if buf is None:
                buf = np.empty(max(b, pad) * n, np.float32)
            S = np.matmul(X[idx], XT, out=buf[: len(idx) * n].reshape(len(idx), n))[:m]
            if v is not None:
                S += v[None, :]
            S[np.arange(m), rr] = -np.inf
        yield rr, S


def _column_tiles(s: int, n: int, m: int, block_bytes: int) -> list:
    """Column cuts s = c_0 < ... < c_t = n for a block of m rows: tiles of _TILE_COLS columns (fewer when
    the budget is smaller, never under _MIN_COLS), each starting at s plus a multiple of _MIN_ROWS, the
    last one stretched to n rather than leaving a thin remainder: a product with few columns may take
    another BLAS kernel and round differently from the plain scan."""
    width = max(_MIN_COLS, min(_TILE_COLS, block_bytes // (4 * max(m, 1))) // _MIN_ROWS * _MIN_ROWS)
    cuts = list(range(s, n, width))
    if len(cuts) > 1 and n - cuts[-1] < _MIN_COLS:
        cuts.pop()
    return cuts + [n]


def _symmetric_blocks(X, XT, v, bounds, b, top, block_bytes, use_torch) -> None:
    """Offer every score of one triangle of S = X X^T (+ v_j) to both its row's and its column's running top-k."""
    n = int(X.shape[0])
    buf = None
    for s, e in reversed(list(zip(bounds[:-1], bounds[1:]))):
        m = e - s
        if use_torch:
            G = X[s:e] @ XT[:, s:]
            if e < n:  # rows e..n-1 against this block's columns, from the transpose (before v is added)
                top.add_columns(G[:, m:], e, s, None if v is None else v[s:e])
            if v is not None:
                G += v[None, s:]
            diag = torch.arange(m, device=X.device)
            G[diag, diag] = -math.inf
            top.add_rows(G, s, s)
            continue
        # CPU: the block's product in column tiles that stay in cache while the heaps read them (feeding
        # heaps from a block in main memory took ~2x as long)
        cuts = _column_tiles(s, n, m, block_bytes)
        if buf is None:  # any block's widest tile: _column_tiles stretches the last by < _MIN_COLS
            buf = np.empty(b * min(n, _TILE_COLS + _MIN_COLS), np.float32)
        for c0, c1 in zip(cuts[:-1], cuts[1:]):
            G = buf[: m * (c1 - c0)].reshape(m, c1 - c0)
            np.matmul(X[s:e], XT[:, c0:c1], out=G)
            if c1 > e:  # later rows against this block's columns, from the transpose (before v is added)
                a0 = max(e, c0)
                top.add_columns(G[:, a0 - c0:], a0, s, None if v is None else v[s:e])
            if v is not None:
                G += v[None, c0:c1]
            if c0 < e:  # the block's own diagonal
                diag = np.arange(c0, min(c1, e))
                G[diag - s, diag - c0] = -np.inf
            top.add_rows(G, s, c0)


@contextlib.contextmanager
def _faiss_threads(count: Optional[int]):
    """faiss' OpenMP thread count inside the block (None: unchanged). The symmetric CPU scan feeds its heaps on one
    thread: it alternates hundreds of times between BLAS products and heap calls, and with both libraries' threads
    on 2 cores, the ones left spinning after each call slowed the scan by ~15 % (2-core Xeon, SOP size)."""
    if count is None or faiss is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _scan_symmetric(X, v, k, labels, with_ranks, max_rank, name, block_bytes) -> KnnResult:
    """The block scan over one triangle of S = X X^T (+ v_j), module docstring; same output as the plain scan."""
    n = int(X.shape[0])
    use_torch = isinstance(X, torch.Tensor)
    # near-equal blocks of at least _MIN_ROWS rows and at most max(B, 2 _MIN_ROWS - 1) (B: the plain
    # scan's bound) that start at multiples of _MIN_ROWS, so the columns n - w..n of a block's product
    # meet the same kernel tiles as in a product over all n columns (edge tiles round differently);
    # up to _MIN_BLOCKS blocks of >= _GOOD_ROWS rows where n allows, since nb blocks cost (nb + 1) / (2 nb)
    a = _MIN_ROWS
    nb = max(-(-n // max(_block_rows(n, block_bytes) - (a - 1), a)), min(_MIN_BLOCKS, n // _GOOD_ROWS))
    nb = max(1, min(nb, n // a))
    bounds = [(t * n // nb) // a * a for t in range(nb)] + [n]
    b = max(e - s for s, e in zip(bounds[:-1], bounds[1:]))  # the largest block
    kk = min(k + 1, n)
    if with_ranks:  # a longer candidate list gives more ranks without recomputing rows
        kk = min(n, max(kk, _RANK_CANDIDATES))
    if use_torch:
        XT = X.T
        top = _TorchTopK(n, kk, X.device, b)
    else:
        XT = np.ascontiguousarray(X.T)
        top = _HeapTopK(n, kk) if faiss is not None else _TorchTopK(n, kk, torch.device("cpu"), _PIECE)
    # last block first: a block's columns then reach later rows whose heaps already hold their own
    # block's scores, so few of them can enter (see _HeapTopK.add_columns)
    with _faiss_threads(1 if not use_torch else None):
        _symmetric_blocks(X, XT, v, bounds, b, top, block_bytes, use_torch)
    cand_v, cand_i = top.result()

    cand_v, cand_i = _sort_candidates(cand_v, cand_i)
    out_v, out_i = np.ascontiguousarray(cand_v[:, :k]), np.ascontiguousarray(cand_i[:, :k])
    if kk > k:
        tie = np.flatnonzero(cand_v[:, k - 1] == cand_v[:, k])
        for rows, S in _full_rows(X, XT, v, tie, b):
            S = S.cpu().numpy() if use_torch else S
            for a, row in enumerate(rows):
                out_v[row], out_i[row] = _exact_row(S[a], k)
    ranks = None
    if with_ranks:
        order, counts, starts = _label_layout(labels)
        width = int(counts.max())
        big = n if max_rank is None else int(max_rank)
        # a positive among the k neighbours gives the rank directly (as in _block_ranks); so does the
        # first positive further down the sorted candidates when its score beats the last candidate's
        # (every item ranked before it is then a candidate); lone items have none; only the other
        # rows need their full score row
        same = labels[out_i] == labels[:, None]
        found = same.any(1)
        ranks = np.where(found, same.argmax(1), -1).astype(np.int64)
        rest = np.flatnonzero(~found & (counts[labels] > 1))
        if kk > k + 1 and len(rest):
            ci, cv = cand_i[rest], cand_v[rest]
            pos_same = (labels[ci] == labels[rest][:, None]) & (ci >= 0) & (ci != rest[:, None])
            pos = pos_same.argmax(1)
            best = cv[np.arange(len(rest)), pos]
            ok = pos_same.any(1) & (pos >= k) & (best > cv[:, -1])
            if not use_torch:  # as _block_ranks reports ranks >= big: the count of strictly higher scores
                above = np.count_nonzero(cv > best[:, None], axis=1)
                pos = np.where(above >= big, above, pos)
            ranks[rest[ok]] = pos[ok]
            rest = rest[~ok]
            del ci, cv, pos_same
        todo = rest
        top = cand_v = cand_i = None  # free the candidate lists before the rows recomputed below
        for rows, S in _full_rows(X, XT, v, todo, b):
            ranks[rows] = _block_ranks(S, rows, out_i[rows], labels, order, counts, starts, width, big, use_torch)
    return KnnResult(out_i, out_v, ranks, name, symmetric=True)


def _select_cpu(S: np.ndarray, kk: int) -> Tuple[np.ndarray, np.ndarray]:
    """kk best scores per row: faiss' C++ heap if available (fast for small k), else torch.topk."""
    m, n = S.shape
    if faiss is not None:
        v = np.empty((m, kk), np.float32)
        i = np.empty((m, kk), np.int64)
        heap = faiss.float_minheap_array_t()  # keeps the kk largest
        heap.k, heap.nh = kk, m
        heap.val, heap.ids = faiss.swig_ptr(v), faiss.swig_ptr(i)
        heap.heapify()
        heap.addn(n, faiss.swig_ptr(S), 0, 0, m)
        heap.reorder()  # sorted by score, so only tied rows need re-sorting
        return v, i
    tv, ti = torch.topk(torch.from_numpy(S), kk, dim=1)
    return tv.numpy(), ti.numpy()


def _block_ranks(S, rows, nbr, labels, order, counts, starts, width, big, use_torch) -> np.ndarray:
    """Rank of each row's nearest positive under (score desc, index asc), by counting, not sorting.

    Rows whose nearest positive is already among the k neighbours `nbr` read it from there (exact,
    free); only the others are counted: #scores above the best positive, plus the lower-index items
    tied with it (that second pass only for rows where the rank could still be < big).
    """
    P = _positive_block(labels, starts, counts, order, rows, width)  # self-padded; S[self] = -inf
    if use_torch:
        Pt = torch.as_tensor(P, device=S.device)
        Sp = torch.gather(S, 1, Pt)
        best = Sp.max(1, keepdim=True).values
        p = torch.where(Sp == best, Pt, torch.full_like(Pt, S.shape[1])).min(1, keepdim=True).values
        n_gt = (S > best).sum(1)
        cols = torch.arange(S.shape[1], device=S.device)[None, :]
        n_eq = ((S == best) & (cols < p)).sum(1)
        rank = (n_gt + n_eq).cpu().numpy()
        lone = ~torch.isfinite(best[:, 0]).cpu().numpy()
        rank[lone] = -1
        return rank
    same = labels[nbr] == labels[rows][:, None]
    found = same.any(1)
    rank = np.where(found, same.argmax(1), -1).astype(np.int64)
    todo = np.flatnonzero(~found)
    if len(todo) == 0:
        return rank
    # counting passes over whole rows dominate here: no copy when every row needs counting (the
    # symmetric scan recomputes only such rows), one pass for ">" and one for "==", and the
    # index-aware tie count only for the rare rows where another item ties the best positive exactly
    St = S if len(todo) == len(rows) else S[todo]
    Pt = P[todo]
    Sp = np.take_along_axis(St, Pt, 1)
    best = Sp.max(1)
    lone = ~np.isfinite(best)
    p = np.where(Sp == best[:, None], Pt, S.shape[1]).min(1)
    n_gt = np.count_nonzero(St > best[:, None], axis=1).astype(np.int64)
    n_eq = np.count_nonzero(St == best[:, None], axis=1)  # p itself included
    for a in np.flatnonzero((n_eq > 1) & (n_gt < big) & ~lone):
        n_gt[a] += np.count_nonzero(St[a, :p[a]] == best[a])
    n_gt[lone] = -1
    rank[todo] = n_gt
    return rank
