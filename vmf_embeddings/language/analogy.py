"""Word-analogy scoring with a masked LM: the S_ppl / S_pmi / S_mppl scores of Ushio et al.

Ushio, Espinosa-Anke, Schockaert, Camacho-Collados, "BERT is to NLP what AlexNet is to CV: Can Pre-Trained Language
Models Identify Analogies?", ACL 2021; code github.com/asahi417/analogy-language-model (`alm/`), of which the
spherization paper (Kim & Kim, NeurIPS 2022, Tables 3/7) ran a copy. Definitions below are read from that code
(`alm/lm_util.py`, `alm/scoring_function.py`, `alm/data_analogy.py`, `alm/prompting_relation.py`); the paper's own
equations could not be read here, so where the two might differ the code's form is used and said so.

Task. An item is a query pair (h_q, t_q) and n candidate pairs (h_i, t_i) (their jsonl: {"stem": [h, t],
"choice": [[h, t], ...], "answer": int}); the model must pick the candidate whose relation matches the query's.

Prompt. The four words (a, b, c, d) = (h_q, t_q, h_i, t_i) fill a template, by default "is-to-what":
"<a> is to <b> what <c> is to <d>" (`TEMPLATES` has their six; any string with the four placeholders works).

Pseudo-perplexity. PPL(x) = exp(-(1/m) sum_k log P(x_k | x with x_k masked)) over the m non-special tokens of the
tokenized sentence (truncated to `max_length` = 32 tokens with specials, as in their runs), each masked in turn.
Their code re-tokenizes the masked sentence from its string; here the token id is replaced by the mask id directly
(identical for WordPiece; it avoids BPE spacing artefacts around "<mask>"). All masked copies are batched (rows of
`batch_size` copies per forward pass); for BERT/RoBERTa masked LMs only the masked positions go through the LM head.

Scores (every value below is "lower is better"; the prediction is argmin, i.e. their argmax of the negated value):

- S_ppl (their `ppl`): v_i = PPL(a, b, c_i, d_i).
- Both marginal scores use the n x n table M[i, j] = PPL(h_q, t_q, h_i, t_j) (head of candidate i with tail of
  candidate j), treating normalised perplexities as negative log-likelihood surrogates exactly as their code does:
  cond_h = log(M_ii / sum_j M_ij), cond_t = log(M_ii / sum_j M_ji), mar_h = log(sum_j M_ij / sum M),
  mar_t = log(sum_j M_ji / sum M).
- S_pmi (their `ppl_based_pmi`): v_i = agg(cond_h - alpha mar_h, cond_t - alpha mar_t), agg over the two
  directions (`pmi_aggregation`: mean by default). The code pairs cond_h with mar_h; a textbook PMI pairs
  log P(t|h) with log P(t) (cond_h with mar_t). With the default mean aggregation both readings give the same
  value, log M_ii - (1 + alpha)/2 (log rowsum_i + log colsum_i) + const, so only `pmi_aggregation=index_*/max/min`
  tells them apart; the code's pairing is kept. Default alpha = 1, the PMI proper (their code's default is 0 and
  their grid searches alpha in {-0.4, ..., 0.4}: unverified which value the paper's tables used).
- S_mppl (their `ppl_marginal_bias`, "marginal likelihood biased perplexity"):
  v_i = log(M_ii / sum_k M_kk) - w_h mar_h - w_t mar_t, defaults w_h = w_t = 1 (their code's defaults; their grid
  searches {-0.4, ..., 0.4}).

Permutations (their `sampling_permutation`). The 24 orders of (a, b, c, d) split into 8 "positive" ones (a valid
analogy stays valid: (a,b,c,d), (a,c,b,d), (b,a,d,c), (b,d,a,c), (c,d,a,b), (c,a,d,b), (d,c,b,a), (d,b,c,a)) and 16
"negative" ones. For each permutation the score above is computed (the marginal scores on that permutation's own
table); then logit_i = negative_weight * agg_neg(v_i over negatives) - agg_pos(v_i over positives) and the
prediction is argmax_i logit_i (first index on ties, as their `list.index(max(...))`). Defaults: positive
aggregation `index_0` (the plain sentence) and negative weight 0, i.e. the plain scores; aggregations are `mean`,
`max`, `min` or `index_k`.

What the published numbers are (unverified). Both papers pick, per dataset, the template, permutation
aggregations, negative weight and alpha / (w_h, w_t) by a grid search (the spherization copy reports accuracy on
validation + test merged). `word_analogy.py` does not run that grid by default (it costs 24 permutations x n^2
sentences x 6 templates per item); pass the options to evaluate any one configuration.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from vmf_embeddings.errors import ConfigError, UserError

TEMPLATES: Dict[str, str] = {
    "is-to-what": "<subj-a> is to <obj-a> what <subj-b> is to <obj-b>",
    "is-to-as": "<subj-a> is to <obj-a> as <subj-b> is to <obj-b>",
    "rel-same": "The relation between <subj-a> and <obj-a> is the same as the relation between <subj-b> and <obj-b>",
    "what-is-to": "what <subj-a> is to <obj-a>, <subj-b> is to <obj-b>",
    "she-to-as": "She explained to him that <subj-a> is to <obj-a> as <subj-b> is to <obj-b>.",
    # their string concatenation drops the space in "is to" ("... what <subj-b> isto <obj-b>."); restored here
    "as-what-same": "As I explained earlier, what <subj-a> is to <obj-a> is essentially the same as what <subj-b> is "
                    "to <obj-b>.",
}
DEFAULT_TEMPLATE = "is-to-what"
PLACEHOLDERS = ("<subj-a>", "<obj-a>", "<subj-b>", "<obj-b>")

# orders of (a, b, c, d) = (h_q, t_q, h_i, t_i); same order as their sampling_permutation
POSITIVE_PERMUTATIONS: Tuple[Tuple[int, ...], ...] = (
    (0, 1, 2, 3), (0, 2, 1, 3), (1, 0, 3, 2), (1, 3, 0, 2), (2, 3, 0, 1), (2, 0, 3, 1), (3, 2, 1, 0), (3, 1, 2, 0))
NEGATIVE_PERMUTATIONS: Tuple[Tuple[int, ...], ...] = (
    (0, 1, 3, 2), (0, 2, 3, 1), (0, 3, 1, 2), (0, 3, 2, 1), (1, 0, 2, 3), (1, 2, 0, 3), (1, 2, 3, 0), (1, 3, 2, 0),
    (2, 0, 1, 3), (2, 1, 0, 3), (2, 1, 3, 0), (2, 3, 1, 0), (3, 0, 1, 2), (3, 0, 2, 1), (3, 1, 0, 2), (3, 2, 0, 1))

SCORERS = ("ppl", "pmi", "mppl")
SCORER_LABELS = {"ppl": "S_ppl", "pmi": "S_pmi", "mppl": "S_mppl"}
_SCORER_ALIASES = {"ppl": "ppl", "s_ppl": "ppl", "pmi": "pmi", "s_pmi": "pmi", "ppl_based_pmi": "pmi",
                   "mppl": "mppl", "s_mppl": "mppl", "ppl_marginal_bias": "mppl"}
DATASETS = ("sat", "u2", "u4", "google", "bats")
SPLITS = ("test", "valid", "all")


# -- configuration ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScoringConfig:
    """One configuration of the scorers (see the module docstring; defaults give the plain scores)."""

    template: str = DEFAULT_TEMPLATE
    positive_aggregation: str = "index_0"
    negative_weight: float = 0.0
    negative_aggregation: str = "mean"
    pmi_alpha: float = 1.0
    pmi_aggregation: str = "mean"
    mppl_weight_head: float = 1.0
    mppl_weight_tail: float = 1.0

    def validate(self) -> "ScoringConfig":
        template_text(self.template)
        _check_aggregation("positive_aggregation", self.positive_aggregation, len(POSITIVE_PERMUTATIONS))
        _check_aggregation("negative_aggregation", self.negative_aggregation, len(NEGATIVE_PERMUTATIONS))
        _check_aggregation("pmi_aggregation", self.pmi_aggregation, 2)
        for f in ("negative_weight", "pmi_alpha", "mppl_weight_head", "mppl_weight_tail"):
            if not math.isfinite(float(getattr(self, f))):
                raise ConfigError(f"analogy scoring: {f}={getattr(self, f)!r} must be a finite number")
        return self

    def positive_indices(self) -> List[int]:
        return _needed(self.positive_aggregation, len(POSITIVE_PERMUTATIONS))

    def negative_indices(self) -> List[int]:
        if float(self.negative_weight) == 0.0:
            return []
        return _needed(self.negative_aggregation, len(NEGATIVE_PERMUTATIONS))


def canonical_scorer(scorer: str) -> str:
    key = str(scorer).strip().lower()
    if key not in _SCORER_ALIASES:
        raise ConfigError(f"unknown analogy scorer {scorer!r}; expected one of {SCORERS} (or S_ppl, S_pmi, S_mppl)")
    return _SCORER_ALIASES[key]


def _check_aggregation(name: str, value: str, count: int) -> None:
    if value in ("mean", "max", "min"):
        return
    match = re.fullmatch(r"index_(\d+)", str(value))
    if match is None or int(match.group(1)) >= count:
        raise ConfigError(f"analogy scoring: {name}={value!r}: expected mean, max, min or index_k with "
                          f"0 <= k < {count}")


def _needed(aggregation: str, count: int) -> List[int]:
    match = re.fullmatch(r"index_(\d+)", aggregation)
    return [int(match.group(1))] if match else list(range(count))


def _aggregate(values: np.ndarray, aggregation: str, indices: Sequence[int]) -> np.ndarray:
    """Aggregate over axis 0 of `values` (rows = the permutations listed in `indices`)."""
    if aggregation == "mean":
        return values.mean(0)
    if aggregation == "max":
        return values.max(0)
    if aggregation == "min":
        return values.min(0)
    k = int(aggregation.split("_")[1])
    return values[list(indices).index(k)]


# -- prompts ----------------------------------------------------------------------------------------------------------
def template_text(template: str) -> str:
    """A template name from `TEMPLATES`, or a template string with the four placeholders."""
    text = TEMPLATES.get(template, template)
    missing = [p for p in PLACEHOLDERS if p not in text]
    if missing:
        raise ConfigError(f"analogy template {template!r}: not one of {sorted(TEMPLATES)} and missing "
                          f"placeholder(s) {missing} (a custom template needs {', '.join(PLACEHOLDERS)})")
    return text


def prompt(words: Sequence[str], template: str = DEFAULT_TEMPLATE) -> str:
    """The sentence for the four words (a, b, c, d), e.g. "a is to b what c is to d"."""
    text = template_text(template)
    if len(words) != 4:
        raise ValueError(f"prompt needs four words, got {list(words)!r}")
    fill = dict(zip(PLACEHOLDERS, words))
    return re.sub("|".join(re.escape(p) for p in PLACEHOLDERS), lambda m: fill[m.group(0)], text)


# -- pseudo-perplexity ------------------------------------------------------------------------------------------------
_SPLIT_HEAD = {"BertForMaskedLM": ("cls",), "RobertaForMaskedLM": ("lm_head",),
               "XLMRobertaForMaskedLM": ("lm_head",), "CamembertForMaskedLM": ("lm_head",)}


def _head_split(model: nn.Module):
    """(encoder, LM head) when logits = head(encoder(...)[0]) for this class (so only masked rows need the head)."""
    names = _SPLIT_HEAD.get(type(model).__name__)
    if not names:
        return None
    head = getattr(model, names[0], None)
    base = getattr(model, "base_model", None)
    return (base, head) if isinstance(head, nn.Module) and isinstance(base, nn.Module) else None


def _device_of(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@torch.no_grad()
def pseudo_perplexity(model: nn.Module, tokenizer, sentences: Sequence[str], batch_size: int = 256,
                      max_length: int = 32) -> np.ndarray:
    """Pseudo-perplexity of each sentence (float64 array): every non-special token masked in turn, batched."""
    sentences = list(sentences)
    if not sentences:
        return np.zeros(0)
    if tokenizer.mask_token_id is None:
        raise ConfigError("pseudo-perplexity needs a tokenizer with a mask token")
    if int(batch_size) < 1 or int(max_length) < 3:
        raise ConfigError(f"pseudo_perplexity: batch_size={batch_size} must be >= 1 and max_length={max_length} >= 3")
    enc = tokenizer(sentences, truncation=True, max_length=int(max_length), return_special_tokens_mask=True)
    ids, special = enc["input_ids"], enc["special_tokens_mask"]
    types = enc.get("token_type_ids")
    rows = [(s, p) for s in range(len(ids)) for p in range(len(ids[s])) if not special[s][p]]
    empty = [sentences[s] for s in range(len(ids)) if all(special[s])]
    if empty:
        raise ValueError(f"pseudo_perplexity: sentence {empty[0]!r} has no tokens to score")
    rows.sort(key=lambda r: len(ids[r[0]]))  # similar lengths share a batch: less padding
    device = _device_of(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    split = _head_split(model)
    was_training = model.training
    model.eval()
    nll = np.zeros(len(rows))
    try:
        for start in range(0, len(rows), int(batch_size)):
            chunk = rows[start:start + int(batch_size)]
            width = max(len(ids[s]) for s, _ in chunk)
            input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            token_types = torch.zeros((len(chunk), width), dtype=torch.long) if types is not None else None
            targets = torch.empty(len(chunk), dtype=torch.long)
            cols = torch.empty(len(chunk), dtype=torch.long)
            for b, (s, p) in enumerate(chunk):
                seq = ids[s]
                input_ids[b, :len(seq)] = torch.tensor(seq)
                attention[b, :len(seq)] = 1
                if token_types is not None:
                    token_types[b, :len(seq)] = torch.tensor(types[s])
                targets[b], cols[b] = seq[p], p
                input_ids[b, p] = tokenizer.mask_token_id
            kwargs = {"input_ids": input_ids.to(device), "attention_mask": attention.to(device)}
            if token_types is not None:
                kwargs["token_type_ids"] = token_types.to(device)
            rows_idx = torch.arange(len(chunk), device=device)
            cols = cols.to(device)
            if split is not None:
                base, head = split
                hidden = base(**kwargs)[0]
                logits = head(hidden[rows_idx, cols])
            else:
                logits = model(**kwargs).logits[rows_idx, cols]
            logp = torch.log_softmax(logits.float(), dim=-1)
            nll[start:start + len(chunk)] = (-logp[rows_idx, targets.to(device)]).double().cpu().numpy()
    finally:
        model.train(was_training)
    total = np.zeros(len(ids))
    count = np.zeros(len(ids))
    np.add.at(total, [s for s, _ in rows], nll)
    np.add.at(count, [s for s, _ in rows], 1)
    return np.exp(total / count)


# -- per-item perplexity tables ---------------------------------------------------------------------------------------
@dataclass
class ItemTable:
    """Perplexities of one item: [perm, i, j] = PPL of (h_q, t_q, h_i, t_j) under that permutation (NaN if unused)."""

    positive: np.ndarray  # (8, n, n)
    negative: np.ndarray  # (16, n, n)
    answer: int


def check_item(item: Mapping, where: str = "item") -> dict:
    """Validate one analogy item {"stem": [h, t], "choice": [[h, t], ...], "answer": int}."""
    if not isinstance(item, Mapping):
        raise UserError(f"{where}: expected a JSON object with stem, choice, answer; got {type(item).__name__}")
    stem, choice, answer = item.get("stem"), item.get("choice"), item.get("answer")

    def pair(x) -> bool:
        return isinstance(x, (list, tuple)) and len(x) == 2 and all(isinstance(w, str) and w.strip() for w in x)

    if not pair(stem):
        raise UserError(f"{where}: 'stem' must be a pair of non-empty words, got {stem!r}")
    if not isinstance(choice, (list, tuple)) or len(choice) < 2 or not all(pair(c) for c in choice):
        raise UserError(f"{where}: 'choice' must be a list of >= 2 word pairs, got {choice!r}")
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choice):
        raise UserError(f"{where}: 'answer' must be an index into 'choice' (0..{len(choice) - 1}), got {answer!r}")
    return {"stem": list(stem), "choice": [list(c) for c in choice], "answer": int(answer)}


def item_tables(model: nn.Module, tokenizer, items: Sequence[Mapping], config: Optional[ScoringConfig] = None,
                marginal: bool = True, batch_size: int = 256, max_length: int = 32,
                progress: bool = False) -> List[ItemTable]:
    """Perplexity tables of every item for the permutations `config` needs (the full n x n grid if `marginal`,
    else only the diagonal). Each distinct sentence is scored once."""
    config = (config or ScoringConfig()).validate()
    items = [check_item(it, f"item {k}") for k, it in enumerate(items)]
    pos_idx, neg_idx = config.positive_indices(), config.negative_indices()
    text_index: Dict[str, int] = {}
    layout = []  # (item, which, perm index, i, j, text id)
    for k, it in enumerate(items):
        h_q, t_q = it["stem"]
        n = len(it["choice"])
        cells = [(i, j) for i in range(n) for j in range(n)] if marginal else [(i, i) for i in range(n)]
        for which, perms, idx in (("positive", POSITIVE_PERMUTATIONS, pos_idx),
                                  ("negative", NEGATIVE_PERMUTATIONS, neg_idx)):
            for p in idx:
                for i, j in cells:
                    words = (h_q, t_q, it["choice"][i][0], it["choice"][j][1])
                    text = prompt([words[m] for m in perms[p]], config.template)
                    layout.append((k, which, p, i, j, text_index.setdefault(text, len(text_index))))
    texts = list(text_index)
    if progress and texts:
        from tqdm import tqdm

        ppl = np.concatenate([pseudo_perplexity(model, tokenizer, texts[s:s + 1024], batch_size, max_length)
                              for s in tqdm(range(0, len(texts), 1024), desc="pseudo-perplexity", unit="x1024")])
    else:
        ppl = pseudo_perplexity(model, tokenizer, texts, batch_size, max_length)
    tables = []
    for it in items:
        n = len(it["choice"])
        tables.append(ItemTable(np.full((len(POSITIVE_PERMUTATIONS), n, n), np.nan),
                                np.full((len(NEGATIVE_PERMUTATIONS), n, n), np.nan), it["answer"]))
    for k, which, p, i, j, t in layout:
        getattr(tables[k], which)[p, i, j] = ppl[t]
    return tables


# -- the scores -------------------------------------------------------------------------------------------------------
def ppl_values(table: np.ndarray) -> np.ndarray:
    """S_ppl per option (lower is better): the diagonal of the n x n perplexity table."""
    return np.diagonal(table).copy()


def _marginals(table: np.ndarray):
    if not np.isfinite(table).all():
        raise ValueError("the marginal scores need the full n x n perplexity table (item_tables(marginal=True))")
    diag, row, col, total = np.diagonal(table), table.sum(1), table.sum(0), table.sum()
    return diag, row, col, total


def pmi_values(table: np.ndarray, alpha: float = 1.0, aggregation: str = "mean") -> np.ndarray:
    """S_pmi per option (lower is better), from the n x n table M[i, j] = PPL(h_q, t_q, h_i, t_j)."""
    diag, row, col, total = _marginals(table)
    cond_h, cond_t = np.log(diag / row), np.log(diag / col)
    mar_h, mar_t = np.log(row / total), np.log(col / total)
    both = np.stack([cond_h - alpha * mar_h, cond_t - alpha * mar_t])
    return _aggregate(both, aggregation, [0, 1])


def mppl_values(table: np.ndarray, weight_head: float = 1.0, weight_tail: float = 1.0) -> np.ndarray:
    """S_mppl per option (lower is better): normalised perplexity biased by the head / tail marginals."""
    diag, row, col, total = _marginals(table)
    return np.log(diag / diag.sum()) - weight_head * np.log(row / total) - weight_tail * np.log(col / total)


def option_values(table: np.ndarray, scorer: str, config: ScoringConfig) -> np.ndarray:
    scorer = canonical_scorer(scorer)
    if scorer == "ppl":
        return ppl_values(table)
    if scorer == "pmi":
        return pmi_values(table, float(config.pmi_alpha), config.pmi_aggregation)
    return mppl_values(table, float(config.mppl_weight_head), float(config.mppl_weight_tail))


def predict(table: ItemTable, scorer: str, config: Optional[ScoringConfig] = None) -> int:
    """The chosen option: argmax_i of negative_weight * agg_neg(v_i) - agg_pos(v_i) (first index on ties)."""
    config = (config or ScoringConfig()).validate()
    pos_idx, neg_idx = config.positive_indices(), config.negative_indices()
    pos = np.stack([option_values(table.positive[p], scorer, config) for p in pos_idx])
    logit = -_aggregate(pos, config.positive_aggregation, pos_idx)
    if neg_idx:
        neg = np.stack([option_values(table.negative[p], scorer, config) for p in neg_idx])
        logit = logit + float(config.negative_weight) * _aggregate(neg, config.negative_aggregation, neg_idx)
    if not np.isfinite(logit).all():
        raise ValueError(f"non-finite {scorer} scores {logit}; were the needed perplexities computed?")
    return int(np.argmax(logit))


def accuracy(tables: Sequence[ItemTable], scorer: str, config: Optional[ScoringConfig] = None) -> float:
    if not tables:
        raise ValueError("accuracy of an empty analogy set")
    return float(np.mean([predict(t, scorer, config) == t.answer for t in tables]))


def evaluate(model: nn.Module, tokenizer, items: Sequence[Mapping], scorers: Iterable[str] = SCORERS,
             config: Optional[ScoringConfig] = None, batch_size: int = 256, max_length: int = 32,
             progress: bool = False) -> Dict[str, float]:
    """Accuracy of each scorer on `items`, sharing one set of perplexities: {"ppl": ..., "pmi": ..., "mppl": ...}."""
    scorers = [canonical_scorer(s) for s in scorers]
    marginal = any(s in ("pmi", "mppl") for s in scorers)
    tables = item_tables(model, tokenizer, items, config, marginal, batch_size, max_length, progress)
    return {s: accuracy(tables, s, config) for s in scorers}


def score_dataset(model: nn.Module, tokenizer, items: Sequence[Mapping], scorer: str,
                  config: Optional[ScoringConfig] = None, batch_size: int = 256, max_length: int = 32) -> float:
    """Accuracy in [0, 1] of one scorer ("ppl" | "pmi" | "mppl", or S_ppl / S_pmi / S_mppl) on `items`."""
    return evaluate(model, tokenizer, items, [scorer], config, batch_size, max_length)[canonical_scorer(scorer)]


# -- data -------------------------------------------------------------------------------------------------------------
def load_analogy_jsonl(path: Union[str, Path]) -> List[dict]:
    """Items of one jsonl file (one JSON object per line; blank lines skipped; extra keys ignored)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"analogy file {path} not found")
    items = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        items.append(check_item(obj, f"{path}:{lineno}"))
    if not items:
        raise UserError(f"{path}: no analogy items")
    return items


