#!/usr/bin/env python
"""Evaluate run dirs: every metric that fits the method and dataset -> RUN_DIR/metrics.json + a table.

    python scripts/evaluate.py RUN_DIR [RUN_DIR ...]        # a sweep dir or runs root works too
    python scripts/evaluate.py runs/cub200 --set clustering=false --set vmf_samples=20

Options given with --set override the run's `eval:` config node (see vmf_embeddings/eval/run_eval.py
for the metrics.json layout and the option list). A run that cannot be evaluated prints one line
naming the file and the fix; the exit status is 1 if any run failed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml  # noqa: E402  (PyYAML ships with omegaconf)

from vmf_embeddings.eval.report import markdown_table, run_table  # noqa: E402
from vmf_embeddings.eval.run_dir import RunDirError, find_run_dirs  # noqa: E402
from vmf_embeddings.eval.run_eval import DEFAULT_OPTIONS, evaluate_run  # noqa: E402


def parse_sets(items):
    opts = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or key not in DEFAULT_OPTIONS:
            raise SystemExit(f"error: --set {item!r}: expected KEY=VALUE with KEY in {sorted(DEFAULT_OPTIONS)}")
        opts[key] = yaml.safe_load(value)
    return opts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", type=Path, help="run dirs, sweep dirs or a runs root")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="evaluation option (repeatable)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    options = parse_sets(args.set)
    results, failed = [], 0
    for path in args.paths:
        try:
            run_dirs = find_run_dirs(path)
        except RunDirError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        for run_dir in run_dirs:
            try:
                results.append(evaluate_run(run_dir, options))
                print(f"wrote {run_dir / 'metrics.json'}", file=sys.stderr)
            except RunDirError as exc:
                print(f"error: {exc}", file=sys.stderr)
                failed += 1
    if results:
        header, rows = run_table(results)
        print(markdown_table(header, rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
