#!/usr/bin/env python
"""Word-analogy accuracy of masked LMs (spherized or not): S_ppl / S_pmi / S_mppl per dataset and their average.

    python scripts/word_analogy.py --model runs/mlm/bert-large runs/mlm/sphbert-large --data analogy_test_dataset
    python scripts/word_analogy.py --model runs/mlm/sphbert-large --data analogy_test_dataset --split all \\
        --template what-is-to --positive-aggregation mean --negative-weight 0.2 --json results.json

--data is Ushio et al.'s analogy_test_dataset folder (<name>/{valid,test}.jsonl for sat, u2, u4, google, bats;
other sub-folders with the split are scored too). Each --model is a local directory written by train_mlm.py or
save_pretrained (a spherized model is rebuilt from its config.json). The table follows the spherization paper's
Table 3: one row per model, each cell "S_ppl/S_pmi/S_mppl" accuracy in %, and the mean over datasets (Avg.).
The scorers and their options are documented in vmf_embeddings/language/analogy.py; the defaults give the plain
scores (the sentence itself, no permutations), while the published numbers come from a per-dataset grid search
over templates, permutations and weights that this script does not run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vmf_embeddings.errors import ConfigError, UserError  # noqa: E402
from vmf_embeddings.language.analogy import (DATASETS, SCORER_LABELS, SCORERS, SPLITS, TEMPLATES,  # noqa: E402
                                             config_from, evaluate, load_analogy_datasets)

DISPLAY = {"sat": "SAT", "u2": "U2", "u4": "U4", "google": "Google", "bats": "BATS"}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, nargs="+", help="local model directories (one table row each)")
    ap.add_argument("--data", required=True, type=Path, help="folder of analogy jsonl files (<name>/test.jsonl)")
    ap.add_argument("--split", choices=SPLITS, default="test", help="test, valid, or all (= valid + test)")
    ap.add_argument("--datasets", nargs="+", default=None, help=f"subset, e.g. {' '.join(DATASETS)}")
    ap.add_argument("--template", default="is-to-what",
                    help=f"one of {', '.join(TEMPLATES)}, or a string with <subj-a> <obj-a> <subj-b> <obj-b>")
    ap.add_argument("--positive-aggregation", default="index_0", help="mean|max|min|index_0..7 over 8 permutations")
    ap.add_argument("--negative-weight", type=float, default=0.0, help="weight of the 16 negative permutations")
    ap.add_argument("--negative-aggregation", default="mean", help="mean|max|min|index_0..15")
    ap.add_argument("--pmi-alpha", type=float, default=1.0)
    ap.add_argument("--pmi-aggregation", default="mean", help="mean|max|min|index_0|index_1 over both directions")
    ap.add_argument("--mppl-weight-head", type=float, default=1.0)
    ap.add_argument("--mppl-weight-tail", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=256, help="masked copies per forward pass")
    ap.add_argument("--max-length", type=int, default=32, help="tokens per sentence, specials included")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--json", type=Path, default=None, help="also write the accuracies here")
    ap.add_argument("--no-progress", action="store_true")
    return ap.parse_args(argv)


def cell(result: dict) -> str:
    return "/".join(f"{100 * result[s]:.1f}" for s in SCORERS)


def table(rows: dict, names) -> str:
    header = ["Model"] + [DISPLAY.get(n, n) for n in names] + ["Avg."]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for model, per_dataset in rows.items():
        avg = {s: sum(per_dataset[n][s] for n in names) / len(names) for s in SCORERS}
        lines.append("| " + " | ".join([model] + [cell(per_dataset[n]) for n in names] + [cell(avg)]) + " |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict:
    import torch

    from vmf_embeddings.language.spherized_bert import is_spherized, load_masked_lm, load_tokenizer

    config = config_from(template=args.template, positive_aggregation=args.positive_aggregation,
                         negative_weight=args.negative_weight, negative_aggregation=args.negative_aggregation,
                         pmi_alpha=args.pmi_alpha, pmi_aggregation=args.pmi_aggregation,
                         mppl_weight_head=args.mppl_weight_head, mppl_weight_tail=args.mppl_weight_tail)
    if args.batch_size < 1 or args.max_length < 3:
        raise ConfigError(f"--batch-size {args.batch_size} must be >= 1 and --max-length {args.max_length} >= 3")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: CUDA is not available here; use --device cpu or auto")
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    data = load_analogy_datasets(args.data, args.split, args.datasets)
    names = list(data)
    rows, spherized = {}, {}
    for path in args.model:
        tokenizer = load_tokenizer(path)
        model = load_masked_lm(path).to(device)
        label = Path(path).name or str(path)
        if label in rows:
            label = str(path)
        spherized[label] = is_spherized(model)
        rows[label] = {}
        for name in names:
            rows[label][name] = evaluate(model, tokenizer, data[name], SCORERS, config, args.batch_size,
                                         args.max_length, progress=not args.no_progress)
            print(f"{label} {name} ({len(data[name])} items): "
                  + ", ".join(f"{SCORER_LABELS[s]}={100 * v:.1f}" for s, v in rows[label][name].items()),
                  file=sys.stderr)
        del model
    print(f"Word analogy accuracy (%), each cell {'/'.join(SCORER_LABELS[s] for s in SCORERS)}; split {args.split}, "
          f"template {args.template!r}")
    print(table(rows, names))
    result = {"split": args.split, "config": dataclasses.asdict(config), "items": {n: len(data[n]) for n in names},
              "spherized": spherized, "accuracy": rows}
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except UserError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
