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
    assert out["test"]["avg_cost"] == pytest.approx(1 - out["test"]["accuracy"])
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


# --- bad inputs: one line naming the file (and key), the batch goes on, exit status 1 at the end ---------

def _script(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_{name}_script", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _errors(stderr):
    """stderr lines other than the per-run `wrote ...` notes."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("wrote ")]


def _good_and_bad(root, **bad):
    """A sweep with one good run (seed 1) and one bad run (seed 2), both test-only and without plots."""
    good = make_run(root, seed=1, splits=("test",), plots=False)
    broken = make_run(root, seed=2, splits=("test",), plots=False, **bad)
    return good, broken


def _npz(run, split="test"):
    return run / "embeddings" / f"{split}.npz"


def _rewrite_npz(path, **changes):
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del arrays[key]
    np.savez(path, **arrays)


BAD_NPZ = {
    # case: (changes to test.npz, what the message must contain)
    "string_embeddings": ({"embeddings": np.full((120, 6), "abc")},
                          "'embeddings' must be a float array, got dtype <U3"),
    "int_embeddings": ({"embeddings": np.ones((120, 6), np.int64)},
                       "'embeddings' must be a float array, got dtype int64"),
    "1d_embeddings": ({"embeddings": np.ones(120, np.float32)}, "'embeddings' must be N x D"),
    "no_rows": ({"embeddings": np.ones((0, 6), np.float32), "labels": np.zeros(0, np.int64), "logits": None},
                "'embeddings' must be N x D with N, D >= 1, got shape (0, 6)"),
    "float_labels": ({"labels": np.linspace(0, 3, 120)}, "'labels' must be integers, got dtype float64"),
    "string_labels": ({"labels": np.array(["cat"] * 120)}, "'labels' must be integers, got dtype <U3"),
    "2d_labels": ({"labels": np.zeros((120, 2), np.int64)}, "'labels' must be a vector of 120 class ids"),
    "scalar_labels": ({"labels": np.int64(3)}, "'labels' must be a vector of 120 class ids, got shape ()"),
    "log_probs_width": ({"log_probs": np.log(np.full((120, 3), 1 / 3)), "logits": None},
                        "'log_probs' has 3 columns but config.yaml's dataset.n_train_classes is 4"),
    "log_probs_string": ({"log_probs": np.full((120, 4), "x")}, "'log_probs' must be float, got dtype <U1"),
    "log_probs_1d": ({"log_probs": np.zeros(120)}, "'log_probs' must be N x C, got shape (120,)"),
    "log_probs_nan": ({"log_probs": np.full((120, 4), np.nan)}, "'log_probs' contain NaN/+inf"),
    "logits_rows": ({"logits": np.zeros((7, 4), np.float32)}, "'logits' has 7 rows but 'embeddings' has 120"),
    "logits_scalar": ({"logits": np.float32(1.0)}, "'logits' must have one row per embedding (120), got a scalar"),
    "labels_beyond_logits": ({"labels": np.full(120, 9, np.int64)}, "'logits' has 4 columns but 'labels' span 9..9"),
    "targets_nan": ({"targets": np.full(120, np.nan), "predictions": np.zeros(120)}, "'targets' contain NaN/inf"),
    "predictions_string": ({"targets": np.zeros(120), "predictions": np.full(120, "x")},
                           "'predictions' must be numeric (float or integer), got dtype <U1"),
    "object_array": ({"extra": np.array([{"a": 1}], dtype=object)}, "'extra' is unreadable (ValueError: Object arrays"),
    "cost_matrix_shape": ({"cost_matrix": np.zeros((4, 3))}, "'cost_matrix' must be a numeric C x C array"),
    "no_geometry": ({"geometry": None}, "no 'geometry' entry"),
    "unknown_geometry": ({"geometry": np.array("flat")}, "unknown geometry 'flat'"),
}


@pytest.mark.parametrize("case", sorted(BAD_NPZ))
def test_evaluate_script_reports_a_bad_npz_in_one_line_and_evaluates_the_rest(tmp_path, capsys, case):
    changes, message = BAD_NPZ[case]
    good, broken = _good_and_bad(tmp_path / "sweep")
    _rewrite_npz(_npz(broken), **changes)
    assert _script("evaluate").main([str(tmp_path / "sweep")]) == 1
    out, err = capsys.readouterr()
    lines = _errors(err)
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {_npz(broken)}: ") and message in lines[0], lines[0]
    assert "re-extract" in lines[0] or "retrain" in lines[0]
    assert (good / "metrics.json").is_file() and not (broken / "metrics.json").exists()
    assert str(good) in out and str(broken) not in out  # the good run is in the table


def test_a_file_that_is_not_an_npz_archive(tmp_path, capsys):
    good, broken = _good_and_bad(tmp_path / "sweep")
    np.save(tmp_path / "single.npy", np.zeros((3, 3)))
    (tmp_path / "single.npy").replace(_npz(broken))
    assert _script("evaluate").main([str(tmp_path / "sweep")]) == 1
    lines = _errors(capsys.readouterr().err)
    assert len(lines) == 1 and f"{_npz(broken)}: a single .npy array, not an npz archive" in lines[0]
    _npz(broken).write_bytes(b"not a zip file")
    assert _script("evaluate").main([str(tmp_path / "sweep")]) == 1
    lines = _errors(capsys.readouterr().err)
    assert len(lines) == 1 and f"{_npz(broken)}: unreadable npz (" in lines[0]
    assert (good / "metrics.json").is_file()


@pytest.mark.parametrize("value, message", [
    (np.array("high"), "'curvature' must be a number, got 'high'"),
    (np.float32(-1.0), "geometry 'hyperbolic' needs a curvature c > 0, got -1.0"),
])
def test_bad_geometry_parameter(tmp_path, capsys, value, message):
    good = make_run(tmp_path / "sweep", seed=1, splits=("test",), plots=False)
    broken = make_run(tmp_path / "sweep", method="hyperbolic_sce", geometry="hyperbolic", seed=2, splits=("test",),
                      plots=False, extra={"test": {"curvature": value}})
    assert _script("evaluate").main([str(tmp_path / "sweep")]) == 1
    lines = _errors(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith(f"error: {_npz(broken)}: ") and message in lines[0], lines
    assert (good / "metrics.json").is_file()


BAD_CONFIGS = {
    "empty": ("", "config.yaml: empty config (no keys)"),
    "null": ("null\n", "config.yaml: empty config (no keys)"),
    "list": ("- a\n- b\n", "config.yaml: expected a mapping of config keys, got a list"),
    "scalar": ("3\n", "config.yaml: cannot parse (OSError"),
    "invalid_yaml": ("method: [unclosed\n", "config.yaml: cannot parse (ParserError"),
    "no_method_name": ("dataset: {name: digits}\nseed: 1\n", "config.yaml: no 'method.name' (a string) in the config"),
    "no_dataset_name": ("method: {name: x}\n", "config.yaml: no 'dataset.name' (a string) in the config"),
    "eval_not_mapping": ("method: {name: x}\ndataset: {name: d}\neval: [1, 2]\n",
                         "config.yaml: 'eval' must be a mapping of evaluation options, got a list"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_yaml_is_one_line_not_a_null_metrics_file(tmp_path, capsys, case):
    text, message = BAD_CONFIGS[case]
    good, broken = _good_and_bad(tmp_path / "sweep")
    (broken / "config.yaml").write_text(text)
    assert _script("evaluate").main([str(tmp_path / "sweep")]) == 1
    out, err = capsys.readouterr()
    lines = _errors(err)
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {broken / 'config.yaml'}: ") and message in lines[0], lines[0]
    assert not (broken / "metrics.json").exists() and (good / "metrics.json").is_file()
    with pytest.raises(RunDirError, match="config.yaml"):
        evaluate_run(broken)


def test_an_unexpected_exception_is_one_line_with_its_type_and_the_batch_goes_on(tmp_path, capsys, monkeypatch):
    good, broken = _good_and_bad(tmp_path / "sweep")
    script = _script("evaluate")
    real = script.evaluate_run

    def flaky(run_dir, options=None):
        if Path(run_dir) == broken:
            raise RuntimeError("boom\nsecond line")
        return real(run_dir, options)

    monkeypatch.setattr(script, "evaluate_run", flaky)
    assert script.main([str(tmp_path / "sweep")]) == 1
    out, err = capsys.readouterr()
    lines = _errors(err)
    assert lines == [f"error: {broken}: evaluation failed (RuntimeError: boom second line); check its config.yaml "
                     f"and embeddings/*.npz, re-run with -v for the traceback"]
    assert (good / "metrics.json").is_file() and str(good) in out


@pytest.mark.parametrize("item, message", [
    ("n_bins=abc", "--set 'n_bins=abc': bad value for n_bins"),
    ("colour=red", "--set 'colour=red': expected KEY=VALUE with KEY in"),
    ("clustering", "--set 'clustering': expected KEY=VALUE"),
    ("threads", "--threads 0: must be >= 1"),
])
def test_evaluate_script_bad_set_option(tmp_path, capsys, item, message):
    run = make_run(tmp_path, splits=("test",))
    args = ["--threads", "0"] if item == "threads" else ["--set", item]
    assert _script("evaluate").main([str(run), *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), lines
    assert not (run / "metrics.json").exists()


def test_string_embeddings_no_longer_abort_the_batch_end_to_end(tmp_path):
    """The reported case, through the real command line: a '<U3' embeddings array in one run of a sweep."""
    good, broken = _good_and_bad(tmp_path / "sweep")
    _rewrite_npz(_npz(broken), embeddings=np.full((120, 6), "abc"))
    ev = run_script(REPO / "scripts" / "evaluate.py", tmp_path / "sweep")
    assert ev.returncode == 1 and "Traceback" not in ev.stderr
    lines = _errors(ev.stderr)
    assert len(lines) == 1 and str(_npz(broken)) in lines[0] and "'embeddings'" in lines[0]
    assert (good / "metrics.json").is_file() and str(good) in ev.stdout


# --- aggregate.py -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good_metrics(tmp_path_factory):
    """Two evaluated seeds of one configuration (metrics.json contents)."""
    root = tmp_path_factory.mktemp("good")
    return [evaluate_run(make_run(root, seed=s, splits=("test",), plots=False), write=False) for s in (1, 2)]


BAD_METRICS = {
    "invalid_json": (b'{"meta": ', "not valid JSON (Expecting value at line 1 column 10)"),
    "list": (b"[1, 2]", "expected a JSON object with 'meta' and split entries, got a list"),
    "null": (b"null", "expected a JSON object with 'meta' and split entries, got null"),
    "no_meta": (b'{"test": {"accuracy": 0.5}}', "no 'meta' object"),
    "meta_not_object": (b'{"meta": 3, "test": {}}', "no 'meta' object"),
    "no_config": (b'{"meta": {"method": "x"}, "test": {"accuracy": 0.5}}', "'meta' has no 'config' object"),
    "split_not_object": (b'{"meta": {"config": {}}, "test": 0.5}', "'test' must be an object of metrics, got float"),
    "not_utf8": (b"\xff\xfe\x00garbage", "cannot read (UnicodeDecodeError"),
}


@pytest.mark.parametrize("case", sorted(BAD_METRICS))
def test_aggregate_script_reports_a_bad_metrics_json_in_one_line(tmp_path, capsys, good_metrics, case):
    data, message = BAD_METRICS[case]
    for i, m in enumerate(good_metrics):
        (tmp_path / "sweep" / f"run{i}").mkdir(parents=True)
        (tmp_path / "sweep" / f"run{i}" / "metrics.json").write_text(json.dumps(m))
    bad = tmp_path / "sweep" / "zbad" / "metrics.json"
    bad.parent.mkdir()
    bad.write_bytes(data)
    assert _script("aggregate").main([str(tmp_path / "sweep"), "--out", str(tmp_path / "agg")]) == 1
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("wrote ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"error: {bad}: ") and message in lines[0], lines[0]
    assert "re-run `python scripts/evaluate.py" in lines[0]
    csv = (tmp_path / "agg.csv").read_text().splitlines()
    assert len(csv) == 2 and ",2," in csv[1]  # the two good seeds, aggregated into one configuration
    assert "| digits | unnormalized_sce |" in out


def test_aggregate_script_missing_path_and_only_bad_files(tmp_path, capsys, good_metrics):
    (tmp_path / "sweep" / "run").mkdir(parents=True)
    (tmp_path / "sweep" / "run" / "metrics.json").write_text(json.dumps(good_metrics[0]))
    script = _script("aggregate")
    assert script.main([str(tmp_path / "nowhere"), str(tmp_path / "sweep"), "--out", str(tmp_path / "agg")]) == 1
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if not ln.startswith("wrote ")]
    assert lines == [f"error: {tmp_path / 'nowhere'}: no such file or directory; pass dirs holding evaluated runs "
                     f"(scripts/evaluate.py writes metrics.json)"]
    assert (tmp_path / "agg.csv").is_file() and "| digits |" in out
    (tmp_path / "sweep" / "run" / "metrics.json").write_text("[]")
    assert script.main([str(tmp_path / "sweep")]) == 1
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and "got a list" in err and out == ""
