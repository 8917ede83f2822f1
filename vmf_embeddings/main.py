"""The single entry point: `python -m vmf_embeddings.main [overrides]` (add -m for sweeps).

Composes conf/config.yaml (groups mode, dataset, arch, method, sampler, optimizer, scheduler, eval,
optional experiment), validates the combination, then trains, extracts and evaluates (mode=train) or
only extracts embeddings (mode=get_embeddings) in the run dir `runs/<dataset>/<method>/<dim>dim/<name>/`.
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning, so a run sharing the
# machine with a busy process loses about the share of the CPU it lost, not 10x (scripts/bench_train.py
# --contended measures it). A value the user exported wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import logging  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Dict, Iterable, Optional  # noqa: E402

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from vmf_embeddings.errors import ConfigError, UserError  # noqa: E402
from vmf_embeddings.rundir import register_resolvers, unusable_root  # noqa: E402
from vmf_embeddings.sweep import record_failure  # noqa: E402
from vmf_embeddings.validate import validate  # noqa: E402

log = logging.getLogger("vmf_embeddings")
logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its INFO lines list every SIMD build it tried

register_resolvers()

#: keys of the mode group that extraction reads; mode=get_embeddings ignores the others
EXTRACTION_KEYS = {"name", "checkpoint", "splits", "batch_size", "projector", "projector_max_points",
                   "extract_at_end", "evaluate_at_end"}
TRAINING_GROUPS = ("sampler", "optimizer", "scheduler")


def training_only(overrides: Iterable[str]) -> list:
    """The overrides a get_embeddings run ignores: training keys of the mode group and training groups."""
    ignored = []
    for override in overrides:
        key = str(override).split("=", 1)[0].lstrip("+~")
        head, _, rest = key.partition(".")
        if (head == "mode" and rest and rest.split(".")[0] not in EXTRACTION_KEYS) or head in TRAINING_GROUPS:
            ignored.append(key)
    return ignored


def run(cfg: DictConfig, run_dir: Path, overrides: Iterable[str] = (),
        choices: Optional[Dict[str, str]] = None) -> Optional[float]:
    """Dispatch on mode; callable without Hydra's decorator (tests use the compose API)."""
    from vmf_embeddings.runtime import configure_threads

    validate(cfg, choices)
    problem = unusable_root(cfg.get("run_dir") or cfg.runs_root)
    if problem:
        raise ConfigError(f"{problem}; choose another runs_root=... (or run_dir=...)")
    configure_threads(cfg.get("threads", "auto"))
    run_dir = Path(run_dir)
    from vmf_embeddings import distributed

    if distributed.launched_by_torchrun():
        distributed.setup(str(cfg.device))
        try:
            result = _dispatch(cfg, run_dir, overrides)
            distributed.barrier()  # every rank done (rank 0's last writes included) before the group goes
            return result
        finally:
            distributed.teardown()
    return _dispatch(cfg, run_dir, overrides)


def _dispatch(cfg: DictConfig, run_dir: Path, overrides: Iterable[str]) -> Optional[float]:
    if cfg.dataset.get("task", "classification") == "detection":
        from vmf_embeddings.distributed import launched_by_torchrun

        if launched_by_torchrun():
            raise ConfigError("detection runs train in one process (torchrun is for the embedding methods); "
                              "start it with python -m vmf_embeddings.main")
        return run_detection(cfg, run_dir, overrides)
    if cfg.mode.name == "train":
        from vmf_embeddings.train import train

        if is_main_rank():
            run_dir.mkdir(parents=True, exist_ok=True)
        log.info("run dir %s\n%s", run_dir, OmegaConf.to_yaml(cfg, resolve=True))
        progress = train(cfg, run_dir, overrides)
        if progress.finished:
            finish(cfg, run_dir)
        return progress.best_metric
    from vmf_embeddings.extract import extract

    ignored = training_only(overrides)
    if ignored:
        log.info("mode=get_embeddings ignores the training-only keys %s", ", ".join(ignored))
    extract(cfg, run_dir)
    return None


