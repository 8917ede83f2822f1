"""Sweeps (`-m`): a job refused by a user error fails alone, and the sweep ends with a report of the failures.

`vmf_embeddings.main` prints a multirun job's one-line error, records it with `record_failure` and returns,
so Hydra goes on with the next job (raising would make Hydra's sweeper stop with a traceback after the
batch). `FailureReport`, a Hydra callback configured in conf/config.yaml, prints one line per failed job
when the sweep ends, writes them to `<sweep dir>/failed_jobs.txt`, and exits with status 2 if any failed.
Jobs run by Hydra's default launcher share this process, so the record is a module-level list.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterable, List

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

FAILED_JOBS: List[str] = []


def record_failure(job: int, overrides: Iterable[str], message: str) -> None:
    FAILED_JOBS.append(f"job #{job} ({' '.join(str(o) for o in overrides)}): {message}")


class FailureReport(Callback):
    """Hydra callback: after the sweep, report the failed jobs and set the exit status."""

    def __init__(self) -> None:
        self.jobs = 0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        FAILED_JOBS.clear()

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        self.jobs += 1

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not FAILED_JOBS:
            return
        lines = [f"sweep: {len(FAILED_JOBS)} of {self.jobs} jobs failed"] + FAILED_JOBS
        try:
            sweep_dir = Path(str(config.hydra.sweep.dir))
            sweep_dir.mkdir(parents=True, exist_ok=True)
            (sweep_dir / "failed_jobs.txt").write_text("\n".join(lines) + "\n")
        except OSError:  # the report on stderr is what matters
            pass
        print("\n".join(lines), file=sys.stderr)
        sys.exit(2)
