"""Final max cosine and wall time of prototype placement rules, side by side.

"paper" is the official rule (projected GD on the mean nearest-neighbour cosine, lr 0.1, 10,000 steps,
seed 300); "ours" is the runner's default (`converged`: closed forms where the optimum is known, else
the annealed smooth-max optimiser, 2,000 steps); "lbfgs" and "slsqp" are the SciPy alternatives
(slsqp only where K*D <= 1500, since it is dense). "bound" is the simplex bound -1/(K-1); "optimum" is
the known optimum where there is one (K <= 2D or D = 2). Single-threaded BLAS, so timings compare.

    python scripts/bench_prototypes.py                       # K in {100, 200} x D in {10, 25, 50}
    python scripts/bench_prototypes.py --sizes 100x10 200x50 --methods paper converged
    python scripts/bench_prototypes.py --paper-steps 1000    # the paper text's 1,000 steps
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vmf_embeddings.prototypes import known_optimum, place_prototypes, simplex_bound  # noqa: E402

DEFAULT_SIZES = ["100x10", "100x25", "100x50", "200x10", "200x25", "200x50"]
LABELS = {"paper": "paper", "converged": "ours", "lbfgs": "lbfgs", "slsqp": "slsqp", "annealed": "annealed"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=DEFAULT_SIZES, help="KxD pairs")
    parser.add_argument("--methods", nargs="+", default=["paper", "converged", "lbfgs", "slsqp"])
    parser.add_argument("--seed", type=int, default=300)
    parser.add_argument("--paper-steps", type=int, default=10000)
    args = parser.parse_args()

    header = f"{'K':>4} {'D':>4} {'bound':>8} {'optimum':>8}"
    for method in args.methods:
        header += f" | {LABELS.get(method, method):>8} {'time':>7}"
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        k, d = (int(v) for v in size.lower().split("x"))
        optimum = known_optimum(k, d)
        row = f"{k:>4} {d:>4} {simplex_bound(k):>8.4f} {'' if optimum is None else f'{optimum:.4f}':>8}"
        for method in args.methods:
            if method == "slsqp" and k * d > 1500:
                row += f" | {'-':>8} {'-':>7}"
                continue
            options = {"steps": args.paper_steps} if method == "paper" else {}
            result = place_prototypes(k, d, method=method, seed=args.seed, **options)
            row += f" | {result.stats['max_cosine']:>8.4f} {result.seconds:>6.2f}s"
        print(row, flush=True)


if __name__ == "__main__":
    main()
