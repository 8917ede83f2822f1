"""Sweeps (`-m`): a job refused by a user error fails alone, and the sweep ends with a report of the failures.

`vmf_embeddings.main` prints a multirun job's one-line error, records it with `record_failure` and returns,
so Hydra goes on with the next job (raising would make Hydra's sweeper stop with a traceback after the
batch). `FailureReport`, a Hydra callback configured in conf/config.yaml, prints one line per failed job
when the sweep ends, writes them to `<sweep dir>/failed_jobs.txt`, and exits with status 2 if any failed.

Jobs may run in other processes (hydra/launcher=joblib | submitit_local | submitit_slurm | slurm_gpu, ...), so
nothing is kept in the sweep's own memory: `on_job_end` runs in the job's process, right after the job, and
writes one small record per job (its failures, if any) to `<sweep dir>/.sweep_records/<sweep id>/`; the sweep's
process reads them in `on_multirun_end` and removes the folder. The sweep id, set in `on_multirun_start`, travels
to the jobs with the pickled callback, so concurrent sweeps into the same runs_root never mix their records.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, List, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

#: this process's failed jobs not yet written to the sweep's records (record_failure -> FailureReport.on_job_end)
FAILED_JOBS: List[str] = []
RECORDS_DIR = ".sweep_records"


def record_failure(job: int, overrides: Iterable[str], message: str) -> None:
    FAILED_JOBS.append(f"job #{job} ({' '.join(str(o) for o in overrides)}): {message}")


def _job_num(config: DictConfig) -> int:
    num = OmegaConf.select(config, "hydra.job.num", default=None)
    return int(num) if num is not None else -1


class FailureReport(Callback):
    """Hydra callback: after the sweep, report the failed jobs and set the exit status."""

    def __init__(self) -> None:
        self.sweep_id: Optional[str] = None

    def _records(self, config: DictConfig) -> Path:
        return Path(str(config.hydra.sweep.dir)) / RECORDS_DIR / str(self.sweep_id)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        FAILED_JOBS.clear()
        self.sweep_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        """In the job's process: write this job's record (Hydra turns an exception here into a warning)."""
        failures = list(FAILED_JOBS)
        FAILED_JOBS.clear()
        if self.sweep_id is None:  # a single run: main exits with its error itself
            return
        num = _job_num(config)
        if getattr(getattr(job_return, "status", None), "name", None) == "FAILED":  # an exception, not a user error
            error = job_return._return_value
            overrides = " ".join(str(o) for o in (getattr(job_return, "overrides", None) or []))
            failures.append(f"job #{num} ({overrides}): {type(error).__name__}: {error}")
        records = self._records(config)
        records.mkdir(parents=True, exist_ok=True)
        # a unique temporary name, then os.replace: the sweep never reads a half-written record
        tmp = records / f".job-{num}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.write_text(json.dumps({"job": num, "failures": failures}))
        os.replace(tmp, records / f"job-{num}.json")

    def _read_records(self, config: DictConfig) -> tuple:
        jobs, failures = 0, []
        records = self._records(config)
        if not records.is_dir():
            return jobs, failures
        found = []
        for path in records.glob("job-*.json"):
            try:
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        for record in sorted(found, key=lambda r: r.get("job", -1)):
            jobs += 1
            failures += [str(f) for f in record.get("failures", [])]
        shutil.rmtree(records, ignore_errors=True)
        try:  # the shared parent goes too once no sweep uses it
            records.parent.rmdir()
        except OSError:
            pass
        return jobs, failures

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        jobs, failures = self._read_records(config) if self.sweep_id is not None else (0, [])
        failures += FAILED_JOBS  # any failure of this process not yet written (none unless on_job_end failed)
        FAILED_JOBS.clear()
        if not failures:
            return
        lines = [f"sweep: {len(failures)} of {max(jobs, len(failures))} jobs failed"] + failures
        try:
            sweep_dir = Path(str(config.hydra.sweep.dir))
            sweep_dir.mkdir(parents=True, exist_ok=True)
            (sweep_dir / "failed_jobs.txt").write_text("\n".join(lines) + "\n")
        except OSError:  # the report on stderr is what matters
            pass
        print("\n".join(lines), file=sys.stderr)
        sys.exit(2)
