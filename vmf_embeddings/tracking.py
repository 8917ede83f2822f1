"""Metrics to TensorBoard and a JSONL file in the run dir, plus the progress bar."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Dict, Optional

log = logging.getLogger(__name__)


class Tracker:
    """Writes `metrics.jsonl` (one line per epoch, always) and TensorBoard scalars (when installed)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.jsonl = self.run_dir / "metrics.jsonl"
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer: Optional[object] = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
        except ImportError:  # tensorboard is in requirements.txt, but training must not depend on it
            log.warning("tensorboard is not installed: curves go to metrics.jsonl only")
            self.writer = None

    def log(self, epoch: int, scalars: Dict[str, float]) -> None:
        with open(self.jsonl, "a") as handle:
            handle.write(json.dumps({"epoch": epoch, **scalars}) + "\n")
        if self.writer is not None:
            for key, value in scalars.items():
                self.writer.add_scalar(key, value, epoch)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def progress(iterable, total: int, description: str, enabled: bool = True):
    """tqdm on a terminal; silent (no carriage-return spam in logs) otherwise."""
    if not enabled or not sys.stderr.isatty():
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=description, leave=False, dynamic_ncols=True)
