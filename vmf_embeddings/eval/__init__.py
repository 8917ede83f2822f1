"""Evaluation: metric functions (importable as a library) and the run-dir evaluator.

Library entry points:
- `recall_at_1(embeddings, labels, geometry, curvature=None)` and `accuracy(logits, labels)`:
  what the training loop calls for validation.
- `retrieval_metrics(...)`: Recall@K, precision@1, R-precision, MAP@R (PML AccuracyCalculator
  definitions, exact chunked kNN), NMI / AMI.
- `classification_metrics(log_probs, labels)`: accuracy, top-5, ECE (15 equal-width bins), MCE, the vMF
  paper's l2 equal-mass ECE, NLL, Brier; `reliability_diagram(...)`.
- `vmf_mc_log_probs(...)`, `vmf_sampled_retrieval(...)`: the vMF paper's Monte-Carlo predictions.
- `few_shot_accuracy(...)`, `mae(...)`, `hierarchical_metrics(...)`: other benchmarks' metrics.
- `evaluate_run(run_dir)`: every fitting metric of a run dir -> RUN_DIR/metrics.json (layout in run_eval).
"""

from .classification import (
    accuracy,
    brier,
    classification_metrics,
    ece,
    log_probs_from_logits,
    mc_log_probs,
    mce,
    nll,
    reliability_diagram,
    topk_accuracy,
)
from .fewshot import confidence_interval95, few_shot_accuracy
from .geometry import poincare_distance, search_space, to_ball
from .hierarchy import hierarchical_metrics
from .knn import KnnResult, knn_self
from .regression import mae, regression_metrics
from .retrieval import recall_at_1, retrieval_metrics
from .run_dir import RunDirError
from .run_eval import evaluate_run
from .vmf_classification import vmf_mc_log_probs, vmf_sampled_retrieval

__all__ = [
    "KnnResult", "RunDirError", "accuracy", "brier", "classification_metrics", "confidence_interval95", "ece",
    "evaluate_run", "few_shot_accuracy", "hierarchical_metrics", "knn_self", "log_probs_from_logits", "mae",
    "mc_log_probs", "mce", "nll", "poincare_distance", "recall_at_1", "regression_metrics", "reliability_diagram",
    "retrieval_metrics", "search_space", "to_ball", "topk_accuracy", "vmf_mc_log_probs", "vmf_sampled_retrieval",
]
