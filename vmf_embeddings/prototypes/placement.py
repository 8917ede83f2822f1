"""`place_prototypes`: one entry point for every placement rule, with the checks every result gets.

Methods (K classes, D dimensions):
  converged       the runner's default: the provably optimal closed form where one exists (regular
                  simplex for K <= D+1, cross-polytope for K <= 2D, circle for D = 2), else the annealed
                  smooth-max optimiser (`annealed`). With a semantic prior it always optimises.
  annealed        the annealed smooth-max optimiser alone (no closed-form shortcut).
  paper           the official rule: projected GD on L_HP, lr 0.1, 10,000 steps, seed 300 (faithful).
  lbfgs, slsqp    SciPy alternatives (`scipy_placement`).
  simplex, cross_polytope, circle   the closed forms themselves.

Every result is logged (max cosine, mean nearest-neighbour cosine, gap to the simplex bound) and refused
when its max cosine exceeds 0.99 (collapsed prototypes: the paper's rule can drive them together, e.g. at D = 2).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

import numpy as np

from vmf_embeddings.prototypes import closed_form
from vmf_embeddings.prototypes.annealed import annealed_placement
from vmf_embeddings.prototypes.geometry import COLLAPSE_LIMIT, check_prototypes, placement_stats
from vmf_embeddings.prototypes.paper_rule import paper_rule
from vmf_embeddings.prototypes.privileged import RankingPrior
from vmf_embeddings.prototypes.scipy_placement import lbfgs_placement, slsqp_placement

log = logging.getLogger(__name__)

#: the official script's placement seed (psmmettes/hpn prototypes.py `-s 300`)
PAPER_SEED = 300


def _converged(n_classes: int, dim: int, seed: int, prior: Optional[RankingPrior] = None, **options) -> np.ndarray:
    exact = None if prior is not None else closed_form.best_closed_form(n_classes, dim)
    if exact is not None:
        return exact
    return annealed_placement(n_classes, dim, seed=seed, prior=prior, **options)


def _closed(builder: Callable[[int, int], np.ndarray]):
    def run(n_classes: int, dim: int, seed: int, prior: Optional[RankingPrior] = None) -> np.ndarray:
        if prior is not None:
            raise ValueError("closed-form layouts cannot use word vectors; pick converged, annealed, paper or lbfgs")
        return builder(n_classes, dim)

    return run


PLACEMENTS: Dict[str, Callable[..., np.ndarray]] = {
    "converged": _converged,
    "annealed": annealed_placement,
    "paper": paper_rule,
    "lbfgs": lbfgs_placement,
    "slsqp": slsqp_placement,
    "simplex": _closed(closed_form.regular_simplex),
    "cross_polytope": _closed(closed_form.cross_polytope),
    "circle": _closed(closed_form.circle),
}


@dataclass
class Placement:
    """A placement result: K x D float64 unit rows plus what produced it and how good it is."""

    prototypes: np.ndarray
    method: str
    seed: int
    seconds: float
    stats: Dict[str, float]
    options: Dict[str, Any] = field(default_factory=dict)


def place_prototypes(n_classes: int, dim: int, method: str = "converged", seed: int = PAPER_SEED,
                     prior: Optional[RankingPrior] = None, collapse_limit: float = COLLAPSE_LIMIT,
                     **options: Any) -> Placement:
    """Place K prototypes on S^(D-1); `options` go to the chosen rule (steps, learning_rate, ...).

    Raises CollapsedPrototypesError when the max cosine exceeds `collapse_limit`.
    """
    if method not in PLACEMENTS:
        raise ValueError(f"unknown placement method {method!r}; choose one of {sorted(PLACEMENTS)}")
    n_classes, dim = int(n_classes), int(dim)
    if n_classes < 1 or dim < 1:
        raise ValueError(f"placement needs K >= 1 and D >= 1, got K={n_classes}, D={dim}")
    options = {k: v for k, v in options.items() if v is not None}
    start = time.perf_counter()
    prototypes = PLACEMENTS[method](n_classes, dim, seed=int(seed), prior=prior, **options)
    seconds = time.perf_counter() - start
    stats = placement_stats(prototypes)
    stats["seconds"] = seconds
    log.info(
        "placed K=%d prototypes in D=%d (%s, seed %d) in %.2fs: max cos %.4f, mean NN cos %.4f, simplex bound "
        "%.4f (gaps %.4f / %.4f)%s",
        n_classes, dim, method, seed, seconds, stats["max_cosine"], stats["mean_nn_cosine"],
        stats["simplex_bound"], stats["gap_to_simplex"], stats["mean_nn_gap_to_simplex"],
        "" if np.isnan(stats["known_optimum"]) else f", known optimum {stats['known_optimum']:.4f}",
    )
    check_prototypes(prototypes, n_classes, dim, collapse_limit=collapse_limit)
    return Placement(prototypes=np.asarray(prototypes, dtype=np.float64), method=method, seed=int(seed),
                     seconds=seconds, stats=stats, options=options)
