#!/usr/bin/env python
"""Gather metrics.json across seeds and sweeps: mean and standard deviation per configuration.

    python scripts/aggregate.py DIR [DIR ...] [--metrics 'test/*' 'val/recall@1'] [--out PREFIX]

Every metrics.json below the DIRs (written by scripts/evaluate.py) is grouped by configuration (the
resolved training config minus seeds, names, paths, devices and eval options; see
vmf_embeddings/eval/report.py). Prints a Markdown table (mean ± sample std, ddof=1) of the metrics
matching --metrics (default 'test/*') and writes it to PREFIX.md; PREFIX.csv holds every metric of
every split, mean and std in separate columns. Default PREFIX: DIR/aggregate.

A metrics.json that cannot be read (invalid JSON, not an object, no 'meta') or a DIR that does not exist
prints one line naming it and the fix; the others are still aggregated, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vmf_embeddings.eval.report import aggregate, csv_text, fmt, load_metrics, markdown_table  # noqa: E402


def find_metrics(paths, errors=None):
    """metrics.json files given or below the dirs given; a path that is neither goes to `errors` (or raises)."""
    files = []
    for p in paths:
        p = Path(p)
        if p.is_file() and p.name == "metrics.json":
            files.append(p)
        elif p.is_dir():
            files += sorted(p.rglob("metrics.json"))
        else:
            problem = "not a metrics.json" if p.is_file() else "no such file or directory"
            message = f"{p}: {problem}; pass dirs holding evaluated runs (scripts/evaluate.py writes metrics.json)"
            if errors is None:
                raise SystemExit(f"error: {message}")
            errors.append(message)
    return files


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", type=Path)
    ap.add_argument("--metrics", nargs="*", default=None,
                    help="split/metric patterns for the Markdown table (default 'test/*'); the CSV has all")
    ap.add_argument("--out", type=Path, default=None, help="output prefix (default: first DIR/aggregate)")
    args = ap.parse_args(argv)
    errors = []
    files = find_metrics(args.paths, errors)
    if not files and not errors:
        print(f"error: no metrics.json under {', '.join(map(str, args.paths))}; run scripts/evaluate.py on them first",
              file=sys.stderr)
        return 1
    results = load_metrics(files, errors)
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    if not results:
        return 1
    header, rows, varying = aggregate(results)
    n_fixed = 4 + len(varying)
    patterns = args.metrics or ["test/*"]
    # header after the fixed columns: "<split/metric> mean", "<split/metric> std", ...
    means = [i for i in range(n_fixed, len(header), 2)
             if any(fnmatch.fnmatch(header[i][: -len(" mean")], p) for p in patterns)]
    md_header = header[:n_fixed] + [header[i][: -len(" mean")] for i in means]
    md_rows = []
    for r in rows:
        cells = list(r[:n_fixed])
        for i in means:
            mean, std = r[i], r[i + 1]
            cells.append("" if mean is None else fmt(mean) + ("" if std is None else f" ± {fmt(std)}"))
        md_rows.append(cells)
    md = markdown_table(md_header, md_rows)
    print(md)
    first = next(p for p in args.paths if p.exists())  # a path that holds results (bad ones were reported)
    prefix = args.out or (first if first.is_dir() else first.parent) / "aggregate"
    try:
        Path(f"{prefix}.md").write_text(md + "\n")
        Path(f"{prefix}.csv").write_text(csv_text(header, rows))
    except OSError as exc:
        print(f"error: cannot write {prefix}.md / .csv ({type(exc).__name__}: {exc.strerror or exc}); "
              f"pass --out PREFIX in a writable directory", file=sys.stderr)
        return 1
    print(f"wrote {prefix}.md and {prefix}.csv ({len(results)} runs, {len(rows)} configurations)", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
