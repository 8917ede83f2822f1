"""torchrun on CPU (gloo): a 2-process run trains like a 1-process run at equal global batch, a 1-process run resumes
its checkpoint, distributed extraction writes the same files, and a refused launch ends every rank."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import FAST, compose_config
from vmf_embeddings import distributed
from vmf_embeddings.main import run

REPO = Path(__file__).resolve().parents[1]
# LeNet-5 has no BatchNorm, so the per-rank half batches give exactly the global batch's mean gradient (with
# BatchNorm, each rank normalises by its own half: distributed.sync_bn=true on CUDA, or a looser match).
BASE = ["arch=lenet5", "method=normalized_sce", "sampler=random", "optimizer=adam", "mode.learning_rate=1e-3",
        "mode.max_steps_per_epoch=8", "mode.patience=100", "mode.projector=false", "eval.plots=false",
        "eval.clustering=false", "mode.evaluate_at_end=false", "progress_bar=false", "device=cpu"]
GLOBAL_BATCH = 64
EPOCHS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*overrides: str, nproc: int = 2, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
               f"--master_port={_free_port()}", "-m", "vmf_embeddings.main", *overrides]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _history(run_dir: Path) -> list:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 2-process run (3 epochs, 2 x 32 of the global batch 64 per step) and a 1-process run (4 epochs, 64 per step), same seed."""
    root = tmp_path_factory.mktemp("ddp")
    two, one = root / "two", root / "one"
    done = torchrun(*BASE, f"sampler.batch_size={GLOBAL_BATCH}", f"mode.epochs={EPOCHS}", f"run_dir={two}",
                    f"runs_root={root}")
    assert done.returncode == 0, done.stderr[-3000:]
    run(compose_config(FAST + BASE + [f"sampler.batch_size={GLOBAL_BATCH}", f"mode.epochs={EPOCHS + 1}",
                                      f"runs_root={root}"]), one)
    return root, two, one, done


def test_two_processes_match_one_process_at_equal_global_batch(runs):
    _, two, one, done = runs
    h2, h1 = _history(two), _history(one)[:EPOCHS]
    assert [h["epoch"] for h in h2] == list(range(EPOCHS))
    # Tolerance: float32 summation order (two half-batch means averaged vs one mean); measured |diff| < 2e-6.
    np.testing.assert_allclose([h["train/loss"] for h in h2], [h["train/loss"] for h in h1], rtol=1e-4)
    np.testing.assert_allclose([h["val/accuracy"] for h in h2], [h["val/accuracy"] for h in h1], atol=1.5 / 270)
    assert h2[-1]["val/accuracy"] > 0.5  # it learnt (chance 0.1)
    # one run dir, written by rank 0 only: one log, one metrics.jsonl line per epoch, one TensorBoard event file
    assert sorted(p.name for p in two.glob("main.*.log")) == ["main.train.log"]
    assert len(list((two / "tensorboard").glob("events.*"))) == 1
    assert (two / "embeddings" / "test.npz").is_file() and (two / "checkpoints" / "best.pt").is_file()
    assert "[rank 1]" not in done.stderr or "error" not in done.stderr


def test_one_process_resumes_a_two_process_checkpoint(runs):
    root, two, one, _ = runs
    resumed = root / "resumed"
    shutil.copytree(two, resumed)
    run(compose_config(FAST + BASE + [f"sampler.batch_size={GLOBAL_BATCH}", f"mode.epochs={EPOCHS + 1}",
                                      "resume=true", f"runs_root={root}"]), resumed)
    h_resumed, h_one = _history(resumed), _history(one)
    assert [h["epoch"] for h in h_resumed] == list(range(EPOCHS + 1))
    np.testing.assert_allclose(h_resumed[-1]["train/loss"], h_one[-1]["train/loss"], rtol=1e-4)


