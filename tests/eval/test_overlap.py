"""The projection analysis (#ovlp, #err, ratio; a reconstruction): hand-made cases, the blocked computation against a
brute-force N x N check, and the spherized extraction path end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import FAST, compose_config
from vmf_embeddings.eval.overlap import overlap_mask, projection_overlap


def brute_force(inputs, outputs, tol):
    """N x N float64 direct differences: i overlaps when some j != i has the same output but a different input."""
    inp = np.asarray(inputs, np.float64).reshape(len(inputs), -1)
    out = np.asarray(outputs, np.float64).reshape(len(outputs), -1)
    d_out = ((out[:, None] - out[None]) ** 2).sum(-1)
    d_in = ((inp[:, None] - inp[None]) ** 2).sum(-1)
    n_out, n_in = (out ** 2).sum(1), (inp ** 2).sum(1)
    same = d_out <= tol ** 2 * np.maximum(n_out[:, None], n_out[None])
    differ = d_in > tol ** 2 * np.maximum(n_in[:, None], n_in[None])
    np.fill_diagonal(same, False)
    return (same & differ).any(1)


def test_two_saturated_samples_mapped_to_one_point_both_overlap():
    inputs = np.array([[30.0, 40.0], [25.0, 90.0], [0.1, -0.2], [0.3, 0.1]], np.float32)
    outputs = np.array([[0.0, 5.0], [0.0, 5.0], [3.0, 4.0], [4.0, 3.0]], np.float32)  # saturated pair: rows 0, 1
    correct = np.array([True, False, True, False])
    assert overlap_mask(inputs, outputs).tolist() == [True, True, False, False]
    assert projection_overlap(inputs, outputs, correct) == {"n_overlap": 2, "n_overlap_errors": 1,
                                                            "overlap_error_ratio": 0.5}


def test_identical_inputs_do_not_overlap_and_nothing_gives_nan_ratio():
    inputs = np.array([[1.0, 2.0], [1.0, 2.0], [3.0, 3.0]])
    outputs = np.array([[0.5, 0.5], [0.5, 0.5], [0.1, 0.9]])  # rows 0, 1: same output, but the same input too
    result = projection_overlap(inputs, outputs, [True, True, False])
    assert result["n_overlap"] == 0 and result["n_overlap_errors"] == 0 and np.isnan(result["overlap_error_ratio"])
    # a third sample with a different input joining the point makes all three overlap
    inputs, outputs = np.vstack([inputs, [[9.0, 9.0]]]), np.vstack([outputs, [[0.5, 0.5]]])
    assert overlap_mask(inputs, outputs).tolist() == [True, True, False, True]


def test_the_tolerance_is_relative_to_the_larger_norm():
    inputs = np.array([[1.0, 0.0], [0.0, 1.0]])
    outputs = np.array([[1000.0, 0.0], [1000.0, 0.0005]])  # 5e-7 of the norm apart
    assert overlap_mask(inputs, outputs, tol=1e-6).all()
    assert not overlap_mask(inputs, outputs, tol=1e-7).any()
    assert not overlap_mask(inputs, outputs * 1e-3, tol=1e-7).any()  # scale-free
    assert overlap_mask(inputs, outputs * 1e-3, tol=1e-6).all()


def test_blocked_equals_brute_force():
    rng = np.random.default_rng(0)
    n = 700
    inputs = rng.standard_normal((n, 9)).astype(np.float32)
    outputs = np.tanh(4 * inputs[:, :6]).astype(np.float32)
    outputs[:150] = np.sign(outputs[:150])  # saturated: many exact ties
    outputs[150:170] = outputs[170:190]  # copies of other outputs ...
    inputs[150:160] = inputs[170:180]  # ... half of them with the same input too
    outputs[300:320] = 0.0  # a collapse at the origin
    outputs[400:420] = outputs[420] * (1 + 3e-7 * rng.standard_normal((20, 1)).astype(np.float32))  # near ties
    for tol in (0.0, 1e-6, 1e-3, 0.1):
        for block in (1, 64, 4096):
            np.testing.assert_array_equal(overlap_mask(inputs, outputs, tol=tol, block=block),
                                          brute_force(inputs, outputs, tol), err_msg=f"tol={tol} block={block}")
    correct = rng.random(n) > 0.3
    mask = brute_force(inputs, outputs, 1e-6)
    result = projection_overlap(inputs, outputs, correct, tol=1e-6)
    assert result["n_overlap"] == mask.sum() > 0
    assert result["n_overlap_errors"] == (mask & ~correct).sum()
    assert result["overlap_error_ratio"] == pytest.approx((mask & ~correct).sum() / mask.sum())


def test_ten_thousand_samples_in_blocks_quickly():
    """N = 10,000 (the CIFAR-10 test set), 257-d spherized outputs, 500 collapsed onto (0, ..., 0, r)."""
    rng = np.random.default_rng(1)
    n = 10_000
    inputs = rng.standard_normal((n, 256)).astype(np.float32)
    outputs = np.abs(rng.standard_normal((n, 257))).astype(np.float32)
    outputs[:500] = 0.0
    outputs[:500, -1] = 5.0
    result = projection_overlap(inputs, outputs, np.arange(n) % 3 != 0)
    assert result["n_overlap"] == 500 and result["n_overlap_errors"] == 167


def test_bad_arrays_are_refused():
    with pytest.raises(ValueError, match="rows"):
        overlap_mask(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="NaN"):
        overlap_mask(np.zeros((2, 2)), np.array([[0.0, np.nan], [1, 1]]))
    with pytest.raises(ValueError, match="tolerance"):
        overlap_mask(np.zeros((2, 2)), np.zeros((2, 2)), tol=-1)


def test_recording_projection_captures_the_spherization_input_and_output():
    from vmf_embeddings.build import build_model
    from vmf_embeddings.layers.spherization import recording_projection

    model = build_model(compose_config(["arch.spherize=true"])).eval()
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad(), recording_projection(model) as record:
        out = model(x)
        out2 = model(x[:2])
    arrays = record.arrays()
    z = model.backbone.backbone(x).detach()
    np.testing.assert_allclose(arrays["projection_input"][:5], z.numpy(), rtol=1e-6)
    np.testing.assert_allclose(arrays["projection_output"], torch.cat([out, out2]).numpy())
    with recording_projection(model, enabled=False) as off:
        assert off is None
    with recording_projection(build_model(compose_config([]))) as none:  # nothing spherized
        assert none is None
    model(x)  # the hook is gone
    assert len(record.inputs) == 2


def test_spherized_run_reports_overlap_on_the_test_split(tmp_path):
    from vmf_embeddings.main import run

    run(compose_config(FAST + ["arch.spherize=true", "mode.epochs=2", "sampler.n_episodes=5",
                               "mode.projector=false"]), tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    test = metrics["test"]
    assert {"n_overlap", "n_overlap_errors", "overlap_error_ratio"} <= set(test)
    assert "n_overlap" not in metrics["train"]  # recorded for the test split only
    with np.load(tmp_path / "run" / "embeddings" / "test.npz") as f:
        assert f["projection_input"].shape == (test["n"], 3) and f["projection_output"].shape == (test["n"], 4)
        np.testing.assert_allclose(f["projection_output"], f["embeddings"])  # unnormalized_sce reads x itself
        expected = projection_overlap(f["projection_input"], f["projection_output"],
                                      f["log_probs"].argmax(1) == f["labels"])
    assert test["n_overlap"] == expected["n_overlap"]
    with np.load(tmp_path / "run" / "embeddings" / "train.npz") as f:
        assert "projection_input" not in f.files


def test_bad_overlap_tolerance_is_one_line(tmp_path):
    from vmf_embeddings.eval.run_dir import RunDirError
    from vmf_embeddings.eval.run_eval import evaluate_run
    from vmf_embeddings.main import run

    run(compose_config(FAST + ["method=angular_softmax", "mode.epochs=1", "sampler.n_episodes=3",
                               "mode.projector=false", "mode.evaluate_at_end=false"]), tmp_path / "run")
    with pytest.raises(RunDirError, match=r"eval.overlap_tol=-0.5 must be a number in \[0, 1\)"):
        evaluate_run(tmp_path / "run", {"overlap_tol": -0.5, "plots": False}, write=False)
    result = evaluate_run(tmp_path / "run", {"overlap_tol": 0.5, "plots": False, "clustering": False}, write=False)
    assert result["test"]["n_overlap"] >= 0
