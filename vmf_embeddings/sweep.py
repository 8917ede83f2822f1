"""Sweeps (`-m`): a job that fails fails alone, and the sweep ends with a report of the failed jobs.

`vmf_embeddings.main` turns a user error inside a multirun job into `JobFailed` (its one-line message is
already on stderr), which Hydra records as that job's failure and moves on. `FailureReport`, a Hydra
callback configured in conf/config.yaml, collects the failed jobs, prints one line per failure at the
end of the sweep, writes them to `<sweep dir>/failed_jobs.txt`, and exits with status 2 if any failed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, List

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class JobFailed(Exception):
    """A multirun job refused by a user error (message already printed)."""


class FailureReport(Callback):
    """Hydra callback: remember failed jobs; report them and set the exit status after the sweep."""

    def __init__(self) -> None:
        self.failed: List[str] = []
        self.jobs = 0

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        self.jobs += 1
        if job_return.status == JobStatus.FAILED:
            error = job_return._return_value
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            if not isinstance(error, JobFailed):
                message = f"{type(error).__name__}: {message}"
            self.failed.append(f"job #{self.jobs - 1} ({' '.join(job_return.overrides or [])}): {message}")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.failed:
            return
        lines = [f"sweep: {len(self.failed)} of {self.jobs} jobs failed"] + self.failed
        try:
            sweep_dir = Path(str(config.hydra.sweep.dir))
            sweep_dir.mkdir(parents=True, exist_ok=True)
            (sweep_dir / "failed_jobs.txt").write_text("\n".join(lines) + "\n")
        except Exception:  # noqa: BLE001 - the report on stderr is what matters
            pass
        print("\n".join(lines), file=sys.stderr)
        sys.exit(2)
