#!/usr/bin/env python
"""Masked-LM training of BERT / RoBERTa, optionally with the last encoder layer spherized (Kim & Kim, word analogy).

    # the paper's runs: 3 epochs of MLM on WikiText-2, SGD lr 1e-4, batch 8
    python scripts/train_mlm.py --model models/bert-large-cased --train-file wikitext-2-raw/wiki.train.raw \\
        --out runs/mlm/sphbert-large --spherize                       # "fine-tuned": from the pretrained weights
    python scripts/train_mlm.py --model models/roberta-large --train-file wikitext-2-raw/wiki.train.raw \\
        --out runs/mlm/roberta-large-empty --from-scratch             # random init (the original's --empty)

--model is a local directory (save_pretrained / `huggingface-cli download NAME --local-dir DIR`) or a hub name when
the hub is reachable. --train-file is plain text, one passage per line (blank lines skipped; WikiText-2's
wiki.train.raw as is). The output directory gets the model (save_pretrained; a spherized model records its
settings in config.json and is reloaded by vmf_embeddings.language.spherized_bert.load_masked_lm), the tokenizer
and train_log.json (per-epoch mean loss, optional --eval-file loss, the learnt scaling s); it is written to a
temporary sibling and swapped in at the end.

Departures from the original (GIST-IRR/spherization_layer, word_analogy_test/train_*.py), on purpose: it trained
with labels = the unmasked input ids and no masking at all (and padded every passage to 512 tokens with the pad
tokens counted in the loss), so its "MLM" was a copy task; here tokens are masked by transformers'
DataCollatorForLanguageModeling (15%, the 80/10/10 rule) and padding is ignored. Passages longer than --max-length
(default 512, the original's effective length) are truncated, as there.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vmf_embeddings.errors import ConfigError, NonFiniteLossError, UserError  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="local model directory, or a hub name when online")
    ap.add_argument("--train-file", required=True, type=Path, help="plain text, one passage per line")
    ap.add_argument("--out", required=True, type=Path, help="output directory (replaced atomically)")
    ap.add_argument("--from-scratch", action="store_true", help="random init from the model's config (--empty)")
    ap.add_argument("--spherize", action="store_true", help="spherize the last encoder layer's FFN")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-4, help="SGD learning rate (no momentum, no weight decay)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=512, help="tokens per passage, specials included")
    ap.add_argument("--mlm-probability", type=float, default=0.15)
    ap.add_argument("--eval-file", type=Path, default=None, help="optional held-out text: MLM loss after each epoch")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--seed", type=int, default=1)
    sph = ap.add_argument_group("spherization (with --spherize; the paper's runs: s = r = 5, s learnt, r fixed)")
    sph.add_argument("--scaling", type=float, default=5.0)
    sph.add_argument("--radius", type=float, default=5.0)
    sph.add_argument("--delta", type=float, default=1e-6)
    sph.add_argument("--learn-scaling", action=argparse.BooleanOptionalAction, default=True)
    sph.add_argument("--learn-radius", action=argparse.BooleanOptionalAction, default=False)
    ap.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return ap.parse_args(argv)


def read_passages(path: Path, flag: str = "--train-file"):
    if not path.is_file():
        raise UserError(f"{flag} {path} not found: point it at a plain-text file with one passage per line "
                        f"(e.g. WikiText-2's wiki.train.raw)")
    passages = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    passages = [p for p in passages if p]
    if not passages:
        raise UserError(f"{flag} {path}: no text (every line is blank)")
    return passages


def pick_device(name: str):
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: CUDA is not available here; use --device cpu or auto")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


def position_limit(model, tokenizer) -> int:
    limit = int(getattr(model.config, "max_position_embeddings", 512))
    if getattr(model.config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        limit -= int(model.config.pad_token_id) + 1  # their position ids start after the padding index
    if getattr(tokenizer, "model_max_length", None) and tokenizer.model_max_length < 100_000:
        limit = min(limit, int(tokenizer.model_max_length))
    return limit


def encode(tokenizer, passages, max_length: int):
    enc = tokenizer(passages, truncation=True, max_length=max_length, return_special_tokens_mask=True)
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask", "special_tokens_mask") if k in enc]
    return [{k: enc[k][i] for k in keys} for i in range(len(passages))]


def mean_loss(model, loader, device, seed: int) -> float:
    """MLM loss over `loader` with masks drawn from a fixed seed (comparable between epochs)."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            n = int((batch["labels"] != -100).sum())
            if n:
                total += float(model(**batch).loss) * n
                count += n
    return total / max(count, 1)


