"""Analogy scorers (S_ppl / S_pmi / S_mppl of Ushio et al.) on tiny random masked LMs, and scripts/word_analogy.py."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from vmf_embeddings.errors import ConfigError, UserError  # noqa: E402
from vmf_embeddings.language import analogy  # noqa: E402
from vmf_embeddings.language.analogy import (NEGATIVE_PERMUTATIONS, POSITIVE_PERMUTATIONS, ItemTable,  # noqa: E402
                                             ScoringConfig, evaluate, item_tables, load_analogy_datasets,
                                             mppl_values, pmi_values, predict, prompt, pseudo_perplexity,
                                             score_dataset)

REPO = Path(__file__).resolve().parents[2]
WORDS = ("dog puppy cat kitten cow calf car wheel bird nest sheep lamb hand finger is to what as the a of and in "
         "river water tree leaf , .").split()
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=72)
ITEMS = [
    {"stem": ["dog", "puppy"], "choice": [["car", "wheel"], ["cat", "kitten"], ["bird", "nest"]], "answer": 1},
    {"stem": ["cow", "calf"], "choice": [["sheep", "lamb"], ["hand", "finger"], ["tree", "leaf"]], "answer": 0},
    {"stem": ["river", "water"], "choice": [["dog", "cat"], ["car", "wheel"], ["tree", "leaf"], ["bird", "nest"]],
     "answer": 2},
    {"stem": ["hand", "finger"], "choice": [["tree", "leaf"], ["cow", "sheep"]], "answer": 0},
]


@pytest.fixture
def bert(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(WORDS)) + "\n")
    tok = transformers.BertTokenizer(str(vocab))  # positional: `vocab_file=` is ignored by transformers 5
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(transformers.BertConfig(vocab_size=len(tok), **TINY)).eval()
    return model, tok


@pytest.fixture
def roberta(tmp_path):
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([" ".join(WORDS)] * 3, vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False)
    bpe.save_model(str(tmp_path))
    tok = transformers.RobertaTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    torch.manual_seed(0)
    config = transformers.RobertaConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, **TINY)
    return transformers.RobertaForMaskedLM(config).eval(), tok


def brute_force_ppl(model, tok, sentence: str) -> float:
    """One forward pass per masked token, full logits: the definition, with no batching or shortcuts."""
    enc = tok(sentence, return_special_tokens_mask=True)
    ids = torch.tensor(enc["input_ids"])
    nll = []
    with torch.no_grad():
        for p, special in enumerate(enc["special_tokens_mask"]):
            if special:
                continue
            masked = ids.clone()
            masked[p] = tok.mask_token_id
            logits = model(input_ids=masked[None]).logits[0, p]
            nll.append(-torch.log_softmax(logits.double(), -1)[ids[p]].item())
    return math.exp(sum(nll) / len(nll))


# -- prompts and permutations -----------------------------------------------------------------------------------------
def test_prompts():
    assert prompt(["dog", "puppy", "cat", "kitten"]) == "dog is to puppy what cat is to kitten"
    assert prompt(["a", "b", "c", "d"], "is-to-as") == "a is to b as c is to d"
    assert prompt(["a", "b", "c", "d"], "as-what-same").endswith("what c is to d.")
    assert prompt(["x", "y", "z", "w"], "<obj-b>:<subj-b> :: <obj-a>:<subj-a>") == "w:z :: y:x"
    assert prompt(["<obj-a>", "b", "c", "d"]) == "<obj-a> is to b what c is to d"  # words are not re-substituted
    with pytest.raises(ConfigError, match="placeholder"):
        prompt(["a", "b", "c", "d"], "no placeholders")


def test_permutations_cover_all_orders():
    perms = POSITIVE_PERMUTATIONS + NEGATIVE_PERMUTATIONS
    assert len(POSITIVE_PERMUTATIONS) == 8 and len(NEGATIVE_PERMUTATIONS) == 16
    assert sorted(perms) == sorted(itertools.permutations(range(4)))
    assert POSITIVE_PERMUTATIONS[0] == (0, 1, 2, 3)
    # the positives are the symmetries of a:b::c:d, i.e. the orders whose extremes (first and last word) are
    # {a, d} or {b, c}; every negative breaks that
    for p in perms:
        assert ({p[0], p[3]} in ({0, 3}, {1, 2})) == (p in POSITIVE_PERMUTATIONS)


# -- pseudo-perplexity ------------------------------------------------------------------------------------------------
def test_pseudo_perplexity_equals_brute_force_bert(bert):
    model, tok = bert
    sentence = "dog is to puppy what cat is to kitten"
    expected = brute_force_ppl(model, tok, sentence)
    others = ["the water of the river", "a tree", sentence, "hand is to finger what tree is to leaf , and ."]
    for batch_size in (1, 3, 1000):
        got = pseudo_perplexity(model, tok, others, batch_size=batch_size)
        assert got[2] == pytest.approx(expected, rel=1e-5)
        assert got[0] == pytest.approx(brute_force_ppl(model, tok, others[0]), rel=1e-5)
    assert not model.training


def test_pseudo_perplexity_equals_brute_force_roberta(roberta):
    model, tok = roberta
    sentences = ["dog is to puppy what cat is to kitten", "the river"]
    got = pseudo_perplexity(model, tok, sentences, batch_size=4)
    assert got == pytest.approx([brute_force_ppl(model, tok, s) for s in sentences], rel=1e-5)


def test_pseudo_perplexity_fallback_path_agrees(bert, monkeypatch):
    model, tok = bert
    sentences = ["dog is to puppy what cat is to kitten", "the water"]
    fast = pseudo_perplexity(model, tok, sentences)
    monkeypatch.setattr(analogy, "_head_split", lambda m: None)  # full-logits path, as for other model classes
    assert pseudo_perplexity(model, tok, sentences) == pytest.approx(fast, rel=1e-6)


# -- the score formulas against a port of their list code -------------------------------------------------------------
def reference_scores(ppl_scores, alpha, w_head, w_tail):
    """Their compute_ppl_pmi (mean aggregation) and compute_ppl_mar on a flat row-major n*n list."""
    n = int(len(ppl_scores) ** 0.5)
    cond_h = [math.log(ppl_scores[n * x + x] / sum(ppl_scores[n * x: n * (x + 1)])) for x in range(n)]
    cond_t = [math.log(ppl_scores[n * x + x] / sum(ppl_scores[n * y + x] for y in range(n))) for x in range(n)]
    out_t = [sum(ppl_scores[x + n * y] for y in range(n)) for x in range(n)]
    mar_t = [math.log(v / sum(out_t)) for v in out_t]
    out_h = [sum(ppl_scores[x * n: (x + 1) * n]) for x in range(n)]
    mar_h = [math.log(v / sum(out_h)) for v in out_h]
    pmi = [((ch - mh * alpha) + (ct - mt * alpha)) / 2 for ch, mh, ct, mt in zip(cond_h, mar_h, cond_t, mar_t)]
    diag = [ppl_scores[n * x + x] for x in range(n)]
    cond = [math.log(d / sum(diag)) for d in diag]
    mppl = [c - w_head * mh - w_tail * mt for c, mh, mt in zip(cond, mar_h, mar_t)]
    return pmi, mppl


@pytest.mark.parametrize("alpha,w_head,w_tail", [(1.0, 1.0, 1.0), (0.0, 0.2, -0.4), (-0.4, -0.2, 0.4)])
def test_pmi_and_mppl_match_their_code(alpha, w_head, w_tail):
    rng = np.random.default_rng(3)
    table = rng.uniform(5, 80, size=(4, 4))
    pmi, mppl = reference_scores(table.ravel().tolist(), alpha, w_head, w_tail)
    assert pmi_values(table, alpha) == pytest.approx(pmi, abs=1e-12)
    assert mppl_values(table, w_head, w_tail) == pytest.approx(mppl, abs=1e-12)
    # with the mean over both directions, pairing cond_h with mar_t (textbook PMI) gives the same value
    row, col, total, d = table.sum(1), table.sum(0), table.sum(), np.diagonal(table)
    textbook = (np.log(d / row) - alpha * np.log(col / total) + np.log(d / col) - alpha * np.log(row / total)) / 2
    assert pmi_values(table, alpha) == pytest.approx(textbook, abs=1e-12)


def test_predict_aggregations_and_negative_permutations():
    n = 3
    pos = np.full((8, n, n), 10.0)
    neg = np.full((16, n, n), 10.0)
    pos[0, 0, 0] = 1.0    # permutation 0 prefers option 0
    pos[1:, 2, 2] = 2.0   # the other positive permutations prefer option 2
    table = ItemTable(pos, neg, answer=2)
    assert predict(table, "ppl") == 0
    assert predict(table, "ppl", ScoringConfig(positive_aggregation="mean")) == 2
    assert predict(table, "ppl", ScoringConfig(positive_aggregation="index_3")) == 2
    neg[:, 0, 0] = 50.0   # option 0 reads badly as a non-analogy: high negative ppl lifts its logit
    cfg = ScoringConfig(positive_aggregation="index_0", negative_weight=1.0)
    assert predict(ItemTable(pos, neg, 0), "ppl", cfg) == 0
    neg[:, 0, 0] = 10.0
    neg[:, 2, 2] = 1000.0
    assert predict(ItemTable(pos, neg, 2), "ppl", cfg) == 2
    with pytest.raises(ConfigError):
        ScoringConfig(positive_aggregation="index_8").validate()
    with pytest.raises(ValueError, match="n x n"):
        pmi_values(np.diag([1.0, 2.0]) + np.array([[0, np.nan], [np.nan, 0]]))


# -- the scorers end to end -------------------------------------------------------------------------------------------
def test_scorers_give_accuracies_in_unit_interval(bert):
    model, tok = bert
    result = evaluate(model, tok, ITEMS, batch_size=64)
    assert set(result) == {"ppl", "pmi", "mppl"} and all(0.0 <= v <= 1.0 for v in result.values())
    assert score_dataset(model, tok, ITEMS, "S_ppl") == result["ppl"]
    assert score_dataset(model, tok, ITEMS, "pmi") == result["pmi"]
    config = ScoringConfig(template="is-to-as", positive_aggregation="mean", negative_weight=0.4)
    assert 0.0 <= score_dataset(model, tok, ITEMS[:2], "mppl", config) <= 1.0
    with pytest.raises(ConfigError, match="unknown analogy scorer"):
        score_dataset(model, tok, ITEMS, "cosine")


def test_ppl_picks_the_sentence_a_rigged_model_prefers(bert):
    """Logits = the output bias only (decoder weight zeroed): the words with the highest bias win."""
    model, tok = bert
    head = model.get_output_embeddings()
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        for word in ("cat", "kitten", "sheep", "lamb", "tree", "leaf"):
            head.bias[tok.convert_tokens_to_ids(word)] = 6.0
    assert score_dataset(model, tok, ITEMS[:3], "ppl") == 1.0
    with torch.no_grad():
        head.bias.zero_()
        head.bias[tok.convert_tokens_to_ids("car")] = 6.0
        head.bias[tok.convert_tokens_to_ids("wheel")] = 6.0
    assert score_dataset(model, tok, ITEMS[:1], "ppl") == 0.0  # now (car, wheel) reads best


def test_every_scorer_picks_the_sentence_with_low_perplexity(bert, monkeypatch):
    model, tok = bert
    item = ITEMS[0]
    preferred = "dog is to puppy what cat is to kitten"
    seen = []

    def fake_ppl(model_, tok_, sentences, batch_size=256, max_length=32):
        seen.extend(sentences)
        return np.array([0.2 if s == preferred else 1.0 for s in sentences])

    monkeypatch.setattr(analogy, "pseudo_perplexity", fake_ppl)
    assert evaluate(model, tok, [item]) == {"ppl": 1.0, "pmi": 1.0, "mppl": 1.0}
    heads, tails = [c[0] for c in item["choice"]], [c[1] for c in item["choice"]]
    assert sorted(seen) == sorted(prompt(["dog", "puppy", h, t]) for h in heads for t in tails)  # the n x n grid
    seen.clear()
    tables = item_tables(model, tok, [item], ScoringConfig(positive_aggregation="mean"), marginal=False)
    assert len(seen) == 8 * 3 and np.isnan(tables[0].positive[0, 0, 1]) and np.isnan(tables[0].negative).all()


# -- data loading -----------------------------------------------------------------------------------------------------
def _write(path: Path, items) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(dict(it, prefix="x")) for it in items) + "\n\n")


def test_load_datasets_layouts_and_errors(tmp_path):
    _write(tmp_path / "u2" / "test.jsonl", ITEMS[:2])
    _write(tmp_path / "sat" / "test.jsonl", ITEMS[:3])
    _write(tmp_path / "sat" / "valid.jsonl", ITEMS[3:])
    _write(tmp_path / "extra" / "test.jsonl", ITEMS[:1])
    data = load_analogy_datasets(tmp_path)
    assert list(data) == ["sat", "u2", "extra"] and len(data["sat"]) == 3
    assert data["sat"][0] == ITEMS[0]  # extra keys dropped
    assert {k: len(v) for k, v in load_analogy_datasets(tmp_path, "all").items()} == {"sat": 4, "u2": 2, "extra": 1}
    assert list(load_analogy_datasets(tmp_path, "valid")) == ["sat"]
    assert list(load_analogy_datasets(tmp_path / "sat")) == ["sat"]  # one dataset's folder
    with pytest.raises(UserError, match="no test split for"):
        load_analogy_datasets(tmp_path, names=["google"])
    with pytest.raises(UserError, match="AnalogyTools"):
        load_analogy_datasets(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "test.jsonl").write_text('{"stem": ["a", "b"], "choice": [["c", "d"]], "answer": 0}\n')
    with pytest.raises(UserError, match=r"test.jsonl:1: 'choice'"):
        load_analogy_datasets(tmp_path)
    (tmp_path / "bad" / "test.jsonl").write_text('{"stem": ["a", "b"], "choice": [["c", "d"], ["e", "f"]], '
                                                 '"answer": 2}\n')
    with pytest.raises(UserError, match="'answer'"):
        load_analogy_datasets(tmp_path)


# -- scripts/word_analogy.py ------------------------------------------------------------------------------------------
def test_word_analogy_script_prints_table(bert, tmp_path, capsys):
    from vmf_embeddings.language.spherized_bert import save_pretrained_atomic, spherize_last_layer

    model, tok = bert
    save_pretrained_atomic(model, tok, tmp_path / "bert")
    save_pretrained_atomic(spherize_last_layer(model), tok, tmp_path / "sphbert")
    _write(tmp_path / "data" / "sat" / "test.jsonl", ITEMS[:2])
    _write(tmp_path / "data" / "u2" / "test.jsonl", ITEMS[2:])
    spec = importlib.util.spec_from_file_location("_word_analogy_script", REPO / "scripts" / "word_analogy.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    capsys.readouterr()
    rc = script.main(["--model", str(tmp_path / "bert"), str(tmp_path / "sphbert"), "--data", str(tmp_path / "data"),
                      "--device", "cpu", "--no-progress", "--json", str(tmp_path / "res.json")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "| Model | SAT | U2 | Avg. |" in out and "| bert |" in out and "| sphbert |" in out
    result = json.loads((tmp_path / "res.json").read_text())
    assert result["spherized"] == {"bert": False, "sphbert": True} and result["items"] == {"sat": 2, "u2": 2}
    for row in result["accuracy"].values():
        assert all(0.0 <= v <= 1.0 for per in row.values() for v in per.values())
    rc = script.main(["--model", str(tmp_path / "bert"), "--data", str(tmp_path / "none"), "--no-progress"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert rc == 1 and len(err) == 1 and "not found" in err[0]
