"""Prototype statistics, the simplex bound, the closed-form optima and their invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vmf_embeddings.prototypes.closed_form import best_closed_form, circle, cross_polytope, regular_simplex
from vmf_embeddings.prototypes.geometry import (
    CollapsedPrototypesError,
    check_prototypes,
    known_optimum,
    max_cosine,
    mean_nn_cosine,
    normalize_rows,
    placement_stats,
    simplex_bound,
)


def _random(k, d, seed=0):
    return normalize_rows(np.random.default_rng(seed).standard_normal((k, d)))


def test_mean_nn_cosine_matches_a_loop_and_the_code_variant():
    p = _random(9, 4)
    loop = np.mean([max(p[i] @ p[j] for j in range(9) if j != i) for i in range(9)])
    assert mean_nn_cosine(p) == pytest.approx(loop, abs=1e-12)
    # the official code's printed loss: (P P^T + 1) with the diagonal pushed down, row max, mean
    product = p @ p.T + 1.0
    product -= 2.0 * np.diag(np.diag(product))
    assert product.max(axis=1).mean() == pytest.approx(mean_nn_cosine(p) + 1.0, abs=1e-12)


@pytest.mark.parametrize("k,d", [(2, 1), (3, 2), (5, 3), (11, 10), (30, 3), (100, 10), (50, 60)])
def test_simplex_bound_is_never_beaten(k, d):
    """Simplex bound: max cos >= L_HP >= -1/(K-1) for any configuration (random draws and the closed forms)."""
    for seed in range(5):
        p = _random(k, d, seed)
        assert max_cosine(p) >= mean_nn_cosine(p) >= simplex_bound(k) - 1e-12
    exact = best_closed_form(k, d)
    if exact is not None:
        assert max_cosine(exact) >= mean_nn_cosine(exact) >= simplex_bound(k) - 1e-12


@pytest.mark.parametrize("k,d", [(2, 1), (2, 5), (4, 3), (11, 10), (26, 25), (7, 50), (101, 100)])
def test_regular_simplex_is_exact(k, d):
    p = regular_simplex(k, d)
    assert p.shape == (k, d)
    assert np.abs(np.linalg.norm(p, axis=1) - 1).max() < 1e-12  # unit norm
    off = (p @ p.T)[~np.eye(k, dtype=bool)]
    assert np.abs(off + 1.0 / (k - 1)).max() < 1e-12  # exact simplex: every pair, not only the max


@pytest.mark.parametrize("k,d", [(5, 3), (6, 3), (20, 10), (15, 10), (100, 50)])
def test_cross_polytope_is_exact(k, d):
    p = cross_polytope(k, d)
    assert p.shape == (k, d) and max_cosine(p) == 0.0 and known_optimum(k, d) == 0.0


@pytest.mark.parametrize("k", [3, 5, 7, 12, 100])
def test_circle_is_exact(k):
    p = circle(k, 2)
    assert max_cosine(p) == pytest.approx(math.cos(2 * math.pi / k), abs=1e-12)


def test_known_optimum_regimes():
    assert known_optimum(11, 10) == pytest.approx(-0.1)
    assert known_optimum(12, 10) == 0.0 and known_optimum(20, 10) == 0.0
    assert known_optimum(21, 10) is None  # Tammes regime
    assert known_optimum(7, 2) == pytest.approx(math.cos(2 * math.pi / 7))


def test_statistics_are_invariant_to_rotations_and_permutations():
    """L_HP(PQ) = L_HP(P) for orthogonal Q, and row order does not matter."""
    p = _random(20, 6, 1)
    q, _ = np.linalg.qr(np.random.default_rng(2).standard_normal((6, 6)))
    perm = np.random.default_rng(3).permutation(20)
    for other in (p @ q, p[perm]):
        assert mean_nn_cosine(other) == pytest.approx(mean_nn_cosine(p), abs=1e-12)
        assert max_cosine(other) == pytest.approx(max_cosine(p), abs=1e-12)


def test_stats_report_gaps_to_bound_and_optimum():
    stats = placement_stats(regular_simplex(11, 10))
    assert stats["gap_to_simplex"] == pytest.approx(0.0, abs=1e-12)
    assert stats["gap_to_optimum"] == pytest.approx(0.0, abs=1e-12)
    assert stats["mean_nn_gap_to_simplex"] == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(placement_stats(_random(30, 3))["known_optimum"])


def test_check_refuses_collapse_shape_and_norm():
    good = regular_simplex(4, 3)
    check_prototypes(good, 4, 3)
    with pytest.raises(CollapsedPrototypesError, match="max cosine"):
        check_prototypes(np.vstack([good[:3], good[:1]]), 4, 3)  # a duplicated prototype (collapse)
    with pytest.raises(ValueError, match="shape"):
        check_prototypes(good, 4, 4)
    with pytest.raises(ValueError, match="unit norm"):
        check_prototypes(good * 1.01, 4, 3)