def run(args: argparse.Namespace) -> dict:
    for name, value, ok in (("--epochs", args.epochs, args.epochs >= 1), ("--lr", args.lr, args.lr > 0),
                            ("--batch-size", args.batch_size, args.batch_size >= 1),
                            ("--max-length", args.max_length, args.max_length >= 8),
                            ("--mlm-probability", args.mlm_probability, 0 < args.mlm_probability < 1)):
        if not ok:
            raise ConfigError(f"{name} {value}: out of range (epochs >= 1, lr > 0, batch size >= 1, max length >= 8, "
                              f"0 < mlm probability < 1)")
    passages = read_passages(args.train_file)
    eval_passages = read_passages(args.eval_file, "--eval-file") if args.eval_file is not None else None
    device = pick_device(args.device)

    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm
    from transformers import DataCollatorForLanguageModeling

    from vmf_embeddings.language.spherized_bert import (is_spherized, load_masked_lm, load_tokenizer,
                                                        save_pretrained_atomic, spherization_of,
                                                        spherize_last_layer)

    random.seed(args.seed)
    torch.manual_seed(args.seed)
    tokenizer = load_tokenizer(args.model)
    model = load_masked_lm(args.model, from_scratch=args.from_scratch)
    if args.spherize and not is_spherized(model):
        spherize_last_layer(model, scaling=args.scaling, radius=args.radius, learn_scaling=args.learn_scaling,
                            learn_radius=args.learn_radius, delta=args.delta)
    elif args.spherize:
        print(f"note: {args.model} is already spherized; its own spherization settings are kept", file=sys.stderr)
    model.to(device)
    max_length = min(args.max_length, position_limit(model, tokenizer))
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=args.mlm_probability)
    generator = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(encode(tokenizer, passages, max_length), batch_size=args.batch_size, shuffle=True,
                        collate_fn=collator, generator=generator)
    eval_loader = None
    if eval_passages is not None:
        eval_loader = DataLoader(encode(tokenizer, eval_passages, max_length), batch_size=args.batch_size,
                                 shuffle=False, collate_fn=collator)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)

    log = {"model": str(args.model), "train_file": str(args.train_file), "passages": len(passages),
           "from_scratch": bool(args.from_scratch), "spherized": is_spherized(model),
           "spherization": getattr(model.config, "spherization", None), "epochs": args.epochs, "lr": args.lr,
           "batch_size": args.batch_size, "max_length": max_length, "mlm_probability": args.mlm_probability,
           "seed": args.seed, "device": str(device), "history": []}
    if eval_loader is not None:  # the starting point, with the same masks as after each epoch
        log["history"].append({"epoch": 0, "eval_loss": mean_loss(model, eval_loader, device, args.seed)})
        print(f"epoch=0 eval_loss={log['history'][0]['eval_loss']:.4f}")
    start = time.time()
    for epoch in range(1, args.epochs + 1):
        model.train()
        total, steps = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch}/{args.epochs}", unit="batch", disable=args.no_progress,
                   dynamic_ncols=True)
        for batch in bar:
            batch = {k: v.to(device) for k, v in batch.items()}
            if not bool((batch["labels"] != -100).any()):
                continue  # nothing masked in this batch (tiny passages): no loss
            loss = model(**batch).loss
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"epoch {epoch}, step {steps + 1}: MLM loss is {float(loss)}; lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            steps += 1
            bar.set_postfix(loss=f"{total / steps:.4f}")
        entry = {"epoch": epoch, "train_loss": total / max(steps, 1), "steps": steps}
        sph = spherization_of(model)
        if sph is not None:
            entry["scaling"] = sph.scaling.item()
            entry["radius"] = sph.radius.item()
        if eval_loader is not None:
            entry["eval_loss"] = mean_loss(model, eval_loader, device, args.seed)
        log["history"].append(entry)
        print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in entry.items()))
    log["seconds"] = round(time.time() - start, 2)
    model.eval()
    out = save_pretrained_atomic(model.to("cpu"), tokenizer, args.out,
                                 extra={"train_log.json": json.dumps(log, indent=2) + "\n"})
    print(f"saved to {out}")
    return log


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        log = run(args)
    except UserError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    return 0 if all(math.isfinite(h.get("train_loss", 0.0)) for h in log["history"]) else 1


if __name__ == "__main__":
    sys.exit(main())
