"""The run lifecycle under stress: refused launches change nothing, resume applies new settings, overwrite is
staged, locks, weights-only checkpoints, the target allowlist, path confinement, signals, sweeps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import FAST, compose_config
from vmf_embeddings import checkpoint
from vmf_embeddings.errors import CheckpointError, ConfigError, UserError
from vmf_embeddings.main import run
from vmf_embeddings.resume import RunDirBusyError, RunLock

REPO = Path(__file__).resolve().parents[1]
TINY = ["mode.epochs=2", "sampler.n_episodes=3", "mode.evaluate_at_end=false", "mode.extract_at_end=false"]


def _train(run_dir: Path, overrides=()):
    return run(compose_config(FAST + TINY + list(overrides)), run_dir, overrides=list(overrides))


def _snapshot(run_dir: Path) -> dict:
    """Every file under a run dir with its bytes (mtime-independent)."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def _cli(*args, env=None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vmf_embeddings.main", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, **kwargs)


# -- records ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, error", [
    ([], "already holds a finished run"),
    (["resume=true", "arch.params.embedding_dim=5"], "arch.params.embedding_dim"),
    (["resume=true", "seed=7"], "seed"),
])
def test_a_refused_launch_changes_nothing(tmp_path, overrides, error):
    run_dir = tmp_path / "run"
    _train(run_dir)
    before = _snapshot(run_dir)
    with pytest.raises(UserError, match=error):
        _train(run_dir, overrides)
    assert _snapshot(run_dir) == before


def test_resume_applies_a_new_learning_rate_and_records_it(tmp_path):
    run_dir = tmp_path / "run"
    _train(run_dir, ["mode.epochs=1"])
    _train(run_dir, ["mode.epochs=2", "mode.learning_rate=0.0123", "resume=true"])
    state = checkpoint.load(run_dir / "checkpoints" / "last.pt")
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0123)
    history = [json.loads(line) for line in (run_dir / "resume_history.jsonl").read_text().splitlines()]
    assert history[-1]["changed"]["mode.learning_rate"] == [0.1, 0.0123]
    assert history[-1]["changed"]["mode.epochs"] == [1, 2] and history[-1]["resumed_after_epoch"] == 0
    # the original training overrides stay the run's record
    assert "mode.learning_rate" not in (run_dir / ".hydra_train" / "overrides.yaml").read_text()


def test_overwrite_keeps_the_old_run_until_the_new_one_has_a_checkpoint(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run(compose_config(FAST + ["mode.epochs=1", "sampler.n_episodes=2"]), run_dir)  # with embeddings + metrics
    assert (run_dir / "metrics.json").is_file() and (run_dir / "embeddings").is_dir()
    before = _snapshot(run_dir)
    from vmf_embeddings.methods.softmax import UnnormalizedSoftmax

    original = UnnormalizedSoftmax.loss
    monkeypatch.setattr(UnnormalizedSoftmax, "loss", lambda self, e, y, t=None: original(self, e, y, t) * float("nan"))
    with pytest.raises(UserError, match="NaN"):
        _train(run_dir, ["overwrite=true"])
    assert _snapshot(run_dir) == before and not (tmp_path / ".run.overwrite").exists()  # old run intact
    monkeypatch.setattr(UnnormalizedSoftmax, "loss", original)
    _train(run_dir, ["overwrite=true", "seed=5"])
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "embeddings").exists()  # old results gone
    assert "seed: 5" in (run_dir / "config.yaml").read_text()
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2 and not (tmp_path / ".run.overwrite").exists()


# -- locks ----------------------------------------------------------------------------------------------------

def test_a_live_lock_refuses_and_a_stale_one_is_taken_over(tmp_path, caplog):
    run_dir = tmp_path / "run"
    with RunLock(run_dir):
        with pytest.raises(RunDirBusyError, match=f"in use by process {os.getpid()}"):
            _train(run_dir)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    (run_dir / ".lock").write_text(f"{socket.gethostname()} {dead.pid}\n")
    _train(run_dir)
    assert not (run_dir / ".lock").exists() and "stale lock" in caplog.text


# -- no code from files ---------------------------------------------------------------------------------------

