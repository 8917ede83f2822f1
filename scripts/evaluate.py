#!/usr/bin/env python
"""Evaluate run dirs: every metric that fits the method and dataset -> RUN_DIR/metrics.json + a table.

    python scripts/evaluate.py RUN_DIR [RUN_DIR ...]        # a sweep dir or runs root works too
    python scripts/evaluate.py runs/cub200 --set clustering=false --set vmf_samples=20

Options given with --set override the run's `eval:` config node (see vmf_embeddings/eval/run_eval.py
for the metrics.json layout and the option list). A run that cannot be evaluated (bad config.yaml,
missing or malformed embeddings/<split>.npz, or any unexpected error while evaluating it) prints one
line naming the file and the fix, and the other runs are still evaluated; the exit status is 1 if any
run failed (2 for a bad --set). -v adds the traceback of unexpected errors.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as vmf_embeddings.main, before faiss and torch load OpenMP:
# spinning OpenMP threads of one library slow the other's BLAS threads

import yaml  # noqa: E402  (PyYAML ships with omegaconf)

from vmf_embeddings.eval.report import markdown_table, run_table  # noqa: E402
from vmf_embeddings.eval.run_dir import RunDirError, find_run_dirs, one_line  # noqa: E402
from vmf_embeddings.eval.run_eval import DEFAULT_OPTIONS, evaluate_run  # noqa: E402
from vmf_embeddings.schema import EvalOptions  # noqa: E402


class UsageError(Exception):
    """A bad command-line option (exit status 2)."""


def parse_sets(items):
    """--set KEY=VALUE items -> options, each value parsed as YAML and checked against the EvalOptions schema."""
    from omegaconf import OmegaConf

    opts = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or key not in DEFAULT_OPTIONS:
            raise UsageError(f"--set {item!r}: expected KEY=VALUE with KEY in {sorted(DEFAULT_OPTIONS)}")
        try:
            opts[key] = yaml.safe_load(value)
            OmegaConf.merge(OmegaConf.structured(EvalOptions), {key: opts[key]})
        except Exception as exc:  # noqa: BLE001 - YAML syntax or a type the schema refuses
            kind = type(DEFAULT_OPTIONS[key]).__name__ if DEFAULT_OPTIONS[key] is not None else "see schema"
            raise UsageError(f"--set {item!r}: bad value for {key} ({kind}; vmf_embeddings/schema.py "
                             f"EvalOptions): {one_line(exc, 120)}") from None
    return opts


def evaluate_one(run_dir: Path, options, verbose: bool):
    """(metrics, None) or (None, the one-line error) for one run dir; never raises on a bad run."""
    try:
        return evaluate_run(run_dir, options), None
    except RunDirError as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - one bad run must not abort the batch
        if verbose:
            traceback.print_exc()
        return None, (f"{run_dir}: evaluation failed ({one_line(exc)}); check its config.yaml and embeddings/*.npz, "
                      f"re-run with -v for the traceback")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", type=Path, help="run dirs, sweep dirs or a runs root")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="evaluation option (repeatable)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if args.threads is not None and args.threads < 1:
        print(f"error: --threads {args.threads}: must be >= 1 (torch CPU threads)", file=sys.stderr)
        return 2
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        options = parse_sets(args.set)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results, failed = [], 0
    for path in args.paths:
        try:
            run_dirs = find_run_dirs(path)
        except RunDirError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        for run_dir in run_dirs:
            result, error = evaluate_one(run_dir, options, args.verbose)
            if error is None:
                results.append(result)
                print(f"wrote {run_dir / 'metrics.json'}", file=sys.stderr)
            else:
                print(f"error: {error}", file=sys.stderr)
                failed += 1
    if results:
        header, rows = run_table(results)
        print(markdown_table(header, rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
