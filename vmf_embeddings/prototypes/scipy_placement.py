"""SciPy alternatives, as the third-party HPN reimplementation (github.com/Abhishaike/HyperProtoNetReproduce)
offers them (BFGS, SLSQP), with its two weaknesses removed: analytic gradients instead of finite differences, and one
unit-norm constraint per prototype instead of the single aggregate sum_i |‖p_i‖ - 1| = 0.

Both minimise the same annealed smooth max as `annealed` (tau * logsumexp of pairwise cosines / tau,
tau from 0.3 to 1e-3 over `rounds` warm-started rounds), because L_HP's row max is not differentiable
and quasi-Newton methods stall on it.

* `lbfgs`: unconstrained L-BFGS-B on X, prototypes = rows of X renormalised inside the objective
  (the reimplementation's trick). Fast; reaches the simplex and cross-polytope values within 1e-4.
* `slsqp`: SLSQP on P with K equality constraints ‖p_i‖² = 1. SciPy's SLSQP is dense in the K*D
  variables, so it is slow (10-30 s at K=100, D=10) and refused above `max_variables` (1,500).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from scipy.optimize import minimize

from vmf_embeddings.prototypes.geometry import normalize_rows, single_threaded
from vmf_embeddings.prototypes.privileged import RankingPrior


def _smooth_max(p: np.ndarray, tau: float, prior: Optional[RankingPrior]):
    """(tau * logsumexp_{i != j} c_ij / tau [+ prior], gradient w.r.t. the rows of p taken as given)."""
    cos = p @ p.T
    np.fill_diagonal(cos, -np.inf)
    top = cos.max()
    weights = np.exp((cos - top) / tau)
    total = weights.sum()
    value = tau * np.log(total) + top
    grad = (weights + weights.T) @ p / total
    if prior is not None:
        prior_value, prior_grad = prior.loss_and_grad(p)
        value, grad = value + prior_value, grad + prior_grad
    return float(value), grad


def _taus(rounds: int, tau_start: float, tau_end: float) -> np.ndarray:
    return np.geomspace(tau_start, tau_end, max(1, int(rounds)))


@single_threaded
def lbfgs_placement(n_classes: int, dim: int, seed: int = 300, rounds: int = 10, maxiter: int = 100,
                    tau_start: float = 0.3, tau_end: float = 1e-3, prior: Optional[RankingPrior] = None) -> np.ndarray:
    """Annealed L-BFGS-B on unnormalised X (objective of normalize(X)), analytic gradient."""
    x = normalize_rows(np.random.default_rng(int(seed)).standard_normal((n_classes, dim)))
    if n_classes < 2:
        return x

    def objective(flat: np.ndarray, tau: float):
        raw = flat.reshape(n_classes, dim)
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        p = raw / norms
        value, grad = _smooth_max(p, tau, prior)
        grad = (grad - (grad * p).sum(axis=1, keepdims=True) * p) / norms  # chain rule through the norm
        return value, grad.ravel()

    for tau in _taus(rounds, tau_start, tau_end):
        result = minimize(objective, x.ravel(), args=(tau,), jac=True, method="L-BFGS-B",
                          options={"maxiter": int(maxiter)})
        x = normalize_rows(result.x.reshape(n_classes, dim))
    return x


@single_threaded
def slsqp_placement(n_classes: int, dim: int, seed: int = 300, rounds: int = 6, maxiter: int = 30,
                    tau_start: float = 0.3, tau_end: float = 1e-3, max_variables: int = 1500,
                    prior: Optional[RankingPrior] = None) -> np.ndarray:
    """Annealed SLSQP on P with one unit-norm equality constraint per prototype."""
    if n_classes * dim > max_variables:
        raise ValueError(
            f"slsqp placement is dense in K*D={n_classes * dim} variables (limit {max_variables}); "
            f"use placement=converged or lbfgs"
        )
    p = normalize_rows(np.random.default_rng(int(seed)).standard_normal((n_classes, dim)))
    if n_classes < 2:
        return p
    rows = np.repeat(np.arange(n_classes), dim)
    cols = np.arange(n_classes * dim)

    def unit_norm(flat: np.ndarray) -> np.ndarray:
        return (flat.reshape(n_classes, dim) ** 2).sum(axis=1) - 1.0

    def unit_norm_jac(flat: np.ndarray) -> np.ndarray:
        jac = np.zeros((n_classes, n_classes * dim))
        jac[rows, cols] = 2.0 * flat
        return jac

    def objective(flat: np.ndarray, tau: float):
        value, grad = _smooth_max(flat.reshape(n_classes, dim), tau, prior)
        return value, grad.ravel()

    constraint = {"type": "eq", "fun": unit_norm, "jac": unit_norm_jac}
    for tau in _taus(rounds, tau_start, tau_end):
        result = minimize(objective, p.ravel(), args=(tau,), jac=True, method="SLSQP",
                          constraints=[constraint], options={"maxiter": int(maxiter)})
        p = normalize_rows(result.x.reshape(n_classes, dim))
    return p
