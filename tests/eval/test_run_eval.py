"""evaluate_run over fake run dirs (the runner's contract), one-line errors, and the two scripts."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from vmf_embeddings.eval.classification import classification_metrics, log_probs_from_logits
from vmf_embeddings.config_keys import flatten
from vmf_embeddings.eval.report import aggregate, config_identity
from vmf_embeddings.eval.retrieval import retrieval_metrics
from vmf_embeddings.eval.run_dir import RunDirError
from vmf_embeddings.eval.run_eval import evaluate_run
from vmf_embeddings.eval.vmf_classification import vmf_mc_log_probs

REPO = Path(__file__).resolve().parents[2]


def make_run(root: Path, method="unnormalized_sce", geometry="euclidean", task="classification",
             dataset="digits", open_set=False, seed=1, lr=0.1, n=120, d=6, c=4, splits=("train", "val", "test"),
             extra=None, **eval_opts):
    run = root / dataset / method / f"{d}dim" / f"lr={lr},seed={seed}"
    (run / "embeddings").mkdir(parents=True)
    cfg = {
        "mode": {"name": "train", "learning_rate": lr, "epochs": 3},
        "dataset": {"name": dataset, "open_set": open_set, "dataset_path": "/data/x", "n_train_classes": c},
        "method": {"name": method, "geometry": geometry, "task": task, "params": {}},
        "arch": {"params": {"embedding_dim": d, "n_classes": c}},
        "seed": seed, "name": None, "device": "cpu", "runs_root": str(root),
        "eval": {"vmf_samples": 4, "seed": 1234, "clustering": False, **eval_opts},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    rng = np.random.default_rng(seed)
    for split in splits:
        y = rng.integers(0, c, n)
        centers = np.eye(c, d) * 3
        x = (centers[y] + rng.standard_normal((n, d))).astype(np.float32)
        arrays = {"embeddings": x, "labels": y.astype(np.int64), "geometry": np.array(geometry),
                  "method": np.array(method), "task": np.array(task), "temperature": np.float32(0.5)}
        if geometry != "hyperbolic":
            arrays["weights"] = centers.astype(np.float32)
        else:
            arrays["curvature"] = np.float32(0.1)
        if geometry != "vmf" and not open_set and task != "regression":
            arrays["logits"] = (x @ centers.T).astype(np.float32)
        if geometry == "vmf" and not open_set and split != "train":  # extraction skips sampled train predictions
            arrays["log_probs"] = vmf_mc_log_probs(x, centers, 0.5, n_samples=4, seed=1234).numpy()
        if task in ("regression", "joint"):
            arrays["targets"] = rng.uniform(1000, 1900, n).astype(np.float32)
            arrays["predictions"] = arrays["targets"] + rng.normal(0, 50, n).astype(np.float32)
        arrays.update((extra or {}).get(split, {}))
        np.savez(run / "embeddings" / f"{split}.npz", **arrays)
    return run


def test_closed_set_deterministic(tmp_path):
    run = make_run(tmp_path)
    out = evaluate_run(run)
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["test"]["accuracy"] == out["test"]["accuracy"]
    with np.load(run / "embeddings" / "test.npz") as f:
        ref_c = classification_metrics(log_probs_from_logits(f["logits"]), f["labels"])
        ref_r = retrieval_metrics(f["embeddings"], f["labels"], "euclidean", clustering=False)
    for k in ("accuracy", "ece", "nll", "mce", "ece_l2_em15", "brier"):
        assert out["test"][k] == pytest.approx(ref_c[k], abs=1e-12)
    for k in ("recall@1", "recall@8", "map@r", "r_precision", "precision@1"):
        assert out["test"][k] == pytest.approx(ref_r[k], abs=1e-12)
    assert "recall@1" not in out["val"] and "accuracy" in out["val"] and "accuracy" in out["train"]
    assert "top5_accuracy" not in out["test"]  # C = 4
    assert (run / "reliability_test.png").is_file() and (run / "reliability_val.png").is_file()
    meta = out["meta"]
    assert (meta["method"], meta["dataset"], meta["dim"], meta["seed"]) == ("unnormalized_sce", "digits", 6, 1)
    assert meta["config"]["mode.learning_rate"] == 0.1


def test_open_set_vmf_retrieval_only(tmp_path):
    run = make_run(tmp_path, method="vmf_softmax", geometry="vmf", dataset="cub200", open_set=True,
                   splits=("val", "test"), clustering=True)
    out = evaluate_run(run)
    for split in ("val", "test"):
        assert "accuracy" not in out[split]
        for k in ("recall@1", "recall@2", "recall@4", "recall@8", "map@r", "nmi", "ami", "mc_recall@1", "mc_map@r"):
            assert k in out[split]
        assert out[split]["mc_samples"] == 4


def test_closed_set_vmf_scores_the_extracted_monte_carlo_log_probs(tmp_path):
    """Evaluation does not re-draw vMF predictions: it scores the log-probabilities extraction wrote."""
    run = make_run(tmp_path, method="vmf_softmax", geometry="vmf")
    out = evaluate_run(run, {"vmf_retrieval_samples": 0})
    with np.load(run / "embeddings" / "test.npz") as f:
        ref = classification_metrics(f["log_probs"].astype(np.float64), f["labels"])
    assert out["test"]["accuracy"] == pytest.approx(ref["accuracy"]) and out["test"]["nll"] == pytest.approx(ref["nll"])
    assert "accuracy" not in out["train"]  # no log_probs written for train (sampled; eval.mc_on_train)
    assert "mc_recall@1" not in out["test"]


def test_hyperbolic_and_joint_regression(tmp_path):
    run = make_run(tmp_path, method="hyperbolic_sce", geometry="hyperbolic", task="joint")
    out = evaluate_run(run)
    assert out["test"]["mae"] > 0 and out["train"]["mae"] > 0 and "recall@1" in out["test"]
    reg = make_run(tmp_path / "r", method="hpn_regression", geometry="cosine", task="regression")
    out = evaluate_run(reg)
    assert set(out["test"]) == {"n", "mae", "rmse", "seconds"}


def test_cost_matrix_and_few_shot_options(tmp_path):
    cost = 1 - np.eye(4)
    np.save(tmp_path / "cost.npy", cost)
    run = make_run(tmp_path, cost_matrix=str(tmp_path / "cost.npy"),
                   few_shot={"n_way": 3, "k_shot": 2, "n_query": 3, "n_episodes": 10})
    out = evaluate_run(run)
    assert out["test"]["average_cost"] == pytest.approx(1 - out["test"]["accuracy"])
    assert 0 <= out["test"]["fewshot_3way2shot"] <= 1 and "fewshot_3way2shot_ci95" in out["test"]


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("no_config", r"config.yaml not found: .* train with"),
        ("no_embeddings", r"embeddings/\{train,val,test\}.npz not found: extract them first"),
        ("length", r"test.npz: 'embeddings' has 120 rows but 'labels' has 119; .*re-extract"),
        ("nan", r"test.npz: 'embeddings' has 1 row\(s\) with NaN/inf \(first: row 5\); .*retrain"),
    ],
)
def test_one_line_errors(tmp_path, case, pattern):
    extra = {}
    if case == "length":
        extra = {"test": {"labels": np.zeros(119, np.int64)}}
    if case == "nan":
        emb = np.ones((120, 6), np.float32)
        emb[5, 2] = np.nan
        extra = {"test": {"embeddings": emb}}
    run = make_run(tmp_path, extra=extra)
    if case == "no_config":
        (run / "config.yaml").unlink()
    if case == "no_embeddings":
        for p in (run / "embeddings").iterdir():
            p.unlink()
    with pytest.raises(RunDirError, match=pattern) as err:
        evaluate_run(run)
    assert "\n" not in str(err.value)


def test_aggregate_groups_seeds_and_names_swept_keys(tmp_path):
    results = []
    for lr in (0.1, 0.01):
        for seed in (1, 2, 3):
            results.append(evaluate_run(make_run(tmp_path, lr=lr, seed=seed, splits=("test",)), write=False))
    header, rows, varying = aggregate(results + [results[0]])  # a repeated (config, seed) counts once
    assert varying == ["mode.learning_rate"]
    assert len(rows) == 2 and all(r[header.index("n")] == 3 for r in rows)
    col = header.index("test/accuracy mean")
    for r in rows:
        vals = [x["test"]["accuracy"] for x in results if f'{x["meta"]["config"]["mode.learning_rate"]:g}' == r[3]]
        assert len(vals) == 3
        assert r[col] == pytest.approx(np.mean(vals))
        assert r[col + 1] == pytest.approx(np.std(vals, ddof=1))
    a = flatten({"seed": 1, "dataset": {"dataset_path": "/a", "loader": {"seed": 4}}, "x": 1})
    b = flatten({"seed": 2, "dataset": {"dataset_path": "/b", "loader": {"seed": 5}}, "x": 1})
    assert config_identity(a) == config_identity(b)


def run_script(*args):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=300)


def test_scripts_end_to_end(tmp_path):
    sweep = tmp_path / "sweep"
    for lr in (0.1, 0.01):
        for seed in (1, 2):
            make_run(sweep, lr=lr, seed=seed, splits=("val", "test"))
    broken = make_run(tmp_path / "broken", extra={"test": {"labels": np.zeros(3, np.int64)}})
    ev = run_script(REPO / "scripts" / "evaluate.py", sweep, "--set", "clustering=false")
    assert ev.returncode == 0, ev.stderr
    assert len(list(sweep.rglob("metrics.json"))) == 4
    assert "| run | method | split | accuracy |" in ev.stdout
    bad = run_script(REPO / "scripts" / "evaluate.py", broken)
    assert bad.returncode == 1
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "test.npz" in lines[0] and "re-extract" in lines[0]
    missing = run_script(REPO / "scripts" / "evaluate.py", tmp_path / "nowhere")
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1
    ag = run_script(REPO / "scripts" / "aggregate.py", sweep, "--out", tmp_path / "agg")
    assert ag.returncode == 0, ag.stderr
    assert "mode.learning_rate" in ag.stdout and " ± " in ag.stdout
    csv = (tmp_path / "agg.csv").read_text().splitlines()
    assert len(csv) == 3 and "test/accuracy mean" in csv[0]