class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_crafted_checkpoint_runs_no_code(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.save({"model": {}, "format": checkpoint.FORMAT, "evil": _Payload()}, run_dir / "checkpoints" / "last.pt")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(CheckpointError, match="already holds a damaged run"):
            _train(run_dir)  # a plain launch only peeks at last.pt
        (run_dir / "config.yaml").write_text((REPO / "conf" / "config.yaml").read_text()[:0] + "{}\n")
        with pytest.raises(CheckpointError, match="refused for safety") as info:
            checkpoint.load(run_dir / "checkpoints" / "last.pt")
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "PWNED").exists() and "\n" not in str(info.value)


@pytest.mark.parametrize("content, message", [
    (b"", "truncated or corrupt"),
    (b"not a zip file at all", "truncated or corrupt"),
])
def test_a_damaged_checkpoint_names_the_file_and_the_choices(tmp_path, content, message):
    run_dir = tmp_path / "run"
    _train(run_dir, ["mode.epochs=1"])
    (run_dir / "checkpoints" / "last.pt").write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as info:
        _train(run_dir, ["mode.epochs=2", "resume=true"])
    assert "resume_from=best" in str(info.value) and "overwrite=true" in str(info.value)
    _train(run_dir, ["mode.epochs=2", "resume=true", "resume_from=best"])  # the offered way out works
    assert checkpoint.load(run_dir / "checkpoints" / "last.pt")["epoch"] == 1


def test_a_checkpoint_of_another_format_is_refused(tmp_path):
    path = tmp_path / "last.pt"
    torch.save({"model": {}, "format": 1}, path)
    with pytest.raises(CheckpointError, match="format 1, this version reads format 2"):
        checkpoint.load(path)


def test_targets_outside_the_allowlist_are_refused(tmp_path):
    cfg = compose_config(FAST + TINY + ["method.head._target_=os.system"])
    with pytest.raises(ConfigError, match=r"method.head._target_=os.system .* allowed_targets=\[os.\]"):
        run(cfg, tmp_path / "run")
    # a saved config.yaml cannot extend the allowlist: extraction uses the command's
    run_dir = tmp_path / "ok"
    _train(run_dir)
    text = (run_dir / "config.yaml").read_text().replace("allowed_targets: []", "allowed_targets: [os.]")
    text = text.replace("_target_: vmf_embeddings.methods.softmax.UnnormalizedSoftmax", "_target_: os.system")
    (run_dir / "config.yaml").write_text(text)
    with pytest.raises(ConfigError, match="os.system"):
        run(compose_config(FAST + ["mode=get_embeddings"]), run_dir)


@pytest.mark.parametrize("override, message", [
    ("name=../../..", "name='../../..' must be a plain relative name"),
    ("name=/etc", "must be a plain relative name"),
    ("run_dir=elsewhere/run", "lies outside runs_root"),
])
def test_names_and_run_dirs_stay_under_runs_root(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        run(compose_config(FAST + TINY + [override, f"runs_root={tmp_path}/runs"]), tmp_path / "anywhere")


# -- interruption -----------------------------------------------------------------------------------------------

def test_orphan_temporary_files_are_removed_on_start(tmp_path):
    run_dir = tmp_path / "run"
    _train(run_dir, ["mode.epochs=1"])
    orphan = run_dir / "checkpoints" / ".last.pt.abc123.tmp"
    orphan.write_bytes(b"half a checkpoint")
    _train(run_dir, ["mode.epochs=2", "resume=true"])
    assert not orphan.exists()


def _start(run_dir: Path, *extra: str, env=None) -> subprocess.Popen:
    args = [sys.executable, "-m", "vmf_embeddings.main", "device=cpu", "num_workers=0", "progress_bar=false",
            f"run_dir={run_dir}", "mode.evaluate_at_end=false", "mode.extract_at_end=false", *extra]
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def test_sigterm_saves_the_step_and_resume_continues_bit_for_bit(tmp_path):
    budget = ["mode.epochs=3", "sampler.n_episodes=40"]
    straight = tmp_path / "straight"
    _train(straight, budget)
    run_dir = tmp_path / "run"
    process = _start(run_dir, *budget)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 120
    while not metrics.is_file() and time.time() < deadline:  # mid-epoch 1
        time.sleep(0.05)
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("error: interrupted by SIGTERM at ") and "resume=true" in line
    assert "Traceback" not in stderr
    _train(run_dir, budget + ["resume=true"])
    a = checkpoint.load(straight / "checkpoints" / "last.pt")
    b = checkpoint.load(run_dir / "checkpoints" / "last.pt")
    assert a["epoch"] == b["epoch"] == 2 and a["step"] == b["step"]
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=0, msg=key)


