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

Symmetric scan (one triangle of the score matrix; ``blas`` and ``torch``; the default for k < 64,
``symmetric=True`` forces it, ``symmetric=False`` turns it off): `knn_symmetric`, with its measurements.
"""

from __future__ import annotations

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
#: knn_self's default runs the symmetric scan for k + 1 <= _AUTO_MAX_KK (measurements: knn_symmetric)
_AUTO_MAX_KK = 64


@dataclass
class KnnResult:
    """k nearest neighbours of every item, self excluded.

    indices: N x k int64, ordered by (distance, index) ascending.
    scores: N x k float32 search scores <Q_i, R_j> (larger = nearer; see geometry.scores_to_distances).
    first_positive_rank: N int64 or None; number of other items ranked strictly before i's nearest
        same-label item (0 = the nearest neighbour is a positive); -1 when i has no positive.
    backend: the backend that ran.
    symmetric: whether the symmetric scan (`knn_symmetric`) computed it.
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
    symmetric: True multiplies one triangle of the score matrix when it has a Gram form
    (`knn_symmetric`), False runs the plain row-block scan, None (default) the symmetric one for k < 64,
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
    from .knn_symmetric import gram_form, scan_symmetric  # here: it builds on this module's helpers

    use_torch = name == "torch"
    if symmetric is None:
        symmetric = k + 1 <= _AUTO_MAX_KK
    if use_torch:
        q, r = torch.as_tensor(q).to(dev, torch.float32), torch.as_tensor(r).to(dev, torch.float32)
        prec = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")
    else:
        q, r = _as_numpy32(q), _as_numpy32(r)
    try:
        form = gram_form(q, r) if symmetric else None
        if form is not None:
            return scan_symmetric(*form, k, labels, with_ranks, max_rank, name, block_bytes)
        return _scan_plain(q, r, k, labels, with_ranks, max_rank, name, dev, block_bytes)
    finally:
        if use_torch:
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
