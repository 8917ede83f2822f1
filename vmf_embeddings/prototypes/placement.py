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

Before placing, `check_options` / `infeasible` (with the packing bound `max_cosine_bound`) / `estimate_cost`
tell a caller (scripts/place_prototypes.py) whether a request makes sense and what memory and time it
needs, so it can be refused up front; with
`progress=True` long placements report their steps (a tqdm bar on a terminal, else a log line now and then).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, Optional

import numpy as np

from vmf_embeddings.errors import UserError
from vmf_embeddings.prototypes import annealed as annealed_module
from vmf_embeddings.prototypes import closed_form
from vmf_embeddings.prototypes import paper_rule as paper_rule_module
from vmf_embeddings.prototypes import scipy_placement as scipy_module
from vmf_embeddings.prototypes.annealed import annealed_placement
from vmf_embeddings.prototypes.geometry import COLLAPSE_LIMIT, check_prototypes, placement_stats, simplex_bound
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
                     progress: bool = False, **options: Any) -> Placement:
    """Place K prototypes on S^(D-1); `options` go to the chosen rule (steps, learning_rate, ...).

    Raises CollapsedPrototypesError when the max cosine exceeds `collapse_limit`. `progress` reports
    the optimisation steps (`step_progress`).
    """
    if method not in PLACEMENTS:
        raise ValueError(f"unknown placement method {method!r}; choose one of {sorted(PLACEMENTS)}")
    n_classes, dim = int(n_classes), int(dim)
    if n_classes < 1 or dim < 1:
        raise ValueError(f"placement needs K >= 1 and D >= 1, got K={n_classes}, D={dim}")
    options = {k: v for k, v in options.items() if v is not None}
    start = time.perf_counter()
    total = planned_steps(n_classes, dim, method, options, prior is not None) if progress else 0
    with step_progress(method, total, f"placing K={n_classes} D={dim} ({method})"):
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


# --- checking a request before placing: options, feasibility, memory and time --------------------------


class PlacementRequestError(UserError, ValueError):
    """A placement request that cannot or should not run; the message is one line with the fix."""


#: the function whose keyword options each optimising method takes (closed forms take none)
OPTION_TARGETS: Dict[str, Callable[..., np.ndarray]] = {
    "converged": annealed_placement,
    "annealed": annealed_placement,
    "paper": paper_rule,
    "lbfgs": lbfgs_placement,
    "slsqp": slsqp_placement,
}
CLOSED_FORMS = ("simplex", "cross_polytope", "circle")


def method_options(method: str) -> Dict[str, Any]:
    """{option name: default} of a method's rule: what `options` may set (empty for the closed forms)."""
    target = OPTION_TARGETS.get(method)
    if target is None:
        return {}
    return {name: parameter.default for name, parameter in inspect.signature(target).parameters.items()
            if name not in ("n_classes", "dim", "seed", "prior") and parameter.default is not inspect.Parameter.empty}


def whole_number(value: Any) -> Optional[int]:
    """`value` as an int if it is a whole number (an int or an integral float, never a bool), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def check_options(method: str, options: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Validate `options` for `method` against its rule's signature: known names, whole numbers where the
    default is an int, finite positive numbers otherwise. Returns them (values unchanged, so the cache key
    matches training's) without the null ones; raises PlacementRequestError."""
    if method not in PLACEMENTS:
        raise PlacementRequestError(f"method={method}: unknown placement rule; choose one of {', '.join(PLACEMENTS)}")
    known = method_options(method)
    out: Dict[str, Any] = {}
    for name, value in dict(options or {}).items():
        if value is None:
            continue
        if name not in known:
            valid = ", ".join(sorted(known)) if known else "none (a closed form has no parameters)"
            raise PlacementRequestError(f"options.{name}: not an option of method={method}; valid: {valid}")
        default = known[name]
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise PlacementRequestError(f"options.{name}={value}: must be true or false")
            out[name] = value
            continue
        if isinstance(default, int):
            whole = whole_number(value)
            if whole is None or whole < 0:
                raise PlacementRequestError(f"options.{name}={value}: must be an integer >= 0 (default {default})")
            out[name] = value
            continue
        low = 0.0 if name == "momentum" else None  # momentum may be 0; rates and temperatures must be > 0
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or value < 0 or (low is None and value == 0)):
            bound = ">= 0" if low is not None else "> 0"
            raise PlacementRequestError(f"options.{name}={value}: must be a finite number {bound} (default {default})")
        out[name] = value
    return out


def _cap_fraction(radius: float, dim: int) -> float:
    """Fraction of the sphere S^(D-1) covered by a cap of angular radius `radius` <= pi/2."""
    from scipy.special import betainc

    return 0.5 * float(betainc((dim - 1) / 2.0, 0.5, math.sin(radius) ** 2))


