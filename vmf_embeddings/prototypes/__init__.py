"""Hyperspherical prototype placement (Mettes et al., NeurIPS 2019): K fixed, well-separated unit vectors
in R^D chosen before training, then frozen in the `hpn` heads. See `placement` for the methods."""

from vmf_embeddings.prototypes.cache import cache_key, cache_name, cache_path, load_or_place
from vmf_embeddings.prototypes.geometry import (
    COLLAPSE_LIMIT,
    CollapsedPrototypesError,
    known_optimum,
    max_cosine,
    mean_nn_cosine,
    placement_stats,
    simplex_bound,
)
from vmf_embeddings.prototypes.placement import (
    PAPER_SEED,
    PLACEMENTS,
    Cost,
    Placement,
    PlacementRequestError,
    check_options,
    estimate_cost,
    infeasible,
    place_prototypes,
)

__all__ = [
    "COLLAPSE_LIMIT",
    "CollapsedPrototypesError",
    "Cost",
    "PAPER_SEED",
    "PLACEMENTS",
    "Placement",
    "PlacementRequestError",
    "cache_key",
    "cache_name",
    "cache_path",
    "check_options",
    "estimate_cost",
    "infeasible",
    "known_optimum",
    "load_or_place",
    "max_cosine",
    "mean_nn_cosine",
    "place_prototypes",
    "placement_stats",
    "simplex_bound",
]
