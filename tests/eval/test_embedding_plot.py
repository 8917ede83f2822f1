"""embeddings_test.png: the 2-D embedding scatter evaluation writes (Garnot & Landrieu, BMVC 2021, Fig. 1)."""

import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from vmf_embeddings.eval import plots
from vmf_embeddings.eval.plots import embedding_scatter, embedding_space
from vmf_embeddings.eval.run_eval import evaluate_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path):
    """(width, height) from a PNG's IHDR chunk, after checking the magic bytes."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, data[:8]
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def assert_reasonable_png(path: Path):
    assert path.is_file(), path
    assert path.stat().st_size > 5_000  # points, markers, axes and text: not a blank canvas
    width, height = png_size(path)
    assert 300 <= width <= 2000 and 300 <= height <= 2000, (width, height)
    assert not list(path.parent.glob(".*.tmp")), "atomic write left a temporary file"


def make_run(root: Path, d=2, c=4, n=90, method="learnt_prototypes", geometry="euclidean", open_set=False,
             prototypes=True, **eval_opts):
    """A fabricated run dir (config.yaml + embeddings/{val,test}.npz), as extraction writes them."""
    run = root / f"{method}_{d}d_{'open' if open_set else 'closed'}"
    (run / "embeddings").mkdir(parents=True)
    cfg = {
        "mode": {"name": "train", "learning_rate": 0.1, "epochs": 3},
        "dataset": {"name": "digits", "open_set": open_set, "n_train_classes": c},
        "method": {"name": method, "params": {}},
        "arch": {"params": {"embedding_dim": d}},
        "seed": 1, "name": None, "device": "cpu",
        "eval": {"clustering": False, **eval_opts},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    rng = np.random.default_rng(0)
    centres = (3 * rng.standard_normal((c, d))).astype(np.float32)
    for split in ("val", "test"):
        y = np.arange(n) % c
        x = (centres[y] + rng.standard_normal((n, d))).astype(np.float32)
        arrays = {"embeddings": x, "labels": y.astype(np.int64), "geometry": np.array(geometry),
                  "method": np.array(method), "task": np.array("classification")}
        if not open_set:
            logits = -np.linalg.norm(x[:, None] - centres[None], axis=-1)
            arrays["log_probs"] = (logits - np.log(np.exp(logits).sum(1, keepdims=True))).astype(np.float32)
        if prototypes:
            arrays["prototypes"] = centres
        np.savez(run / "embeddings" / f"{split}.npz", **arrays)
    return run


def test_2d_run_writes_the_scatter(tmp_path):
    run = make_run(tmp_path)
    evaluate_run(run)
    assert_reasonable_png(run / "embeddings_test.png")
    assert not (run / "embeddings_val.png").exists()  # test split only
    assert (run / "reliability_test.png").is_file()


def test_4d_run_writes_no_scatter(tmp_path):
    run = make_run(tmp_path, d=4)
    evaluate_run(run)
    assert not (run / "embeddings_test.png").exists()
    assert (run / "reliability_test.png").is_file()


def test_3d_run_writes_a_3d_scatter_with_its_sphere(tmp_path, monkeypatch):
    calls, real = [], plots.sphere_scatter
    monkeypatch.setattr(plots, "sphere_scatter", lambda *a, **k: calls.append((a, k)))
    run = make_run(tmp_path, d=3)
    evaluate_run(run)
    assert calls and calls[0][0][0].shape[1] == 3
    points = np.abs(np.random.default_rng(0).normal(size=(60, 3)))
    points = 5 * points / np.linalg.norm(points, axis=1, keepdims=True)  # on the radius-5 octant
    path = real(points, np.arange(60) % 3, tmp_path / "sphere.png", title="spherized")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


@pytest.mark.parametrize("how", ["config", "option"])
def test_plots_false_writes_no_scatter(tmp_path, how):
    run = make_run(tmp_path, **({"plots": False} if how == "config" else {}))
    evaluate_run(run, options={"plots": False} if how == "option" else None)
    assert (run / "metrics.json").is_file()
    assert not (run / "embeddings_test.png").exists() and not (run / "reliability_test.png").exists()


def test_run_eval_hands_over_prototypes_and_names_the_space(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(plots, "embedding_scatter", lambda *a, **k: calls.append((a, k)))
    closed = make_run(tmp_path, geometry="cosine")
    evaluate_run(closed, write=False)
    (x, y, path), kw = calls[-1]
    with np.load(closed / "embeddings" / "test.npz") as f:
        np.testing.assert_array_equal(x, f["embeddings"])  # the stored vectors, not the normalised ones
        np.testing.assert_array_equal(kw["prototypes"], f["prototypes"])
    assert path == closed / "embeddings_test.png"
    assert "learnt_prototypes / digits / test" in kw["title"] and embedding_space("cosine") in kw["title"]
    assert "f(x)/|f(x)|" in kw["title"]  # says retrieval normalises what is plotted

    # open-set test classes are not the training classes the prototypes belong to
    evaluate_run(make_run(tmp_path, open_set=True), write=False)
    assert calls[-1][1]["prototypes"] is None
    # no prototypes in the npz (e.g. a softmax head): points only
    evaluate_run(make_run(tmp_path, method="unnormalized_sce", prototypes=False), write=False)
    assert calls[-1][1]["prototypes"] is None


def test_missing_matplotlib_does_not_fail_evaluation(tmp_path, monkeypatch):
    run = make_run(tmp_path, open_set=True)  # no log_probs: the reliability diagram is not drawn either
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    out = evaluate_run(run)
    assert "recall@1" in out["test"]
    assert not (run / "embeddings_test.png").exists()


def test_scatter_many_classes_names_and_no_prototypes(tmp_path):
    rng = np.random.default_rng(1)
    y = np.arange(600) % 30  # > 20 classes: continuous colormap, no legend
    x = rng.standard_normal((600, 2)) + np.stack([np.cos(y / 5.0), np.sin(y / 5.0)], 1) * 5
    assert_reasonable_png(embedding_scatter(x, y, tmp_path / "many.png", title="30 classes"))
    protos = rng.standard_normal((5, 2))
    names = [f"class {i}" for i in range(5)]
    assert_reasonable_png(embedding_scatter(x[:100], y[:100] % 5, tmp_path / "named.png", prototypes=protos,
                                            class_names=names))


def test_scatter_rejects_bad_shapes(tmp_path):
    x, y = np.zeros((4, 3)), np.zeros(4, np.int64)
    with pytest.raises(ValueError, match="N x 2"):
        embedding_scatter(x, y, tmp_path / "a.png")
    with pytest.raises(ValueError, match="C x 2"):
        embedding_scatter(x[:, :2], y, tmp_path / "a.png", prototypes=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="prototypes"):
        embedding_scatter(x[:, :2], np.array([0, 1, 2, 3]), tmp_path / "a.png", prototypes=np.zeros((2, 2)))
    assert not list(tmp_path.iterdir())


def test_real_2d_learnt_prototypes_run(tmp_path):
    """A tiny real run (train, extract, evaluate) with a 2-D embedding ends with the scatter."""
    from tests.conftest import FAST, compose_config
    from vmf_embeddings.main import run

    cfg = compose_config(FAST + ["method=learnt_prototypes", "arch.params.embedding_dim=2", "mode.epochs=2",
                                 "sampler.n_episodes=3"])
    run(cfg, tmp_path / "run")
    with np.load(tmp_path / "run" / "embeddings" / "test.npz") as f:
        assert f["embeddings"].shape[1] == 2 and f["prototypes"].shape == (10, 2)
    assert_reasonable_png(tmp_path / "run" / "embeddings_test.png")
