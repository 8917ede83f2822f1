"""Sweeps on other engines: the joblib and submitit launchers and the Optuna search presets run the real command
line; every job gets its own run dir, and failed jobs in other processes are still reported at the sweep's end."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import compose_config

REPO = Path(__file__).resolve().parents[1]
# each job a few seconds: one epoch of two episodes, no extraction or evaluation
TINY = ["mode.epochs=1", "sampler.n_episodes=2", "mode.projector=false", "mode.evaluate_at_end=false",
        "mode.extract_at_end=false", "device=cpu", "num_workers=0", "progress_bar=false"]
PRESETS = ["softmax", "arcface", "vmf", "hpn", "prototypes"]


def _sweep(*args: str, timeout: int = 240, env=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if env is None else env
    return subprocess.run([sys.executable, "-m", "vmf_embeddings.main", "-m", *args, *TINY], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=env)


def _run_dirs(root: Path) -> list:
    return sorted(p.parents[1] for p in root.rglob("checkpoints/last.pt"))


def test_joblib_sweep_gives_every_job_its_own_run_dir(tmp_path):
    result = _sweep("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=1,2", f"runs_root={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = _run_dirs(tmp_path)
    assert [r.name for r in runs] == [f"mode.epochs:1+sampler.n_episodes:2+seed:{s}" for s in (1, 2)]
    assert all(r.parent == tmp_path / "digits" / "unnormalized_sce" / "3dim" for r in runs)
    assert all((r / "checkpoints" / "best.pt").is_file() and (r / "config.yaml").is_file() for r in runs)
    assert not (tmp_path / ".sweep_records").exists() and not (tmp_path / "failed_jobs.txt").exists()


def test_submitit_local_sweep_keeps_its_logs_out_of_the_run_dirs(tmp_path):
    result = _sweep("hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", "seed=1,2,3,4",
                    f"runs_root={tmp_path}", timeout=280)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = _run_dirs(tmp_path)
    assert len(runs) == 4 and len({r.name for r in runs}) == 4
    assert all(r.parent == tmp_path / "digits" / "unnormalized_sce" / "3dim" for r in runs)
    logs = list((tmp_path / ".submitit").rglob("*_log.out"))
    assert len(logs) == 4  # submitit's own folder, beside the run dirs
    assert not any(".submitit" in str(r) for r in runs)
    assert not any(p.name.endswith(".pkl") for r in runs for p in r.rglob("*"))


def test_failed_job_in_another_process_is_reported_and_jobs_get_a_fair_share_of_the_cores(tmp_path):
    """joblib_fair with 2 jobs: each worker gets OMP_NUM_THREADS = cores // 2 (threads=auto reads it; the run name
    shows it here), and the job refused by a user error is reported by the sweep's process at the end."""
    from joblib import cpu_count

    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    result = _sweep("hydra/launcher=joblib_fair", "hydra.launcher.n_jobs=2", "name=t${oc.env:OMP_NUM_THREADS,unset}",
                    "mode.learning_rate=0.1,-1", f"runs_root={tmp_path}", env=env)
    assert result.returncode == 2, result.stderr[-3000:]
    runs = _run_dirs(tmp_path)
    assert len(runs) == 1 and runs[0].parent.name == f"t{max(1, cpu_count() // 2)}"
    lines = result.stderr.strip().splitlines()
    assert "sweep: 1 of 2 jobs failed" in lines
    assert lines[-1].startswith("job #1 (") and " mode.learning_rate=-1 " in lines[-1]
    assert lines[-1].endswith("): mode.learning_rate=-1 must be a finite number >= 0")
    assert (tmp_path / "failed_jobs.txt").read_text().splitlines() == lines[-2:]
    assert not (tmp_path / ".sweep_records").exists()


def test_optuna_search_writes_the_study_results(tmp_path):
    result = _sweep("hparams_search=softmax", "hydra.sweeper.n_trials=3", f"runs_root={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    (results,) = (tmp_path / "hparams_search" / "softmax").glob("*/optimization_results.yaml")
    study = OmegaConf.load(results)
    assert set(study.best_params) == {"mode.learning_rate", "method.params.init_temp"}
    assert 0.01 <= study.best_params["mode.learning_rate"] <= 1.0 and 0.0 <= study.best_value <= 1.0
    runs = _run_dirs(results.parent)
    assert len(runs) == 3 and all(r.parent == results.parent / "digits" / "normalized_sce" / "3dim" for r in runs)
    trained = [OmegaConf.load(r / "config.yaml") for r in runs]
    # each trial trained with its own proposal, and the best one is among them
    rates = {round(c.mode.learning_rate, 12) for c in trained}
    assert len(rates) == 3 and round(study.best_params["mode.learning_rate"], 12) in rates


# -- configs (composed in-process, nothing trained) ------------------------------------------------------------

@pytest.mark.parametrize("preset", PRESETS)
def test_every_searched_key_exists_in_its_presets_config(preset):
    cfg = compose_config([f"hparams_search={preset}"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed is not None
    assert sweeper.n_trials == 20 and f"hparams_search/{preset}/" in cfg.hydra.sweep.dir
    assert sweeper.params
    for key in sweeper.params:
        assert OmegaConf.select(cfg, key, default="<absent>") != "<absent>", f"{preset}: {key} is not a config key"


def test_launcher_presets_extend_the_plugins_configs():
    fair = compose_config(["hydra/launcher=joblib_fair"], return_hydra_config=True).hydra.launcher
    assert fair._target_.endswith("JoblibLauncher") and 1 <= fair.n_jobs <= 4 and fair.n_jobs <= os.cpu_count()
    slurm = compose_config(["hydra/launcher=slurm_gpu"], return_hydra_config=True).hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher") and slurm.gpus_per_node == 1 and slurm.tasks_per_node == 1
    # submitit's logs go to <sweep dir>/.submitit/<job id>/, beside the jobs' run dirs (<dataset>/<method>/...)
    assert OmegaConf.to_container(slurm)["submitit_folder"] == "${hydra.sweep.dir}/.submitit/%j"


# -- the failure report across processes ------------------------------------------------------------------------

def _job_config(sweep_dir: Path, num: int):
    return OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}, "job": {"num": num}}})


def test_failure_records_of_concurrent_sweeps_do_not_mix(tmp_path, capsys):
    from hydra.core.utils import JobReturn, JobStatus

    from vmf_embeddings import sweep

    sweep_config = _job_config(tmp_path, 0)
    first, second = sweep.FailureReport(), sweep.FailureReport()
    first.on_multirun_start(sweep_config)
    second.on_multirun_start(sweep_config)
    # a job process gets the callback pickled after on_multirun_start
    in_job = pickle.loads(pickle.dumps(first))
    sweep.record_failure(0, ["seed=1"], "a user error")
    in_job.on_job_end(_job_config(tmp_path, 0), JobReturn(status=JobStatus.COMPLETED))
    crashed = JobReturn(status=JobStatus.FAILED, _return_value=RuntimeError("boom"), overrides=["seed=2"])
    in_job.on_job_end(_job_config(tmp_path, 1), crashed)
    second.on_job_end(_job_config(tmp_path, 0), JobReturn(status=JobStatus.COMPLETED))
    assert not sweep.FAILED_JOBS

    second.on_multirun_end(sweep_config)  # its one job succeeded: no report, no exit
    with pytest.raises(SystemExit) as stop:
        first.on_multirun_end(sweep_config)
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "sweep: 2 of 2 jobs failed", "job #0 (seed=1): a user error", "job #1 (seed=2): RuntimeError: boom"]
    assert not (tmp_path / sweep.RECORDS_DIR).exists()
