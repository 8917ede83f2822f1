#!/usr/bin/env bash
# Smoke test: every method trains a few steps on the bundled digits, extracts embeddings and is
# evaluated (one command), is re-extracted with mode=get_embeddings and re-evaluated; then a 2-job multirun. Installs nothing, downloads nothing, CPU-capable, exits non-zero
# on any failure. Runs go to a temporary runs root (kept with KEEP_RUNS=1).
set -euo pipefail
cd "$(dirname "$0")"

ROOT="$(mktemp -d "${TMPDIR:-/tmp}/vmf_smoke.XXXXXX")"
if [[ "${KEEP_RUNS:-0}" != "1" ]]; then trap 'rm -rf "$ROOT"' EXIT; fi
export PYTHONWARNINGS=ignore
COMMON=(runs_root="$ROOT" num_workers=0 progress_bar=false hydra.job_logging.root.level=WARNING)
TRAIN=(mode.epochs=1 sampler.n_episodes=3)
METHODS=(unnormalized_sce normalized_sce arcface hyperbolic_sce vmf_softmax hpn)
start=$SECONDS

for method in "${METHODS[@]}"; do
  echo "== $method: train + extract + evaluate, then re-extract"
  python -m vmf_embeddings.main method="$method" "${TRAIN[@]}" "${COMMON[@]}"
  python -m vmf_embeddings.main method="$method" "${TRAIN[@]}" mode=get_embeddings "${COMMON[@]}"
done

for method in hpn_regression hpn_joint; do
  echo "== $method on digits_regression"
  python -m vmf_embeddings.main method="$method" dataset=digits_regression "${TRAIN[@]}" "${COMMON[@]}"
done

echo "== re-evaluate every run"
python scripts/evaluate.py "$ROOT/digits" "$ROOT/digits_regression"

echo "== 2-job multirun (a learning-rate sweep), each job extracts and evaluates at the end"
python -m vmf_embeddings.main -m method=normalized_sce mode.learning_rate=0.1,0.5 "${TRAIN[@]}" "${COMMON[@]}"
jobs=$(find "$ROOT/digits/normalized_sce" -name best.pt | wc -l)
[[ "$jobs" -eq 3 ]] || { echo "expected 3 normalized_sce runs (1 + 2 sweep jobs), found $jobs" >&2; exit 1; }
python scripts/evaluate.py "$ROOT/digits/normalized_sce"
python scripts/aggregate.py "$ROOT" --out "$ROOT/summary"

echo "== torchrun: one run on 2 processes (DDP over gloo on CPU), then its embeddings re-extracted on 2 processes"
OMP_NUM_THREADS=1 python -m torch.distributed.run --nproc_per_node=2 --master_port=29517 -m vmf_embeddings.main \
  method=normalized_sce sampler=random sampler.batch_size=64 mode.epochs=1 mode.max_steps_per_epoch=3 name=ddp "${COMMON[@]}"
OMP_NUM_THREADS=1 python -m torch.distributed.run --nproc_per_node=2 --master_port=29517 -m vmf_embeddings.main \
  method=normalized_sce sampler=random sampler.batch_size=64 mode.epochs=1 mode.max_steps_per_epoch=3 name=ddp mode=get_embeddings \
  "${COMMON[@]}"
[[ -f "$ROOT/digits/normalized_sce/3dim/ddp/embeddings/test.npz" ]] || { echo "torchrun wrote no embeddings" >&2; exit 1; }

echo "smoke test passed in $((SECONDS - start)) s"
