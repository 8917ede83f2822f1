"""The compact table a training run prints when it ends: the test metrics a reader looks for first."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Optional, TextIO

#: (metrics.json key, column title), in print order; absent metrics are left out
SUMMARY_METRICS = (
    ("accuracy", "accuracy"), ("ece", "ECE"), ("nll", "NLL"), ("recall@1", "Recall@1"), ("map@r", "MAP@R"),
    ("mae", "MAE"), ("avg_cost", "avg cost"),
)


def summary_lines(result: Dict[str, Any], split: str = "test") -> list:
    """Two aligned lines (titles, values) of the headline metrics of one split."""
    values = result.get(split, {})
    cells = [(title, values[key]) for key, title in SUMMARY_METRICS if isinstance(values.get(key), (int, float))]
    cells += [(key.replace("fewshot_", ""), value) for key, value in values.items()
              if key.startswith("fewshot_") and not key.endswith("_ci95") and isinstance(value, (int, float))]
    if not cells:
        return []
    texts = [("nan" if isinstance(v, float) and math.isnan(v) else f"{v:.4f}") for _, v in cells]
    widths = [max(len(title), len(text)) for (title, _), text in zip(cells, texts)]
    head = "  ".join(title.rjust(w) for (title, _), w in zip(cells, widths))
    row = "  ".join(text.rjust(w) for text, w in zip(texts, widths))
    return [f"{split}  {head}", f"{' ' * len(split)}  {row}"]


def print_summary(result: Dict[str, Any], metrics_path: Optional[Path] = None, file: Optional[TextIO] = None) -> None:
    """Print the test metrics table and where metrics.json is (stdout: what a user reads after a run)."""
    meta = result.get("meta", {})
    print(f"\n{meta.get('method', '?')} on {meta.get('dataset', '?')} ({meta.get('dim', '?')}-d):", file=file)
    for line in summary_lines(result):
        print(line, file=file)
    if metrics_path is not None:
        print(f"all metrics: {metrics_path}", file=file)
