"""The projection analysis of the spherization paper's comparison table (#err, #ovlp, ratio; Kim & Kim, NeurIPS 2022,
README "Performance of Angle-Based Operators Applied to Penultimate Layer on CIFAR10").

RECONSTRUCTION. The released code (github.com/GIST-IRR/spherization_layer) has no implementation and the paper's text
defining the counts was not available, so the rule below is ours, not the authors':

- A test sample i *overlaps* when the projection step maps it to the same point as another sample j, within a float
  tolerance, while their inputs to the projection differ:
      |out_i - out_j| <= tol * max(|out_i|, |out_j|)   and   |in_i - in_j| > tol * max(|in_i|, |in_j|)
  (Euclidean norms of the flattened rows). Typical causes are saturation and clamping: a cosine clamped at
  +-(1 - 1e-4), a sigmoid angle pinned at phi_L or pi/2 (all units saturated: x = (0, ..., 0, r)), or, for a direct
  projection, two inputs differing only in norm.
- #ovlp (`n_overlap`) counts the overlapping test samples, #err (`n_overlap_errors`) the misclassified ones among them,
  ratio (`overlap_error_ratio`) = #err / #ovlp; NaN when nothing overlaps (0 / 0; the paper prints 0.00 for its
  "original" row, which has no projection).

What the projection is (written at extraction as `projection_input` / `projection_output` in the embeddings file):
the angular heads' per-class operator values g_c of the embedding (vmf_embeddings/methods/angular.py), or the
spherization layer's pre-activation z and spherized output x (vmf_embeddings/layers/spherization.py `recording_projection`; test
split only). The tolerance is `eval.overlap_tol` (default 1e-6, relative: about 8 float32 ulps, so only values equal
to float32 precision count as the same point). Distances are computed in float64 from the stored float32 arrays.
Extract with amp=false: under bf16 autocast the spherized x is stored at bf16 precision, and points equal at that
precision would count as one (extraction warns).

Cost: never N x N at once. Rows are sorted along a fixed random direction u; since |u.(a - b)| <= |a - b|, the
partners of a row lie in a window of that order, so each block of `block` rows is compared (a float64 expansion
|a|^2 + |b|^2 - 2 a.b, a loose filter) only with the columns of its window, in chunks. Candidate pairs are then decided
by direct differences, a few partners per row at a time, stopping at the first partner that qualifies. Spread-out
outputs give windows of a few rows (about N log N work); a collapsed cluster of m samples costs about m x m filter
entries, in blocks.
"""

from __future__ import annotations

from typing import Dict

import numpy as np

#: pairs x dims per direct-difference chunk (float64: 32 MB)
_PAIR_BUDGET = 1 << 22
_EPS = float(np.finfo(np.float64).eps)


def _rows(array, name: str, n=None) -> np.ndarray:
    a = np.asarray(array)
    if a.ndim == 0:
        raise ValueError(f"{name} must have one row per sample, got a scalar")
    a = a.reshape(a.shape[0], -1)
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{name} has {a.shape[0]} rows but there are {n} samples")
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds NaN or inf")
    return a


