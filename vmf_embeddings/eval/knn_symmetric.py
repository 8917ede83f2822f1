"""The symmetric kNN scan: one triangle of the score matrix serves both rows' running top-k.

`knn.knn_self` runs it for the ``blas`` and ``torch`` backends (the default for k < 64, ``symmetric=True``
forces it, ``symmetric=False`` turns it off) when the score matrix is a Gram matrix -- Q = R (cosine, vmf), or
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
from typing import Optional, Tuple

import numpy as np
import torch

from .knn import KnnResult, _block_ranks, _block_rows, _exact_row, _label_layout, _sort_candidates, faiss

#: above _FILTER_MAX_KK candidates per row the symmetric scan hands a tile's scores to the later rows'
#: heaps through a transposed copy made in _PIECE x _TILE pieces (a plain strided copy of a large block
#: ran ~4x slower on a 2-core Xeon); at or below it, it picks the few scores that can enter a row's
#: top-k from the tile as it lies. Without faiss, CPU torch.topk merges take _PIECE columns at a time
_PIECE = 512
_TILE = 128
_FILTER_MAX_KK = 64
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


def gram_form(q, r):
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

        S is one column tile of the scan (`_column_tiles` bounds its width), offered in one heap call. For small
        k, only scores above a row's current (k + 1)-th best can enter its heap (equal ones neither), so those
        are picked from S as it lies, cheaper than transposing it, and handed to the heaps padded with -inf;
        for large k so many pass that a tiled transposed copy is cheaper.
        """
        m, w = S.shape
        if self.buf.size < m * w:
            self.buf = np.empty(m * w, np.float32)
        if self.kk > _FILTER_MAX_KK:
            T = self.buf[: w * m].reshape(w, m)
            for p in range(0, w, _PIECE):
                for t in range(0, m, _TILE):
                    src, dst = S[t:t + _TILE, p:p + _PIECE].T, T[p:p + _PIECE, t:t + _TILE]
                    if offset is None:
                        np.copyto(dst, src)
                    else:
                        np.add(src, offset[None, t:t + _TILE], out=dst)
            self.add_rows(T, row0, col0)
            return
        part = S if offset is None else np.add(S, offset[:, None], out=self.buf[: m * w].reshape(m, w))
        top = self.v[row0:row0 + w, 0]  # each heap's smallest kept score
        ai, ji, vals = _above(part, top)
        if len(ai) == 0:
            return
        lo, hi = int(ji[0]), int(ji[-1]) + 1
        cnt = np.bincount(ji - lo, minlength=hi - lo)
        width = int(cnt.max())
        pos = np.arange(len(ji)) - (np.cumsum(cnt) - cnt)[ji - lo]
        V = np.full((hi - lo, width), -np.inf, np.float32)
        ids = np.full((hi - lo, width), -1, np.int64)
        V[ji - lo, pos] = vals
        ids[ji - lo, pos] = ai + col0
        self.heap.addn_with_ids(width, faiss.swig_ptr(V), faiss.swig_ptr(ids), width, int(row0 + lo), hi - lo)

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
    """Offer every score of one triangle of S = X X^T (+ v_j) to both its row's and its column's running top-k.

    On CPU each block is multiplied in column tiles that stay in cache while the heaps read them (feeding heaps
    from a block in main memory took ~2x as long); with torch (CUDA) a block is one tile.
    """
    n = int(X.shape[0])
    buf = None
    for s, e in reversed(list(zip(bounds[:-1], bounds[1:]))):
        m = e - s
        cuts = [s, n] if use_torch else _column_tiles(s, n, m, block_bytes)
        for c0, c1 in zip(cuts[:-1], cuts[1:]):
            if use_torch:
                G = X[s:e] @ XT[:, c0:c1]
            else:
                if buf is None:  # any block's widest tile: _column_tiles stretches the last by < _MIN_COLS
                    buf = np.empty(b * min(n, _TILE_COLS + _MIN_COLS), np.float32)
                G = np.matmul(X[s:e], XT[:, c0:c1], out=buf[: m * (c1 - c0)].reshape(m, c1 - c0))
            if c1 > e:  # later rows against this block's columns, from the transpose (before v is added)
                a0 = max(e, c0)
                top.add_columns(G[:, a0 - c0:], a0, s, None if v is None else v[s:e])
            if v is not None:
                G += v[None, c0:c1]
            if c0 < e:  # the block's own diagonal
                diag = torch.arange(c0, min(c1, e), device=X.device) if use_torch else np.arange(c0, min(c1, e))
                G[diag - s, diag - c0] = -math.inf
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


def scan_symmetric(X, v, k, labels, with_ranks, max_rank, name, block_bytes) -> KnnResult:
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
        top = cand_v = cand_i = None  # free the candidate lists before the rows recomputed below
        for rows, S in _full_rows(X, XT, v, rest, b):
            ranks[rows] = _block_ranks(S, rows, out_i[rows], labels, order, counts, starts, width, big, use_torch)
    return KnnResult(out_i, out_v, ranks, name, symmetric=True)
