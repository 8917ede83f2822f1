"""scripts/place_prototypes.py on bad input: one line naming the key and the fix, exit status 2, nothing placed;
infeasible or huge requests refused up front with their estimated memory and time unless opted in."""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vmf_embeddings.prototypes import annealed, estimate_cost, place_prototypes
from vmf_embeddings.prototypes import placement as placement_module

REPO = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("_place_prototypes_script", REPO / "scripts" / "place_prototypes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    return _script()


@pytest.fixture
def refuse_placement(monkeypatch):
    """Fail the test if anything gets placed (bad input must be refused before placing)."""
    import vmf_embeddings.prototypes.cache as cache_module

    def placed(*args, **kwargs):
        raise AssertionError("placement ran on bad input")

    monkeypatch.setattr(cache_module, "place_prototypes", placed)


BAD = {
    # case: (arguments, the message after "error: ")
    "D=1": (["K=3", "D=1"], "D=1: a line holds only 2 separated prototypes (+1 and -1), so K=3 would collapse; "
                            "use D >= 2"),
    "D=0": (["K=10", "D=0"], "D=0: must be an integer >= 1"),
    "K too many for D": (["K=1500", "D=3"], "K=1500 prototypes cannot stay apart in D=3: any placement has max cosine "
                                           ">= 0.9947 (spherical-cap packing bound), above the collapse limit 0.99; "
                                           "use D >= 4 or fewer classes"),
    "K=0": (["K=0", "D=3"], "K=0: must be an integer >= 2"),
    "K=1": (["K=1", "D=3"], "K=1: a single prototype has nothing to be separated from (any unit vector will do); "
                            "place K >= 2"),
    "K negative": (["K=-4", "D=3"], "K=-4: must be an integer >= 2"),
    "K fractional": (["K=2.5", "D=3"], "K=2.5: must be an integer >= 2"),
    "K text": (["K=abc", "D=3"], "K=abc: must be an integer >= 2"),
    "K bool": (["K=true", "D=3"], "K=True: must be an integer >= 2"),
    "D missing": (["K=12"], "D is required (K classes, D dimensions)"),
    "not key=value": (["K", "D=3"], "argument 'K' is not KEY=VALUE"),
    "bad interpolation": (["K=${x}", "D=3"], "cannot parse the arguments (Interpolation key 'x' not found"),
    "unknown key": (["K=10", "D=3", "dims=4"], "unknown key(s) dims; valid keys: K, D, method"),
    "unknown method": (["K=10", "D=3", "method=foo"], "method=foo: unknown placement rule; choose one of converged, "
                                                      "annealed, paper, lbfgs, slsqp, simplex, cross_polytope, circle"),
    "seed negative": (["K=10", "D=3", "seed=-1"], "seed=-1: must be an integer >= 0"),
    "unknown option": (["K=10", "D=3", "options.stpes=5"], "options.stpes: not an option of method=converged; valid: "
                                                           "learning_rate, restarts, steps, tau_end, tau_start"),
    "option of a closed form": (["K=4", "D=3", "method=simplex", "options.steps=5"],
                                "options.steps: not an option of method=simplex; valid: none"),
    "negative steps": (["K=10", "D=3", "options.steps=-1"], "options.steps=-1: must be an integer >= 0 (default 2000)"),
    "fractional steps": (["K=10", "D=3", "method=paper", "options.steps=1.5"],
                         "options.steps=1.5: must be an integer >= 0 (default 10000)"),
    "zero learning rate": (["K=10", "D=3", "options.learning_rate=0"],
                           "options.learning_rate=0: must be a finite number > 0 (default 0.02)"),
    "options not a mapping": (["K=10", "D=3", "options=5"], "options=5: set rule options one by one"),
    "simplex too small": (["K=10", "D=3", "method=simplex"], "method=simplex needs K <= D+1 (K=10, D=3)"),
    "cross-polytope too small": (["K=10", "D=3", "method=cross_polytope"],
                                 "method=cross_polytope has only 2D=6 points"),
    "circle on a line": (["K=2", "D=1", "method=circle"], "method=circle needs D >= 2"),
    "slsqp too large": (["K=200", "D=50", "method=slsqp"], "method=slsqp is dense in K*D=10000 variables"),
    "word vectors missing": (["K=10", "D=3", "word_vectors=nope.npy"], "word_vectors=nope.npy: no such file"),
    "privileged weight negative": (["K=10", "D=3", "privileged_weight=-1"],
                                   "privileged_weight=-1: must be a finite number >= 0"),
    "n_positives zero": (["K=10", "D=3", "n_positives=0"], "n_positives=0: must be an integer >= 1"),
    "force not a bool": (["K=10", "D=3", "force=maybe"], "force=maybe: must be true or false"),
    "memory limit zero": (["K=10", "D=3", "max_memory_gb=0"], "max_memory_gb=0: must be a finite number > 0"),
    "minutes limit text": (["K=10", "D=3", "max_minutes=soon"], "max_minutes=soon: must be a finite number > 0"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_argument_is_one_line_exit_2(tmp_path, capsys, script, refuse_placement, case):
    argv, message = BAD[case]
    assert script.main(argv + [f"cache_dir={tmp_path / 'cache'}"]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {message}"), lines[0]
    assert out == "" and not (tmp_path / "cache").exists()


def test_word_vectors_with_the_wrong_row_count_and_n_positives_range(tmp_path, capsys, script, refuse_placement):
    vectors = tmp_path / "wv.npy"
    np.save(vectors, np.random.default_rng(0).standard_normal((5, 8)))
    assert script.main(["K=10", "D=3", f"word_vectors={vectors}"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: word_vectors={vectors}: ") and "has 5 rows" in lines[0]
    assert script.main(["K=5", "D=3", f"word_vectors={vectors}", "n_positives=4"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["error: n_positives=4: must be in 1..K-2 = 1..3 (or null: every pair)"]
    assert script.main(["K=5", "D=3", f"word_vectors={vectors}", "method=simplex"]) == 2
    assert "cannot use word_vectors" in capsys.readouterr().err


def test_unwritable_out_and_cache_dir(tmp_path, capsys, script, refuse_placement):
    assert script.main(["K=10", "D=3", f"out={tmp_path / 'missing' / 'p.npy'}", "cache_dir="]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: out={tmp_path / 'missing' / 'p.npy'}: directory {tmp_path / 'missing'} does not " \
                          f"exist; create it or pick another path"
    (tmp_path / "file").write_text("x")
    assert script.main(["K=10", "D=3", f"cache_dir={tmp_path / 'file' / 'cache'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{tmp_path / 'file'} is a file, not a directory; pick another cache_dir" in err[0]


def _cli(*args):
    return subprocess.run([sys.executable, str(REPO / "scripts" / "place_prototypes.py"), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def test_the_reported_request_is_refused_at_once_as_impossible():
    """K=10000 D=3 ran 5 minutes at 2.6 GB and printed nothing; no placement of it can avoid collapse."""
    start = time.perf_counter()
    proc = _cli("K=10000", "D=3", "cache_dir=")
    assert time.perf_counter() - start < 60
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: K=10000 prototypes cannot stay apart in D=3: any placement has max cosine >= 0.9992 (spherical-cap "
        "packing bound), above the collapse limit 0.99; use D >= 4 or fewer classes"]


def test_a_huge_request_is_refused_at_once_with_its_estimate():
    start = time.perf_counter()
    proc = _cli("K=10000", "D=16", "cache_dir=")
    assert time.perf_counter() - start < 60
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("error: K=10000 D=16 method=converged would need about 3.2 GB (4 K x K float64 matrices")
    assert "2000 steps x" in line and "over max_memory_gb=2 and max_minutes=10" in line
    assert "to run it anyway pass max_memory_gb=5 max_minutes=" in line and "(or force=true)" in line


def test_the_estimate_follows_k_squared_and_the_method():
    big, small = estimate_cost(10000, 3), estimate_cost(1000, 3)
    assert big.bytes == pytest.approx(4 * 8 * 10000 ** 2, rel=0.01) and big.bytes > 90 * small.bytes
    assert big.seconds > 600 and "2000 steps" in big.time_detail
    assert estimate_cost(10000, 3, options={"steps": 20}).seconds < big.seconds / 50
    annealed_10k = estimate_cost(1000, 3, "annealed", options={"steps": 10000})
    assert estimate_cost(1000, 3, "paper").seconds < annealed_10k.seconds
    assert estimate_cost(1000, 2000).seconds < 60  # closed form (simplex): no optimisation
    prior_all = estimate_cost(1000, 50, with_prior=True, n_positives=None)
    assert prior_all.gigabytes > 30 and "K^3" in prior_all.memory_detail


def test_limits_are_opt_in_and_force_runs_anyway(tmp_path, capsys, script):
    small = ["K=300", "D=5", "options.steps=50", f"cache_dir={tmp_path}"]
    assert script.main(small + ["max_minutes=0.00001"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "over max_minutes=1e-05; to run it anyway pass max_minutes=1 (or force=true)" in lines[0]
    assert not list(tmp_path.iterdir())
    assert script.main(small + ["max_minutes=1"]) == 0  # the raised limit
    stats = json.loads(capsys.readouterr().out)
    assert stats["n_classes"] == 300 and Path(stats["cache_file"]).is_file()
    assert script.main(["K=300", "D=5", "options.steps=60", "cache_dir=", "max_memory_gb=0.0001", "force=true"]) == 0
    assert json.loads(capsys.readouterr().out)["dim"] == 5
    # a cached placement costs nothing: not refused whatever the limits
    assert script.main(small + ["max_minutes=0.00001", "max_memory_gb=0.0001"]) == 0


def test_collapse_after_placing_is_one_line_exit_1(capsys, script):
    assert script.main(["K=7", "D=2", "method=paper", "options.steps=2000", "cache_dir="]) == 1
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert errors == ["error: prototype placement collapsed: max cosine 1.0000 > 0.99 for K=7, D=2; use "
                      "method.params.placement=converged or a larger embedding_dim"]


def test_long_placements_report_progress(monkeypatch, caplog):
    """Off a terminal, a log line now and then (here: every step); the step function is restored afterwards."""
    monkeypatch.setattr(placement_module, "LOG_EVERY_S", 0.0)
    original = annealed.smooth_max_grad
    with caplog.at_level(logging.INFO, logger="vmf_embeddings.prototypes.placement"):
        place_prototypes(30, 4, method="annealed", steps=20, progress=True)
    lines = [r.getMessage() for r in caplog.records if "step " in r.getMessage()]
    assert len(lines) == 20 and lines[-1].startswith("placing K=30 D=4 (annealed): step 20/20 (100%)")
    assert annealed.smooth_max_grad is original
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vmf_embeddings.prototypes.placement"):
        place_prototypes(30, 4, method="paper", steps=5, progress=False)
    assert not [r for r in caplog.records if "step " in r.getMessage()]


def test_the_packing_bound_is_exact_on_the_circle_and_below_known_optima():
    import math

    from vmf_embeddings.prototypes.geometry import known_optimum
    from vmf_embeddings.prototypes.placement import max_cosine_bound

    for k in (3, 7, 44, 45):
        assert max_cosine_bound(k, 2) == pytest.approx(math.cos(2 * math.pi / k), abs=1e-9)
    for k, d in ((4, 3), (11, 10), (20, 10)):
        assert max_cosine_bound(k, d) == known_optimum(k, d)
    for k, optimum in ((12, 1 / math.sqrt(5)), (7, 0.2101), (8, 0.2612)):  # Tammes optima in 3-D
        assert max_cosine_bound(k, 3) < optimum
