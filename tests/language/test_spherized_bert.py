"""Spherized last encoder layer of tiny random BERT / RoBERTa masked LMs, save/reload, and scripts/train_mlm.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from vmf_embeddings.errors import ConfigError, WeightsUnavailableError  # noqa: E402
from vmf_embeddings.language.spherized_bert import (encoder_layers, is_spherized, load_masked_lm,  # noqa: E402
                                                    load_tokenizer, save_pretrained_atomic, spherization_of,
                                                    spherize_last_layer)
from vmf_embeddings.layers.spherization import SphericalLinear, Spherization  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
WORDS = ("dog puppy cat kitten cow calf car wheel bird nest sheep lamb hand finger is to what as the a of and in "
         "river water tree leaf , .").split()
SPECIALS_BERT = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SPECIALS_ROBERTA = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=72)


def bert_tokenizer(tmp_path: Path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(SPECIALS_BERT + list(WORDS)) + "\n")
    return transformers.BertTokenizer(str(vocab))  # positional: `vocab_file=` is ignored by transformers 5


def roberta_tokenizer(tmp_path: Path):
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    text = [" ".join(WORDS)] * 3 + ["dog is to puppy what cat is to kitten", "the water of the river"]
    bpe.train_from_iterator(text, vocab_size=320, min_frequency=1, special_tokens=SPECIALS_ROBERTA,
                            show_progress=False)
    folder = tmp_path / "bpe"
    folder.mkdir()
    bpe.save_model(str(folder))
    return transformers.RobertaTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))


def tiny_model(kind: str, tmp_path: Path, seed: int = 0):
    torch.manual_seed(seed)
    if kind == "bert":
        tok = bert_tokenizer(tmp_path)
        model = transformers.BertForMaskedLM(transformers.BertConfig(vocab_size=len(tok), **TINY))
    else:
        tok = roberta_tokenizer(tmp_path)
        model = transformers.RobertaForMaskedLM(transformers.RobertaConfig(
            vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id, **TINY))
    return model.eval(), tok


def batch(tok, sentences=("dog is to puppy what cat is to kitten", "the water of the river")):
    return tok(list(sentences), return_tensors="pt", padding=True)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_last_layer_spherized_and_earlier_layers_unchanged(kind, tmp_path):
    model, _ = tiny_model(kind, tmp_path)
    before = {k: v.clone() for k, v in encoder_layers(model)[0].state_dict().items()}
    first_act = type(encoder_layers(model)[0].intermediate.intermediate_act_fn)
    assert spherize_last_layer(model) is model and is_spherized(model)
    layers = encoder_layers(model)
    after = layers[0].state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert type(layers[0].intermediate.intermediate_act_fn) is first_act is not torch.nn.Identity
    assert isinstance(layers[0].output.dense, torch.nn.Linear)
    last = layers[-1]
    assert isinstance(last.intermediate.intermediate_act_fn, torch.nn.Identity)
    dense = last.output.dense
    assert isinstance(dense, SphericalLinear) and dense.spherize.n == 64
    assert dense.linear.in_features == 65 and dense.linear.out_features == 32 and dense.linear.bias is None
    assert isinstance(dense.spherize.scaling, torch.nn.Parameter) and "radius" in dict(dense.spherize.named_buffers())
    assert dense.spherize.scaling.item() == 5.0 and dense.spherize.radius.item() == 5.0
    assert model.config.spherization == {"scaling": 5.0, "radius": 5.0, "learn_scaling": True,
                                         "learn_radius": False, "delta": 1e-6}
    with pytest.raises(ConfigError, match="already spherized"):
        spherize_last_layer(model)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_ffn_goes_through_the_sphere_without_gelu(kind, tmp_path):
    model, tok = tiny_model(kind, tmp_path)
    spherize_last_layer(model, scaling=3.0, radius=2.5)
    last = encoder_layers(model)[-1]
    seen = {}
    hooks = [last.intermediate.dense.register_forward_hook(lambda m, i, o: seen.__setitem__("pre", o)),
             last.intermediate.register_forward_hook(lambda m, i, o: seen.__setitem__("inter", o)),
             spherization_of(model).register_forward_hook(lambda m, i, o: seen.__setitem__("sph", (i[0], o)))]
    with torch.no_grad():
        model(**batch(tok))
    for h in hooks:
        h.remove()
    assert torch.equal(seen["pre"], seen["inter"])  # no activation between the dense layer and the sphere
    z, x = seen["sph"]
    assert torch.equal(z, seen["inter"]) and x.shape == z.shape[:-1] + (65,)
    norms = x.double().norm(dim=-1)
    assert torch.allclose(norms, torch.full_like(norms, 2.5), rtol=1e-5)
    assert (x >= 0).all()


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_forward_backward(kind, tmp_path):
    model, tok = tiny_model(kind, tmp_path)
    spherize_last_layer(model)
    model.train()
    enc = batch(tok)
    out = model(**enc, labels=enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    sph_linear = encoder_layers(model)[-1].output.dense
    assert sph_linear.spherize.scaling.grad is not None and torch.isfinite(sph_linear.spherize.scaling.grad)
    assert sph_linear.linear.weight.grad is not None and sph_linear.linear.weight.grad.abs().sum() > 0
    assert encoder_layers(model)[0].intermediate.dense.weight.grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_save_reload_round_trip(kind, tmp_path):
    model, tok = tiny_model(kind, tmp_path)
    spherize_last_layer(model, learn_radius=True)
    with torch.no_grad():
        spherization_of(model).scaling.fill_(3.7)
        spherization_of(model).radius.fill_(4.2)
    out = save_pretrained_atomic(model, tok, tmp_path / "saved", extra={"note.txt": "hi\n"})
    assert (out / "config.json").is_file() and (out / "note.txt").read_text() == "hi\n"
    assert json.loads((out / "config.json").read_text())["spherization"]["learn_radius"] is True
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    reloaded = load_masked_lm(out)
    assert is_spherized(reloaded) and isinstance(spherization_of(reloaded), Spherization)
    assert spherization_of(reloaded).scaling.item() == pytest.approx(3.7)
    assert spherization_of(reloaded).radius.item() == pytest.approx(4.2)
    a, b = model.state_dict(), reloaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    emb = reloaded.get_input_embeddings().weight
    assert reloaded.get_output_embeddings().weight.data_ptr() == emb.data_ptr()  # tying survived
    enc = batch(load_tokenizer(out))
    with torch.no_grad():
        assert torch.allclose(model(**enc).logits, reloaded(**enc).logits, atol=1e-6)
    # overwriting an existing output directory works too
    save_pretrained_atomic(reloaded, tok, out)
    assert is_spherized(load_masked_lm(out))


def test_plain_model_round_trip_stays_plain(tmp_path):
    model, tok = tiny_model("bert", tmp_path)
    out = save_pretrained_atomic(model, tok, tmp_path / "plain")
    reloaded = load_masked_lm(out)
    assert not is_spherized(reloaded)
    assert all(torch.equal(v, reloaded.state_dict()[k]) for k, v in model.state_dict().items())


def test_bad_inputs(tmp_path):
    with pytest.raises(ConfigError, match="BERT-like"):
        spherize_last_layer(torch.nn.Linear(3, 3))
    with pytest.raises(WeightsUnavailableError, match="local path"):
        load_masked_lm(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsUnavailableError, match="config.json"):
        load_tokenizer(tmp_path / "empty")
    model, _ = tiny_model("bert", tmp_path)
    with pytest.raises(ConfigError):
        spherize_last_layer(model, radius=0.0)
    assert not is_spherized(model)


# -- scripts/train_mlm.py ---------------------------------------------------------------------------------------------
def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_{name}_script", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _corpus(path: Path, lines: int = 20) -> Path:
    """Passages over three words only: a skewed unigram distribution that a few SGD steps already pick up."""
    gen = torch.Generator().manual_seed(0)
    words = ("dog", "cat", "the")
    text = [" ".join(words[int(i)] for i in torch.randint(3, (int(torch.randint(5, 13, (1,), generator=gen)),),
                                                          generator=gen)) for _ in range(lines)]
    path.write_text("\n".join(text) + "\n\n")
    return path


def test_train_mlm_spherized_run_lowers_loss_and_saves(tmp_path, capsys):
    model, tok = tiny_model("bert", tmp_path)
    save_pretrained_atomic(model, tok, tmp_path / "tiny")
    corpus = _corpus(tmp_path / "train.txt")
    out = tmp_path / "trained"
    rc = _script("train_mlm").main(["--model", str(tmp_path / "tiny"), "--train-file", str(corpus), "--out", str(out),
                                    "--spherize", "--epochs", "1", "--batch-size", "4", "--max-length", "32",
                                    "--lr", "0.1", "--eval-file", str(corpus), "--device", "cpu", "--no-progress"])
    assert rc == 0
    log = json.loads((out / "train_log.json").read_text())
    assert log["spherized"] and log["passages"] == 20 and [h["epoch"] for h in log["history"]] == [0, 1]
    assert log["history"][1]["steps"] == 5 and log["history"][1]["eval_loss"] < log["history"][0]["eval_loss"]
    reloaded = load_masked_lm(out)
    assert is_spherized(reloaded) and load_tokenizer(out).mask_token == "[MASK]"
    assert spherization_of(reloaded).scaling.item() != 5.0  # s is learnt
    assert "saved to" in capsys.readouterr().out


def _error_lines(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


def test_train_mlm_one_line_errors(tmp_path, capsys):
    model, tok = tiny_model("bert", tmp_path)
    save_pretrained_atomic(model, tok, tmp_path / "tiny")
    train = _script("train_mlm")
    capsys.readouterr()
    rc = train.main(["--model", str(tmp_path / "tiny"), "--train-file", str(tmp_path / "missing.raw"),
                     "--out", str(tmp_path / "o"), "--no-progress"])
    err = _error_lines(capsys)
    assert rc == 1 and len(err) == 1 and "--train-file" in err[0] and "not found" in err[0]
    rc = train.main(["--model", str(tmp_path / "no-model"), "--train-file", str(_corpus(tmp_path / "t.txt")),
                     "--out", str(tmp_path / "o"), "--no-progress"])
    err = _error_lines(capsys)
    assert rc == 1 and len(err) == 1 and "machine with internet" in err[0] and "local path" in err[0]
    assert not (tmp_path / "o").exists()