def max_cosine_bound(n_classes: int, dim: int) -> float:
    """A lower bound on the max cosine of any K unit vectors in R^D (spherical-cap packing): caps of
    angular radius theta/2 around the prototypes are disjoint, so K x cap(theta/2) <= the sphere. Exact
    for D = 2 (cos(2 pi / K)); the simplex / cross-polytope optimum where those fit (K <= 2D)."""
    if n_classes <= dim + 1:
        return simplex_bound(n_classes)
    if n_classes <= 2 * dim:
        return 0.0
    if dim < 2:
        return 1.0
    low, high = 0.0, math.pi  # the largest angle theta that K disjoint caps of radius theta/2 allow
    for _ in range(100):
        mid = 0.5 * (low + high)
        if n_classes * _cap_fraction(mid / 2, dim) <= 1.0:
            low = mid
        else:
            high = mid
    return math.cos(high)


def infeasible(n_classes: int, dim: int, method: str, options: Optional[Dict[str, Any]] = None,
               with_prior: bool = False, collapse_limit: float = COLLAPSE_LIMIT) -> Optional[str]:
    """Why (K, D, method) cannot give separated prototypes, or None. One line, with the fix."""
    options = dict(options or {})
    if dim == 1 and n_classes > 2:
        return (f"D=1: a line holds only 2 separated prototypes (+1 and -1), so K={n_classes} would collapse; "
                f"use D >= 2")
    bound = max_cosine_bound(n_classes, dim)
    if bound > collapse_limit:
        need = dim + 1
        while max_cosine_bound(n_classes, need) > collapse_limit:
            need += 1
        return (f"K={n_classes} prototypes cannot stay apart in D={dim}: any placement has max cosine >= {bound:.4f} "
                f"(spherical-cap packing bound), above the collapse limit {collapse_limit}; use D >= {need} "
                f"or fewer classes")
    if method in CLOSED_FORMS and with_prior:
        return f"method={method} is a closed form and cannot use word_vectors; use converged, annealed, paper or lbfgs"
    if method == "simplex" and n_classes > dim + 1:
        return f"method=simplex needs K <= D+1 (K={n_classes}, D={dim}); use method=converged or D >= {n_classes - 1}"
    if method == "cross_polytope" and n_classes > 2 * dim:
        return (f"method=cross_polytope has only 2D={2 * dim} points, K={n_classes} requested; use method=converged "
                f"or D >= {math.ceil(n_classes / 2)}")
    if method == "circle" and dim < 2:
        return "method=circle needs D >= 2"
    if method == "slsqp":
        limit = int(options.get("max_variables", method_options("slsqp")["max_variables"]))
        if n_classes * dim > limit:
            return (f"method=slsqp is dense in K*D={n_classes * dim} variables (options.max_variables={limit}); "
                    f"use method=converged or lbfgs")
    return None


def _uses_closed_form(n_classes: int, dim: int, method: str, with_prior: bool) -> bool:
    if method in CLOSED_FORMS:
        return True
    return method == "converged" and not with_prior and (n_classes <= 2 * dim or dim == 2)


def planned_steps(n_classes: int, dim: int, method: str, options: Optional[Dict[str, Any]] = None,
                  with_prior: bool = False) -> int:
    """Optimisation steps (objective evaluations for lbfgs / slsqp: a nominal count) a placement runs."""
    if method not in OPTION_TARGETS or _uses_closed_form(n_classes, dim, method, with_prior) or n_classes < 2:
        return 0
    o = {**method_options(method), **dict(options or {})}
    if method in ("converged", "annealed"):
        return int(o["steps"]) * max(1, int(o["restarts"]))
    if method == "paper":
        return int(o["steps"])
    return max(1, int(o["rounds"])) * int(o["maxiter"])


@dataclass
class Cost:
    """Estimated peak memory (bytes) and wall time (seconds) of a placement, with what dominates each."""

    bytes: float
    seconds: float
    memory_detail: str
    time_detail: str

    @property
    def gigabytes(self) -> float:
        return self.bytes / 1e9


#: per-step nanoseconds per K^2 entry (a + b D), measured single-threaded on a 2-core machine: the smooth max
#: (annealed, lbfgs, slsqp) and the paper's nearest-neighbour gradient (+ ~30 us a step); beyond K ~ 2,000
#: the K x K matrices leave the CPU caches and a step costs 2-4x more per entry
SMOOTH_STEP_NS = {"cached": (15.0, 0.06), "large": (40.0, 0.06)}
PAPER_STEP_NS = {"cached": (1.5, 0.025), "large": (6.0, 0.025)}
CACHED_K = 2000


