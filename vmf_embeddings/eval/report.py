"""Tables: one row per evaluated run (scripts/evaluate.py) and mean / std across seeds per
configuration (scripts/aggregate.py), as Markdown and CSV.

A configuration is the run's flattened resolved config minus the keys that do not change what is
trained: the infrastructure keys shared with run naming (`vmf_embeddings.config_keys`: names, paths,
devices, workers, lifecycle switches, the `eval` node) and seeds (`seed` and any `*.seed`). Runs with equal remaining configs are seeds of one configuration. The aggregate table
names each configuration by dataset, method, dim and only the keys that differ between
configurations, so a sweep's table shows exactly what was swept.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from vmf_embeddings.config_keys import is_infrastructure, is_seed

#: metrics shown first (in this order) when present; others follow alphabetically
METRIC_ORDER = (
    "accuracy", "top5_accuracy", "ece", "mce", "ece_l2_em15", "nll", "brier",
    "recall@1", "recall@2", "recall@4", "recall@8", "recall@10", "recall@100", "recall@1000",
    "precision@1", "r_precision", "map@r", "nmi", "ami",
    "mc_recall@1", "mc_map@r", "mc_r_precision", "mae", "rmse", "avg_cost", "mean_mistake_cost", "map50", "map50_07",
)
#: per-run table (evaluate.py): the headline columns
HEADLINE = ("accuracy", "ece", "nll", "recall@1", "map@r", "r_precision", "nmi", "mc_recall@1", "mae", "avg_cost",
            "map50", "map50_07")
NON_METRIC = {"n_queries", "n_lone", "n", "mc_samples", "seconds"}


def config_key_ignored(key: str) -> bool:
    """Keys that do not tell configurations apart: the shared infrastructure list, plus seeds."""
    return is_infrastructure(key) or is_seed(key)


def config_identity(flat_config: Dict[str, Any]) -> Tuple[Tuple[str, str], ...]:
    """The hashable configuration of a run (see module docstring)."""
    return tuple(sorted((k, json.dumps(v)) for k, v in flat_config.items() if not config_key_ignored(k)))


def metric_columns(keys: Iterable[str]) -> List[str]:
    """Order "split/metric" keys: test before val before train, known metrics in METRIC_ORDER."""
    split_rank = {"test": 0, "val": 1, "train": 2}
    order = {m: i for i, m in enumerate(METRIC_ORDER)}

    def rank(key: str):
        split, _, metric = key.partition("/")
        return (split_rank.get(split, 3), order.get(metric, len(order)), metric)

    return sorted(set(keys), key=rank)


def run_metrics(metrics: Dict[str, Any]) -> Dict[str, float]:
    """Flat {"test/recall@1": value} of one metrics.json (numbers only, counts dropped)."""
    out = {}
    for split, values in metrics.items():
        if split == "meta" or not isinstance(values, dict):
            continue
        for k, v in values.items():
            if k not in NON_METRIC and isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"{split}/{k}"] = float(v)
    return out


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[fmt(c) for c in r] for r in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(lines)


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow(["" if c is None else (repr(c) if isinstance(c, float) else c) for c in r])
    return buf.getvalue()


def run_table(results: Sequence[Dict[str, Any]]) -> Tuple[List[str], List[List[Any]]]:
    """One row per (run, split) with the headline metrics present in any of them."""
    present = [m for m in HEADLINE if any(m in r.get(s, {}) for r in results for s in r if s != "meta")]
    header = ["run", "method", "split"] + present
    rows = []
    for r in results:
        meta = r.get("meta", {})
        for split in ("test", "val", "train"):
            if split in r and any(m in r[split] for m in present):
                rows.append([meta.get("run_dir", "?"), meta.get("method", "?"), split]
                            + [r[split].get(m) for m in present])
    return header, rows


def _config_value(v: Any) -> Any:
    """Config values as text, so 1e-05 is not printed as 0.0000 like a metric."""
    return None if v is None else (f"{v:g}" if isinstance(v, float) else str(v))


def _mean_std(values: List[float]) -> Tuple[float, Optional[float]]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def aggregate(
    results: Sequence[Dict[str, Any]], metrics: Optional[Sequence[str]] = None
) -> Tuple[List[str], List[List[Any]], List[str]]:
    """Group metrics.json contents by configuration; (header, rows, varying config keys).

    Each metric column gets the mean and the sample standard deviation (ddof=1; empty for a single
    seed) over the configuration's runs; `n` counts distinct seeds (a second run with the same config
    and seed, e.g. a sweep job repeating the default, is the same experiment and is counted once).
    """
    groups: Dict[Tuple, List[Dict[str, Any]]] = {}
    flats: Dict[Tuple, Dict[str, Any]] = {}
    seen = set()
    for r in results:
        flat = r.get("meta", {}).get("config", {})
        key = config_identity(flat)
        seed = json.dumps(r.get("meta", {}).get("seed"))
        if (key, seed) in seen:  # same config and seed = the same experiment run twice: count it once
            continue
        seen.add((key, seed))
        groups.setdefault(key, []).append(r)
        flats[key] = {k: v for k, v in flat.items() if not config_key_ignored(k)}
    fixed = ("dataset.name", "method.name", "arch.params.embedding_dim")
    all_keys = sorted({k for f in flats.values() for k in f} - set(fixed))
    # a key is shown only if it differs between configurations of the same dataset/method/dim: keys
    # that merely follow the method (geometry, head target, ...) would add columns and no information
    families: Dict[Tuple, List[Dict[str, Any]]] = {}
    for f in flats.values():
        families.setdefault(tuple(json.dumps(f.get(k)) for k in fixed), []).append(f)
    varying = [k for k in all_keys
               if any(len({json.dumps(f.get(k)) for f in fam}) > 1 for fam in families.values())]
    per_run = [run_metrics(r) for r in results]
    cols = metric_columns(k for m in per_run for k in m) if metrics is None else list(metrics)
    header = ["dataset", "method", "dim"] + varying + ["n"]
    for c in cols:
        header += [f"{c} mean", f"{c} std"]
    rows = []
    for key, runs in groups.items():
        meta = runs[0].get("meta", {})
        f = flats[key]
        row: List[Any] = [meta.get("dataset"), meta.get("method"), meta.get("dim")]
        row += [_config_value(f.get(k)) for k in varying] + [len(runs)]
        run_vals = [run_metrics(r) for r in runs]
        for c in cols:
            vals = [v[c] for v in run_vals if c in v and not math.isnan(v[c])]
            if vals:
                row += list(_mean_std(vals))
            else:
                row += [None, None]
        rows.append(row)
    rows.sort(key=lambda r: tuple(str(x) for x in r[: 3 + len(varying)]))
    return header, rows, varying


class MetricsFileError(ValueError):
    """A metrics.json that cannot be aggregated; the message is one line naming the file and the fix."""


def read_metrics(path: Path) -> Dict[str, Any]:
    """One metrics.json (layout in vmf_embeddings/eval/run_eval.py), checked: a JSON object with a 'meta'
    object whose 'config' is an object, and split entries that are objects. Raises MetricsFileError."""
    path = Path(path)
    fix = f"re-run `python scripts/evaluate.py {path.parent}` to rewrite it"
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        problem = f"cannot read ({type(exc).__name__}: {' '.join(str(exc).split())})"
        raise MetricsFileError(f"{path}: {problem}; {fix}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        problem = f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        raise MetricsFileError(f"{path}: {problem}; {fix}") from None
    if not isinstance(data, dict):
        kind = {list: "a list", str: "a string", type(None): "null"}.get(type(data), "a number")
        raise MetricsFileError(f"{path}: expected a JSON object with 'meta' and split entries, got {kind}; {fix}")
    meta = data.get("meta")
    if not isinstance(meta, dict):
        raise MetricsFileError(f"{path}: no 'meta' object (the run's config and seed); {fix}")
    if not isinstance(meta.get("config"), dict):
        raise MetricsFileError(f"{path}: 'meta' has no 'config' object (the flattened training config); {fix}")
    for split, values in data.items():
        if split != "meta" and not isinstance(values, dict):
            got = type(values).__name__
            raise MetricsFileError(f"{path}: '{split}' must be an object of metrics, got {got}; {fix}")
    return data


def load_metrics(paths: Iterable[Path], errors: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    """Every readable metrics.json among `paths`. A bad file raises MetricsFileError, or, when an `errors`
    list is given, appends its one-line message there and is skipped."""
    out = []
    for p in paths:
        try:
            out.append(read_metrics(p))
        except MetricsFileError as exc:
            if errors is None:
                raise
            errors.append(str(exc))
    return out
