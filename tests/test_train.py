"""End-to-end training on the bundled digits: accuracy, resume, errors, extraction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import vmf_embeddings.train as train_module
from tests.conftest import FAST, compose_config
from vmf_embeddings.errors import CheckpointError, ConfigError, NonFiniteLossError
from vmf_embeddings.main import run

METHODS = ["unnormalized_sce", "normalized_sce", "arcface", "hyperbolic_sce", "vmf_softmax"]
# The default config with a shorter budget: 12 epochs of 50 episodes (10 classes x 13) instead of
# up to 1000 epochs of 250 with patience 35, so five methods train in about a minute on 2 cores.
SHORT = ["mode.epochs=12", "sampler.n_episodes=50"]


def _train(tmp_path: Path, overrides, name="run"):
    cfg = compose_config(FAST + overrides)
    run_dir = tmp_path / name
    best = run(cfg, run_dir)
    return cfg, run_dir, best


def _extract(tmp_path: Path, run_dir: Path, overrides=()):
    cfg = compose_config(FAST + ["mode=get_embeddings", *overrides])
    run(cfg, run_dir)
    return {split: np.load(run_dir / "embeddings" / f"{split}.npz") for split in ("train", "val", "test")}


def _test_accuracy(arrays) -> float:
    """From the predictive log-probabilities extraction writes (vMF: the paper's Monte-Carlo prediction)."""
    test = arrays["test"]
    return float((test["log_probs"].argmax(1) == test["labels"]).mean())


@pytest.mark.parametrize("method", METHODS)
def test_every_method_reaches_90_percent_on_digits(tmp_path, method):
    cfg, run_dir, best = _train(tmp_path, [f"method={method}", *SHORT])
    assert best >= 0.9, best
    assert (run_dir / "checkpoints" / "best.pt").is_file() and (run_dir / "checkpoints" / "last.pt").is_file()
    assert (run_dir / "config.yaml").is_file() and (run_dir / "metrics.jsonl").is_file()
    arrays = _extract(tmp_path, run_dir)
    test = arrays["test"]
    assert test["embeddings"].dtype == np.float32 and test["labels"].dtype == np.int64
    assert test["embeddings"].shape == (len(test["labels"]), 3)
    from vmf_embeddings.build import build_model

    assert str(test["geometry"]) == build_model(cfg).head.geometry
    if method == "vmf_softmax":
        np.testing.assert_allclose(test["kappa"], np.linalg.norm(test["embeddings"], axis=1), rtol=1e-5)
        assert {"weights", "temperature", "z_kappa_mult"} <= set(test.files)
    if method == "hyperbolic_sce":
        assert float(test["curvature"]) == pytest.approx(1e-5)
    assert _test_accuracy(arrays) >= 0.9
    # calibrated too, not only accurate (at beta = 1 the temperature methods sat at ECE 0.6-0.7)
    import json

    assert json.loads((run_dir / "metrics.json").read_text())["test"]["ece"] < 0.1


def test_killed_and_resumed_run_ends_with_identical_weights(tmp_path, monkeypatch):
    overrides = ["method=vmf_softmax", "mode.epochs=3", "sampler.n_episodes=6"]
    _, straight_dir, _ = _train(tmp_path, overrides, name="straight")

    def kill_after_first(epoch):
        if epoch == 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_after_epoch", kill_after_first)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, overrides, name="killed")
    monkeypatch.setattr(train_module, "_after_epoch", lambda epoch: None)
    killed_dir = tmp_path / "killed"
    assert torch.load(killed_dir / "checkpoints" / "last.pt", weights_only=False)["epoch"] == 0
    with pytest.raises(CheckpointError, match="resume=true"):
        _train(tmp_path, overrides, name="killed")  # never overwritten silently
    _train(tmp_path, overrides + ["resume=true"], name="killed")
    a = torch.load(straight_dir / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(killed_dir / "checkpoints" / "last.pt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 2 and b["finished"]
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=0, msg=key)


def test_finished_run_is_not_overwritten(tmp_path):
    overrides = ["mode.epochs=1", "sampler.n_episodes=2"]
    _train(tmp_path, overrides)
    with pytest.raises(CheckpointError, match="finished run"):
        _train(tmp_path, overrides)
    _train(tmp_path, overrides + ["overwrite=true"])


def test_nan_loss_stops_with_step_named_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    overrides = ["mode.epochs=3", "sampler.n_episodes=4"]
    from vmf_embeddings.methods.softmax import UnnormalizedSoftmax

    original = UnnormalizedSoftmax.loss
    calls = {"n": 0}

    def poisoned(self, embeddings, labels, targets=None):
        calls["n"] += 1
        loss = original(self, embeddings, labels, targets)
        return loss * float("nan") if calls["n"] == 6 else loss  # epoch 1, step 1

    monkeypatch.setattr(UnnormalizedSoftmax, "loss", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 1") as info:
        _train(tmp_path, overrides)
    assert "\n" not in str(info.value)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)
    assert state["epoch"] == 0 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_get_embeddings_without_checkpoint_names_the_path(tmp_path):
    cfg = compose_config(FAST + ["mode=get_embeddings"])
    with pytest.raises(CheckpointError, match=str(tmp_path / "nothing")):
        run(cfg, tmp_path / "nothing")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["method=vmf_softmax", "arch.params.embedding_dim=1"], "embedding_dim"),
        (["method=vmf_softmax", "arch.params.use_vmf=false"], "arch.params.use_vmf"),
        (["method=unnormalized_sce", "arch.params.learn_temp=true"], "learn_temp"),
        (["arch.params.n_classes=7"], "arch.params.n_classes=7"),
        (["device=cuda:3"] if not torch.cuda.is_available() else ["mode.epochs=0"], "device|mode.epochs"),
    ],
)
def test_bad_configs_fail_up_front_in_one_line(tmp_path, overrides, message):
    cfg = compose_config(FAST[1:] + overrides)
    with pytest.raises(ConfigError, match=message) as info:
        run(cfg, tmp_path / "bad")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "bad" / "checkpoints").exists()


