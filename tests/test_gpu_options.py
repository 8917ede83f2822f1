"""GPU options: amp in bfloat16 or float16 (with a GradScaler), and compile=true with its eager fallback. The CPU
tests run everywhere; the CUDA ones run when a GPU is present and are skipped otherwise."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from tests.conftest import FAST, assert_same_weights, compose_config, killed_and_resumed_weights
from vmf_embeddings import checkpoint
from vmf_embeddings.errors import ConfigError
from vmf_embeddings.main import run
from vmf_embeddings.runtime import amp_setting

TINY = FAST + ["arch=simple_fnn", "mode.epochs=2", "mode.max_steps_per_epoch=4", "mode.extract_at_end=false",
               "mode.evaluate_at_end=false"]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_amp_setting_names_the_autocast_dtype():
    assert amp_setting(compose_config(["amp=false", "amp_dtype=float16"])) is False
    assert amp_setting(compose_config(["amp=true"])) is torch.bfloat16
    assert amp_setting(compose_config(["amp=true", "amp_dtype=float16"])) is torch.float16


def test_unknown_amp_dtype_is_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match="amp_dtype='int8' is not one of bfloat16, float16"):
        run(compose_config(TINY + ["amp_dtype=int8"]), tmp_path / "run")


def test_fp16_trains_with_a_grad_scaler_and_resumes_bit_for_bit(tmp_path, monkeypatch):
    overrides = TINY + ["amp=true", "amp_dtype=float16"]
    straight, resumed = killed_and_resumed_weights(overrides, tmp_path, monkeypatch)
    assert_same_weights(straight, resumed)
    state = checkpoint.load(tmp_path / "straight" / "checkpoints" / "last.pt")
    assert state["grad_scaler"]["scale"] > 0 and state["grad_scaler"]["_growth_tracker"] == 8  # 2 x 4 clean steps
    history = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(h["train/loss"])) for h in history)


def test_bf16_checkpoints_hold_no_grad_scaler(tmp_path):
    run(compose_config(TINY + ["amp=true"]), tmp_path / "run")
    assert "grad_scaler" not in checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pt")


def test_compile_falls_back_to_eager_with_one_warning(tmp_path, monkeypatch, caplog):
    calls = []

    def failing_compile(module, *args, **kwargs):
        def compiled(*a, **k):
            calls.append(1)
            raise RuntimeError("backend compiler failed\nlong inductor traceback")
        return compiled

    monkeypatch.setattr(torch, "compile", failing_compile)
    eager_dir, compiled_dir = tmp_path / "eager", tmp_path / "compiled"
    run(compose_config(TINY), eager_dir)
    with caplog.at_level(logging.WARNING):
        run(compose_config(TINY + ["compile=true"]), compiled_dir)
    warnings = [r.getMessage() for r in caplog.records if "torch.compile could not compile" in r.getMessage()]
    assert len(warnings) == 1 and "backend compiler failed" in warnings[0] and "traceback" not in warnings[0]
    assert len(calls) == 1  # tried once, then eager
    # the fallback trains exactly as an eager run, and the checkpoint's keys are the model's own
    assert_same_weights(checkpoint.load(eager_dir / "checkpoints" / "last.pt")["model"],
                        checkpoint.load(compiled_dir / "checkpoints" / "last.pt")["model"])


@cuda
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_cuda_amp_and_compile_train(tmp_path, dtype):
    overrides = [o for o in TINY if o != "device=cpu"] + ["device=cuda", "amp=true", f"amp_dtype={dtype}",
                                                          "compile=true", "channels_last=true", "arch=lenet5"]
    run(compose_config(overrides), tmp_path / "run")
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 2 and all(h["train/loss"] == h["train/loss"] for h in history)
    state = checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ("grad_scaler" in state) == (dtype == "float16")
    assert not any(k.startswith("_orig_mod") for k in state["model"])
