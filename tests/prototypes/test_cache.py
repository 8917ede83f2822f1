"""The placement cache and the command-line scripts."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

import vmf_embeddings.prototypes.cache as cache_module
from vmf_embeddings.prototypes import load_or_place

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _script(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_placement_is_cached_and_reused(tmp_path, monkeypatch):
    first = load_or_place(30, 4, method="converged", seed=5, cache_dir=str(tmp_path))
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["prototypes-4d-30c-converged-seed5.json", "prototypes-4d-30c-converged-seed5.npy"]
    sidecar = json.loads((tmp_path / files[0]).read_text())
    assert sidecar["stats"]["max_cosine"] == pytest.approx(float((first @ first.T - 2 * np.eye(30)).max()))

    def refuse(*args, **kwargs):
        raise AssertionError("placement ran again instead of using the cache")

    monkeypatch.setattr(cache_module, "place_prototypes", refuse)
    again = load_or_place(30, 4, method="converged", seed=5, cache_dir=str(tmp_path))
    assert np.array_equal(first, again)


def test_options_seed_and_method_key_the_cache(tmp_path):
    load_or_place(30, 4, seed=5, cache_dir=str(tmp_path))
    load_or_place(30, 4, seed=6, cache_dir=str(tmp_path))
    load_or_place(30, 4, method="paper", seed=5, cache_dir=str(tmp_path), options={"steps": 50})
    names = {p.stem for p in tmp_path.glob("*.npy")}
    assert len(names) == 3 and any(n.startswith("prototypes-4d-30c-paper-seed5-") for n in names)


def test_a_bad_cached_file_is_replaced(tmp_path):
    path = tmp_path / "prototypes-3d-4c-converged-seed300.npy"
    np.save(path, np.ones((4, 3)))  # collapsed (and not unit norm)
    p = load_or_place(4, 3, cache_dir=str(tmp_path))
    assert abs((p @ p.T)[0, 1] + 1 / 3) < 1e-12
    assert np.array_equal(np.load(path), p)


def test_no_cache_dir_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    load_or_place(5, 3, cache_dir=None)
    assert not any(tmp_path.iterdir())


def test_place_prototypes_script(tmp_path, capsys):
    script = _script("place_prototypes")
    out = tmp_path / "copy.npy"
    assert script.main(["K=12", "D=4", f"cache_dir={tmp_path}", f"out={out}", "options.steps=300"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["n_classes"] == 12 and stats["dim"] == 4 and Path(stats["cache_file"]).is_file()
    assert np.load(out).shape == (12, 4)
    assert script.main(["K=12"]) == 2  # D missing: usage


def test_bench_script_prints_both_rules(capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["bench", "--sizes", "11x10", "20x3", "--methods", "paper", "converged",
                                     "--paper-steps", "200"])
    _script("bench_prototypes").main()
    out = capsys.readouterr().out
    assert "paper" in out and "ours" in out and len(out.strip().splitlines()) == 4