def test_distributed_extraction_writes_the_same_files(runs):
    root, two, _, _ = runs
    single = root / "single_extract"
    shutil.copytree(two, single)
    run(compose_config(FAST + BASE + ["mode=get_embeddings", f"runs_root={root}"]), single)
    done = torchrun(*BASE, "mode=get_embeddings", f"run_dir={two}", f"runs_root={root}")
    assert done.returncode == 0, done.stderr[-3000:]
    for split in ("train", "val", "test"):
        with np.load(single / "embeddings" / f"{split}.npz") as a, np.load(two / "embeddings" / f"{split}.npz") as b:
            assert sorted(a.files) == sorted(b.files)
            for key in a.files:
                if a[key].dtype.kind in "fc":
                    np.testing.assert_allclose(b[key], a[key], rtol=1e-5, atol=1e-6, err_msg=f"{split}/{key}")
                else:
                    np.testing.assert_array_equal(b[key], a[key], err_msg=f"{split}/{key}")


def test_a_refused_launch_ends_every_rank_with_its_one_line_error(runs):
    root, two, _, _ = runs
    done = torchrun(*BASE, f"sampler.batch_size={GLOBAL_BATCH}", f"mode.epochs={EPOCHS}", f"run_dir={two}",
                    f"runs_root={root}", timeout=120)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors and errors[0].startswith("error: [rank 0] ") and "already holds a finished run" in errors[0], errors


def test_shards_cover_the_rows_once_in_order():
    for n in (0, 1, 7, 8, 1000):
        for size in (1, 2, 3, 8):
            parts = [distributed.shard(n, distributed.World(rank, size)) for rank in range(size)]
            assert [i for part in parts for i in part] == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_a_world_of_one_needs_no_process_group():
    info = distributed.world()
    assert not info.enabled and info.is_main
    x = torch.arange(6.0).reshape(3, 2)
    assert distributed.all_gather_rows(x) is x and distributed.broadcast_object({"a": 1}) == {"a": 1}
    torch.testing.assert_close(distributed.all_reduce_sum(x), x)


def test_sync_bn_on_cpu_is_refused_in_one_line(monkeypatch):
    from vmf_embeddings.errors import ConfigError
    from vmf_embeddings.build import build_model
    from vmf_embeddings.train import wrap_distributed

    monkeypatch.setattr(distributed, "world", lambda: distributed.World(0, 2))
    cfg = compose_config(FAST + ["distributed.sync_bn=true"])
    with pytest.raises(ConfigError, match="sync_bn=true needs CUDA"):
        wrap_distributed(cfg, build_model(cfg), torch.device("cpu"), False)
    cfg = compose_config(FAST + ["method=magnet", "sampler=magnet"])
    with pytest.raises(ConfigError, match="method=magnet steers the batch sampler"):
        wrap_distributed(cfg, build_model(cfg), torch.device("cpu"), False)


def test_a_multi_task_submitit_job_becomes_a_ddp_world(monkeypatch):
    """hydra/launcher=slurm_gpu (or submitit_local) with tasks_per_node=N: each task is one rank, as under torchrun."""
    # submitit writes os.environ directly: give it a copy, so nothing it exports outlives this test
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items()
                                        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
                                                     "MASTER_ADDR", "MASTER_PORT")})
    assert not distributed.launched_by_torchrun()  # no submitit job: a world of one
    task = {"SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_JOB_ID": "77", "SUBMITIT_LOCAL_NTASKS": "2",
            "SUBMITIT_LOCAL_JOB_NUM_NODES": "1", "SUBMITIT_LOCAL_NODEID": "0", "SUBMITIT_LOCAL_GLOBALID": "1",
            "SUBMITIT_LOCAL_LOCALID": "1"}
    os.environ.update(task)
    assert distributed.launched_by_torchrun()
    assert os.environ["RANK"] == "1" and os.environ["WORLD_SIZE"] == "2" and os.environ["LOCAL_RANK"] == "1"
    assert distributed.world() == distributed.World(1, 2, 1) and os.environ["MASTER_PORT"].isdigit()
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        del os.environ[key]
    monkeypatch.setenv("SUBMITIT_LOCAL_NTASKS", "1")
    assert not distributed.launched_by_torchrun()  # a one-task job stays a single process