@pytest.mark.slow
def test_twenty_kills_at_random_points_then_resume_bit_for_bit(tmp_path):
    """SIGKILL at 20 random moments (every other one inside a slowed-down checkpoint write), resuming after each:
    the final weights equal an uninterrupted run's, and no checkpoint is ever unreadable."""
    import random

    budget = ["mode.epochs=8", "sampler.n_episodes=6"]
    straight = tmp_path / "straight"
    _train(straight, budget)
    run_dir = tmp_path / "run"
    rng = random.Random(0)
    started, kills = False, 0
    while kills < 20:
        extra = budget + (["resume=true"] if started else [])
        slow = kills % 2 == 1
        process = _start(run_dir, *extra, env={checkpoint.WRITE_DELAY_ENV: "0.4"} if slow else None)
        if slow:  # wait for a checkpoint write in progress, then kill inside it
            deadline = time.time() + 60
            while process.poll() is None and time.time() < deadline:
                if list((run_dir / "checkpoints").glob(".*.tmp")):
                    time.sleep(rng.uniform(0.0, 0.3))
                    break
                time.sleep(0.01)
        else:
            time.sleep(rng.uniform(1.0, 3.0))
        if process.poll() is not None:  # finished before the kill: nothing left to interrupt
            process.communicate()
            break
        process.kill()
        process.communicate()
        kills += 1
        last = run_dir / "checkpoints" / "last.pt"
        if last.is_file():
            checkpoint.load(last)  # never torn
            started = True
        if (run_dir / ".lock").exists():
            pass  # a stale lock of a killed process: the next launch takes it over
    final = _start(run_dir, *(budget + (["resume=true"] if started else [])))
    _, stderr = final.communicate(timeout=300)
    assert final.returncode == 0, stderr[-2000:]
    a = checkpoint.load(straight / "checkpoints" / "last.pt")
    b = checkpoint.load(run_dir / "checkpoints" / "last.pt")
    assert a["epoch"] == b["epoch"] and a["finished"] and b["finished"]
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=0, msg=key)
    assert kills >= 10


# -- sweeps ---------------------------------------------------------------------------------------------------

def test_a_user_error_fails_only_its_own_sweep_job(tmp_path):
    result = _cli("-m", "mode.epochs=1", "mode.max_steps_per_epoch=2", "mode.learning_rate=0.1,-1,0.2",
                  f"runs_root={tmp_path}", "device=cpu", "num_workers=0", "progress_bar=false",
                  "mode.evaluate_at_end=false", "mode.extract_at_end=false")
    assert result.returncode == 2
    assert len(list(tmp_path.rglob("checkpoints/last.pt"))) == 2  # jobs #0 and #2 ran
    assert "sweep: 1 of 3 jobs failed" in result.stderr and "mode.learning_rate=-1" in result.stderr
    assert "mode.learning_rate=-1" in (tmp_path / "failed_jobs.txt").read_text()


def test_a_single_run_still_exits_2_with_one_line(tmp_path):
    result = _cli("mode.learning_rate=-1", f"runs_root={tmp_path}")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: mode.learning_rate=-1 must be a finite number >= 0"]


def test_options_added_later_resume_at_their_old_behaviour():
    """A vMF run saved before method.params.sampler existed resumes with the default (exact); a change is refused."""
    from omegaconf import OmegaConf

    from vmf_embeddings.resume import model_or_data_changes

    new = compose_config(["method=vmf_softmax"])
    saved = OmegaConf.to_container(new, resolve=True)
    del saved["method"]["params"]["sampler"], saved["method"]["head"]["sampler"]
    assert model_or_data_changes(saved, new) == []
    changed = compose_config(["method=vmf_softmax", "method.params.sampler=original"])
    assert model_or_data_changes(saved, changed) == ["method.head.sampler ('<absent>' -> 'original')",
                                                     "method.params.sampler ('<absent>' -> 'original')"]