def run_detection(cfg: DictConfig, run_dir: Path, overrides: Iterable[str] = ()) -> Optional[float]:
    """`task: detection` datasets: train the detector (vmf_embeddings.detection), then extract its detections
    (and few-shot episodes) and evaluate them; mode=get_embeddings re-extracts only."""
    from vmf_embeddings.detection.extract import extract_detection

    if cfg.mode.name != "train":
        extract_detection(cfg, run_dir)
        return None
    from vmf_embeddings.detection.train import train_detection

    run_dir.mkdir(parents=True, exist_ok=True)
    progress = train_detection(cfg, run_dir, overrides)
    if progress.finished and (cfg.mode.extract_at_end or cfg.mode.evaluate_at_end):
        extract_detection(cfg, run_dir)
        if cfg.mode.evaluate_at_end:
            from vmf_embeddings.eval.run_eval import evaluate_run

            result = evaluate_run(run_dir)
            test = result.get("test", {})
            print(f"\n{cfg.method.name} on {cfg.dataset.name}: test " + "  ".join(
                f"{k}={v:.4f}" for k, v in test.items() if not k.startswith("ap50") and isinstance(v, float)))
            print(f"all metrics: {run_dir / 'metrics.json'}")
    return progress.best_metric


def is_main_rank() -> bool:
    from vmf_embeddings.distributed import world

    return world().is_main


def quiet_other_ranks() -> None:
    """Under torchrun only rank 0 logs to the console and the run dir's log file; the others report warnings
    and errors on the console (prefixed with their rank)."""
    from vmf_embeddings.distributed import launched_by_torchrun, world

    if not launched_by_torchrun() or world().is_main:
        return
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
        else:
            handler.setFormatter(logging.Formatter(f"[rank {world().rank}] %(levelname)s %(message)s"))
    root.setLevel(logging.WARNING)


def finish(cfg: DictConfig, run_dir: Path) -> Optional[dict]:
    """Extract and evaluate a finished run as `mode.extract_at_end` / `mode.evaluate_at_end` ask; print the
    test metrics and where metrics.json is."""
    mode = cfg.mode
    if not (mode.extract_at_end or mode.evaluate_at_end):
        return None
    from vmf_embeddings.extract import extract

    extract(cfg, run_dir)
    if not mode.evaluate_at_end or not is_main_rank():
        return None
    from vmf_embeddings.eval.run_eval import evaluate_run
    from vmf_embeddings.eval.summary import print_summary

    result = evaluate_run(run_dir)
    print_summary(result, Path(run_dir) / "metrics.json")
    return result


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> Optional[float]:
    hydra_cfg = HydraConfig.get()
    quiet_other_ranks()
    try:
        return run(cfg, Path(hydra_cfg.runtime.output_dir), hydra_cfg.overrides.task,
                   dict(hydra_cfg.runtime.choices))
    except UserError as error:
        # One line, no traceback: the message names the key or file and the fix.
        from vmf_embeddings.distributed import launched_by_torchrun, world

        rank = f"[rank {world().rank}] " if launched_by_torchrun() else ""
        print(f"error: {rank}{error}", file=sys.stderr)
        if hydra_cfg.mode == RunMode.MULTIRUN and not hasattr(error, "exit_code"):  # a signal stops the sweep
            # Only this job fails: the sweep goes on, and vmf_embeddings.sweep reports the failures at its end.
            record_failure(hydra_cfg.job.num, hydra_cfg.overrides.task, str(error))
            return None
        sys.exit(getattr(error, "exit_code", 2))
    except KeyboardInterrupt:
        # Training catches the first Ctrl-C itself (saves last.pt, see train.StopRequest); this is a second
        # one, or one during extraction / evaluation, which write atomically and are simply run again.
        print("error: interrupted (Ctrl-C); nothing half-written is kept: run the same command again "
              "(add resume=true to continue training)", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
