#!/usr/bin/env python
"""Gather metrics.json across seeds and sweeps: mean and standard deviation per configuration.

    python scripts/aggregate.py DIR [DIR ...] [--metrics 'test/*' 'val/recall@1'] [--out PREFIX]

Every metrics.json below the DIRs (written by scripts/evaluate.py) is grouped by configuration (the
resolved training config minus seeds, names, paths, devices and eval options; see
vmf_embeddings/eval/report.py). Prints a Markdown table (mean ± sample std, ddof=1) of the metrics
matching --metrics (default 'test/*') and writes it to PREFIX.md; PREFIX.csv holds every metric of
every split, mean and std in separate columns. Default PREFIX: DIR/aggregate.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vmf_embeddings.eval.report import aggregate, csv_text, fmt, load_metrics, markdown_table  # noqa: E402


def find_metrics(paths):
    files = []
    for p in paths:
        p = Path(p)
        if p.is_file() and p.name == "metrics.json":
            files.append(p)
        elif p.is_dir():
            files += sorted(p.rglob("metrics.json"))
        else:
            raise SystemExit(f"error: {p}: no such file or directory; pass dirs holding evaluated runs")
    return files


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", type=Path)
    ap.add_argument("--metrics", nargs="*", default=None,
                    help="split/metric patterns for the Markdown table (default 'test/*'); the CSV has all")
    ap.add_argument("--out", type=Path, default=None, help="output prefix (default: first DIR/aggregate)")
    args = ap.parse_args(argv)
    files = find_metrics(args.paths)
    if not files:
        print(f"error: no metrics.json under {', '.join(map(str, args.paths))}; run scripts/evaluate.py on them first",
              file=sys.stderr)
        return 1
    results = load_metrics(files)
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
    prefix = args.out or (args.paths[0] if args.paths[0].is_dir() else args.paths[0].parent) / "aggregate"
    Path(f"{prefix}.md").write_text(md + "\n")
    Path(f"{prefix}.csv").write_text(csv_text(header, rows))
    print(f"wrote {prefix}.md and {prefix}.csv ({len(files)} runs, {len(rows)} configurations)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
