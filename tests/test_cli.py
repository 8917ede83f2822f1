"""The real command line: one-line errors, and a 2-job multirun whose jobs never share a run dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _main(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vmf_embeddings.main", *args],
        cwd=cwd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_multirun_gives_every_job_its_own_run_dir(tmp_path):
    result = _main(
        "-m", "method=normalized_sce", "mode.learning_rate=0.1,0.5", "mode.epochs=1", "sampler.n_episodes=2",
        f"runs_root={tmp_path}", "device=cpu", "num_workers=0", "progress_bar=false",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    best = sorted(tmp_path.rglob("checkpoints/best.pt"))
    assert len(best) == 2 and best[0].parent != best[1].parent
    names = {c.parents[1].name for c in best}
    assert names == {f"mode.epochs:1+mode.learning_rate:{lr}+sampler.n_episodes:2" for lr in (0.1, 0.5)}
    for checkpoint in best:
        run_dir = checkpoint.parents[1]
        assert run_dir.parent == tmp_path / "digits" / "normalized_sce" / "3dim"
        assert (run_dir / "embeddings" / "test.npz").is_file() and (run_dir / ".hydra_train").is_dir()
        assert (run_dir / "main.train.log").is_file() and (run_dir / "metrics.json").is_file()


def test_user_errors_are_one_line_on_stderr(tmp_path):
    result = _main("method=vmf_softmax", "arch.params.embedding_dim=1", f"runs_root={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: arch.params.embedding_dim=1")
    result = _main("dataset=cifar10", f"dataset.dataset_path={tmp_path}/nowhere", "dataset.loader.download=false",
                   f"runs_root={tmp_path}")
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: dataset 'cifar10'") and "dataset.dataset_path" in last


def test_unknown_option_lists_the_valid_ones(tmp_path):
    result = _main("method=softmaxx", f"runs_root={tmp_path}")
    assert result.returncode != 0
    assert "Available options in 'method'" in result.stderr and "vmf_softmax" in result.stderr


def test_cfg_hydra_resolve_prints_the_run_dir(tmp_path):
    result = _main("--cfg", "hydra", "--resolve")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "dir: runs/<dataset>/<method>/<dim>dim/default" in result.stdout


def test_no_module_compares_method_dataset_or_geometry_names():
    """Runner, extraction and evaluation go through the Method interface and the geometry registry."""
    import re

    pattern = re.compile(r"""(geometry|method\.name|dataset\.name)\s*(==|!=|\bin\b)|== *["'](vmf|hyperbolic|"""
                         r"""cosine|euclidean|sop|cub200|cars196|mnist|cifar10|cifar100)["']""")
    offenders = []
    for path in sorted((REPO / "vmf_embeddings").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if pattern.search(code):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