def estimate_cost(n_classes: int, dim: int, method: str = "converged", options: Optional[Dict[str, Any]] = None,
                  with_prior: bool = False, n_positives: Optional[int] = 2) -> Cost:
    """Rough peak memory and time of `place_prototypes(K, D, method, **options)` from K and D alone.

    The optimisers hold a few K x K float64 matrices per step (pairwise cosines, softmax weights); the
    closed forms and the final statistics a couple; the word-vector prior adds K x n x (K-1-n) triplet
    arrays (K^3 with n_positives=None); SLSQP is dense in its K*D variables. Times use the per-step costs
    measured above and are order-of-magnitude figures (a busy machine is slower).
    """
    k, d = float(n_classes), float(dim)
    kk = 8.0 * k * k  # one K x K float64 matrix
    memory, memory_detail = 3 * kk + 6 * 8.0 * k * d, "3 K x K float64 matrices (statistics)"
    stats_seconds = 3 * k * k * (10.0 + 0.05 * d) * 1e-9
    seconds, time_detail = stats_seconds, "closed form"
    prior_bytes = prior_step = 0.0
    if with_prior:
        if n_positives is None:
            prior_bytes, prior_step = 33.0 * k ** 3, 50e-9 * k ** 3
        else:
            prior_bytes, prior_step = 32.0 * k * k * n_positives, 40e-9 * k * k * n_positives
    steps = planned_steps(n_classes, dim, method, options, with_prior)
    if _uses_closed_form(n_classes, dim, method, with_prior):
        if method == "simplex" or (method == "converged" and n_classes <= dim + 1):
            memory, memory_detail = max(memory, 4 * kk), "4 K x K float64 matrices (SVD)"
            seconds += 5e-9 * k ** 3
    elif method == "paper":
        a, b = PAPER_STEP_NS["cached" if n_classes <= CACHED_K else "large"]
        step = k * k * (a + b * d) * 1e-9 + 30e-6 + prior_step
        memory, memory_detail = max(memory, 3 * kk + prior_bytes), "3 K x K float64 matrices per step"
        seconds, time_detail = seconds + steps * step, f"{steps} steps x {format_duration(step)}"
    elif method in OPTION_TARGETS:
        a, b = SMOOTH_STEP_NS["cached" if n_classes <= CACHED_K else "large"]
        step = k * k * (a + b * d) * 1e-9 + prior_step
        memory, memory_detail = max(memory, 4 * kk + prior_bytes), "4 K x K float64 matrices per step"
        if method == "slsqp":
            variables = k * d
            memory = max(memory, 4 * kk + 8.0 * (3 * variables ** 2 + k * variables))
            memory_detail = "dense SLSQP matrices in K*D variables"
            step += 1e-10 * variables ** 3
        seconds, time_detail = seconds + steps * step, f"{steps} steps x {format_duration(step)}"
    if with_prior:
        memory_detail += " + word-vector triplets" + (" (K^3, n_positives=null)" if n_positives is None else "")
    return Cost(memory, seconds, memory_detail, time_detail)


def format_duration(seconds: float) -> str:
    """Human-readable duration: 250 ms, 3.2 s, 50 min, 2.5 h."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# --- progress of long placements ------------------------------------------------------------------------

#: the function each optimising rule calls once per step (lbfgs / slsqp: per objective evaluation);
#: `step_progress` counts its calls, so the rules themselves need no callback argument
STEP_FUNCTIONS = {
    "converged": (annealed_module, "smooth_max_grad"),
    "annealed": (annealed_module, "smooth_max_grad"),
    "paper": (paper_rule_module, "separation_grad"),
    "lbfgs": (scipy_module, "_smooth_max"),
    "slsqp": (scipy_module, "_smooth_max"),
}
#: without a terminal, a progress line is logged at most this often (seconds)
LOG_EVERY_S = 30.0


class _Progress:
    """A tqdm bar on a terminal; otherwise an INFO log line at most every LOG_EVERY_S seconds."""

    def __init__(self, total: int, description: str) -> None:
        self.total, self.description, self.count = total, description, 0
        self.start = self.last = time.perf_counter()
        self.bar = None
        if sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=description, leave=False, dynamic_ncols=True, unit="step")

    def update(self) -> None:
        self.count += 1
        if self.bar is not None:
            self.bar.update(1)
            return
        now = time.perf_counter()
        if now - self.last >= LOG_EVERY_S:
            self.last = now
            done = min(self.count, self.total) / self.total
            left = (now - self.start) * (1 - done) / done if done > 0 else float("nan")
            log.info("%s: step %d/%d (%.0f%%), %s elapsed, about %s left", self.description, self.count, self.total,
                     100 * done, format_duration(now - self.start), format_duration(max(left, 0.0)))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def step_progress(method: str, total: int, description: str) -> Iterator[None]:
    """Report the steps of a `method` placement of `total` planned steps while the block runs."""
    if total <= 0 or method not in STEP_FUNCTIONS:
        yield
        return
    module, name = STEP_FUNCTIONS[method]
    original = getattr(module, name)
    reporter = _Progress(total, description)

    def counted(*args: Any, **kwargs: Any):
        reporter.update()
        return original(*args, **kwargs)

    setattr(module, name, counted)
    try:
        yield
    finally:
        setattr(module, name, original)
        reporter.close()