def _pair_sq_dist(x: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """|x_i - x_j|^2 (float64, direct differences) for index pairs, in chunks."""
    out = np.empty(len(i), dtype=np.float64)
    step = max(1, _PAIR_BUDGET // max(1, x.shape[1]))
    for s in range(0, len(i), step):
        diff = x[i[s:s + step]].astype(np.float64) - x[j[s:s + step]].astype(np.float64)
        out[s:s + step] = np.einsum("ij,ij->i", diff, diff)
    return out


def _sq_norms(x: np.ndarray) -> np.ndarray:
    """|x_i|^2 in float64, in row chunks."""
    step = max(1, _PAIR_BUDGET // max(1, x.shape[1]))
    return np.concatenate([np.einsum("ij,ij->i", c, c) for c in
                           (x[s:s + step].astype(np.float64) for s in range(0, x.shape[0], step))])


def overlap_mask(inputs, outputs, tol: float = 1e-6, block: int = 512, seed: int = 0) -> np.ndarray:
    """N booleans: sample i overlaps (module docstring). `inputs` N x ..., `outputs` N x ... (rows flattened)."""
    tol = float(tol)
    if not (np.isfinite(tol) and 0 <= tol < 1):
        raise ValueError(f"overlap tolerance {tol!r} must lie in [0, 1)")
    out = _rows(outputs, "projection_output")
    n = out.shape[0]
    inp = _rows(inputs, "projection_input", n)
    found = np.zeros(n, dtype=bool)
    if n < 2:
        return found
    tol2 = tol * tol
    out_sq, in_sq = _sq_norms(out), _sq_norms(inp)
    dim = out.shape[1]
    direction = np.random.default_rng(seed).standard_normal(dim)
    direction /= np.linalg.norm(direction)
    step = max(1, _PAIR_BUDGET // dim)
    proj = np.concatenate([out[s:s + step].astype(np.float64) @ direction for s in range(0, n, step)])
    order = np.argsort(proj, kind="stable")
    sorted_proj = proj[order]
    max_norm = float(np.sqrt(out_sq.max()))
    # every truly near pair lies within this window of the sorted order (|u.(a-b)| <= |a-b| plus rounding of u.a)
    window = max_norm * (tol + 4 * (dim + 2) * _EPS) + 1e-300
    col_chunk = max(1, _PAIR_BUDGET // max(1, dim))

    for start in range(0, n, int(block)):
        rows = order[start:start + int(block)]
        lo = int(np.searchsorted(sorted_proj, sorted_proj[start] - window, side="left"))
        hi = int(np.searchsorted(sorted_proj, sorted_proj[start + len(rows) - 1] + window, side="right"))
        row_vecs = out[rows].astype(np.float64)
        pair_rows, pair_cols = [], []
        for c0 in range(lo, hi, col_chunk):
            cols = order[c0:min(hi, c0 + col_chunk)]
            gram = row_vecs @ out[cols].astype(np.float64).T
            nr, nc = out_sq[rows][:, None], out_sq[cols][None, :]
            expansion = nr + nc - 2.0 * gram
            # a loose filter: the expansion's rounding error is below 2 (dim + 1) eps (|a|^2 + |b|^2)
            near = expansion <= tol2 * np.maximum(nr, nc) + 2 * (dim + 1) * _EPS * (nr + nc)
            near &= rows[:, None] != cols[None, :]
            r, c = np.nonzero(near)
            pair_rows.append(r)
            pair_cols.append(cols[c])
        local = np.concatenate(pair_rows)
        if not len(local):
            continue
        partner = np.concatenate(pair_cols)
        sort = np.argsort(local, kind="stable")
        local, partner = local[sort], partner[sort]
        first = np.searchsorted(local, np.arange(len(rows)), side="left")
        rank = np.arange(len(local)) - first[local]
        done = np.zeros(len(rows), dtype=bool)
        offset, width, last = 0, 4, int(rank.max())
        while offset <= last:  # a few partners per row at a time; a row stops at its first qualifying partner
            pick = (rank >= offset) & (rank < offset + width) & ~done[local]
            if pick.any():
                li, j = local[pick], partner[pick]
                i = rows[li]
                same_out = _pair_sq_dist(out, i, j) <= tol2 * np.maximum(out_sq[i], out_sq[j])
                differ_in = np.zeros(len(i), dtype=bool)
                if same_out.any():
                    k = np.flatnonzero(same_out)
                    differ_in[k] = _pair_sq_dist(inp, i[k], j[k]) > tol2 * np.maximum(in_sq[i[k]], in_sq[j[k]])
                done[np.unique(li[same_out & differ_in])] = True
            offset += width
            width *= 2
        found[rows[done]] = True
    return found


def projection_overlap(inputs, outputs, correct, tol: float = 1e-6, block: int = 512) -> Dict[str, float]:
    """{"n_overlap": #ovlp, "n_overlap_errors": #err, "overlap_error_ratio": #err / #ovlp (NaN when 0 / 0)}.

    `inputs` / `outputs`: the projection's input and output per sample (N rows each); `correct`: N booleans (the
    prediction is right). Reconstruction of the paper's counts (module docstring)."""
    correct = np.asarray(correct).reshape(-1).astype(bool)
    mask = overlap_mask(inputs, outputs, tol=tol, block=block)
    if len(correct) != len(mask):
        raise ValueError(f"correct has {len(correct)} entries but there are {len(mask)} samples")
    n_overlap = int(mask.sum())
    n_errors = int((mask & ~correct).sum())
    return {"n_overlap": n_overlap, "n_overlap_errors": n_errors,
            "overlap_error_ratio": float(n_errors / n_overlap) if n_overlap else float("nan")}


__all__ = ["overlap_mask", "projection_overlap"]