def _split_files(directory: Path, split: str) -> List[Path]:
    names = ["valid", "test"] if split == "all" else [split]
    return [directory / f"{n}.jsonl" for n in names if (directory / f"{n}.jsonl").is_file()]


def load_analogy_datasets(root: Union[str, Path], split: str = "test",
                          names: Optional[Sequence[str]] = None) -> Dict[str, List[dict]]:
    """{dataset name: items} from Ushio et al.'s release layout ROOT/<name>/{valid,test}.jsonl (sat, u2, u4, google,
    bats first, then any other sub-folder holding the split), or flat ROOT/<name>.jsonl files, or ROOT itself being
    one dataset's folder. `split`: test, valid, or all (valid + test, as the spherization copy merged them)."""
    root = Path(root).expanduser()
    if split not in SPLITS:
        raise ConfigError(f"analogy split {split!r}: expected one of {SPLITS}")
    if not root.is_dir():
        raise UserError(f"analogy data directory {root} not found: download analogy_test_dataset.zip from "
                        f"github.com/asahi417/AnalogyTools/releases and unzip it there")
    found: Dict[str, List[Path]] = {}
    if _split_files(root, split):
        found[root.name] = _split_files(root, split)
    else:
        subdirs = sorted((d for d in root.iterdir() if d.is_dir()),
                         key=lambda d: (DATASETS.index(d.name) if d.name in DATASETS else len(DATASETS), d.name))
        for d in subdirs:
            if _split_files(d, split):
                found[d.name] = _split_files(d, split)
        for f in sorted(root.glob("*.jsonl")):
            if f.stem not in found and split in ("test", "all"):
                found[f.stem] = [f]
    if names is not None:
        missing = [n for n in names if n not in found]
        if missing:
            raise UserError(f"analogy data: no {split} split for {missing} under {root} (found {sorted(found)})")
        found = {n: found[n] for n in names}
    if not found:
        raise UserError(f"no analogy jsonl under {root} for split {split!r}: expected e.g. {root}/sat/test.jsonl "
                        f"(unzip analogy_test_dataset.zip from github.com/asahi417/AnalogyTools/releases)")
    return {name: [it for f in files for it in load_analogy_jsonl(f)] for name, files in found.items()}


def config_from(**overrides) -> ScoringConfig:
    """A validated ScoringConfig with the given (non-None) fields overridden."""
    known = {f.name for f in fields(ScoringConfig)}
    bad = sorted(set(overrides) - known)
    if bad:
        raise ConfigError(f"unknown scoring option(s) {bad}; known: {sorted(known)}")
    return replace(ScoringConfig(), **{k: v for k, v in overrides.items() if v is not None}).validate()


__all__ = ["TEMPLATES", "DEFAULT_TEMPLATE", "POSITIVE_PERMUTATIONS", "NEGATIVE_PERMUTATIONS", "SCORERS",
           "SCORER_LABELS", "DATASETS", "SPLITS", "ScoringConfig", "ItemTable", "canonical_scorer", "template_text",
           "prompt", "pseudo_perplexity", "check_item", "item_tables", "ppl_values", "pmi_values", "mppl_values",
           "option_values", "predict", "accuracy", "evaluate", "score_dataset", "load_analogy_jsonl",
           "load_analogy_datasets", "config_from"]