def test_amp_and_channels_last_path_trains(tmp_path):
    """The bf16-autocast + NHWC path a GPU run takes, exercised on CPU (GPU speed: scripts/bench_train.py)."""
    cfg, run_dir, best = _train(tmp_path, ["method=vmf_softmax", "amp=true", "channels_last=true",
                                           "mode.epochs=2", "sampler.n_episodes=20"])
    assert best > 0.5
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and "NaN" not in lines[-1]


def test_resume_refuses_a_model_change_before_writing_anything(tmp_path):
    overrides = ["method=normalized_sce", "mode.epochs=2", "sampler.n_episodes=2", "mode.evaluate_at_end=false"]
    _train(tmp_path, overrides)
    saved = (tmp_path / "run" / "config.yaml").read_bytes()
    with pytest.raises(ConfigError, match=r"arch.params.embedding_dim \(3 -> 8\).*method.params.init_temp") as info:
        _train(tmp_path, overrides + ["resume=true", "arch.params.embedding_dim=8", "arch.params.init_temp=-1.0"])
    assert "\n" not in str(info.value)
    assert (tmp_path / "run" / "config.yaml").read_bytes() == saved  # the record is untouched


def test_resume_accepts_a_longer_schedule(tmp_path):
    overrides = ["mode.epochs=1", "sampler.n_episodes=2", "mode.evaluate_at_end=false"]
    _train(tmp_path, overrides)
    _train(tmp_path, ["mode.epochs=2", "sampler.n_episodes=2", "mode.evaluate_at_end=false", "resume=true"])
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)
    assert state["epoch"] == 1 and state["step"] == 4
    assert "epochs: 2" in (tmp_path / "run" / "config.yaml").read_text()


def test_default_run_ends_with_metrics_and_a_printed_table(tmp_path, capsys):
    _train(tmp_path, ["mode.epochs=2", "sampler.n_episodes=3"])
    out = capsys.readouterr().out
    assert "accuracy" in out and "ECE" in out and str(tmp_path / "run" / "metrics.json") in out
    import json

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"accuracy", "ece", "nll", "recall@1", "map@r"} <= set(metrics["test"])
    assert (tmp_path / "run" / "embeddings" / "test.npz").is_file()


def test_head_hooks_run_in_order(tmp_path, monkeypatch):
    """on_train_start once, after_step every step, on_epoch_end and fit_class_state before each validation."""
    from vmf_embeddings.methods.softmax import UnnormalizedSoftmax

    calls = []
    monkeypatch.setattr(UnnormalizedSoftmax, "fits_class_state", True, raising=False)
    monkeypatch.setattr(UnnormalizedSoftmax, "on_train_start", lambda self, ctx, resumed: calls.append(
        ("start", resumed, tuple(ctx.embed_train().features.shape))), raising=False)
    monkeypatch.setattr(UnnormalizedSoftmax, "after_step", lambda self, step: calls.append(("step", step)),
                        raising=False)
    monkeypatch.setattr(UnnormalizedSoftmax, "on_epoch_end", lambda self, epoch: calls.append(("end", epoch)),
                        raising=False)
    monkeypatch.setattr(UnnormalizedSoftmax, "fit_class_state", lambda self, train: calls.append(
        ("fit", len(train.labels))), raising=False)
    _train(tmp_path, ["mode.epochs=2", "sampler.n_episodes=2", "mode.evaluate_at_end=false",
                      "mode.extract_at_end=false"])
    n_train = calls[0][2][0]
    assert calls == [("start", False, (n_train, 3)), ("step", 0), ("step", 1), ("end", 0), ("fit", n_train),
                     ("step", 2), ("step", 3), ("end", 1), ("fit", n_train)]
