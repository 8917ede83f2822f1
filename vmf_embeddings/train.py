"""mode=train: the epoch loop with validation, plateau LR, early stopping and atomic checkpoints.

Checkpoints: `checkpoints/last.pt` after every epoch (everything needed to resume bit-for-bit: weights,
optimizer, scheduler, epoch, best metric, patience counter, RNG and sampler states) and
`checkpoints/best.pt` on strict improvement of the validation metric. Both are written atomically, so a
crash or Ctrl-C leaves the last good pair; `resume=true` continues from `last.pt` in the same run dir.
"""

from __future__ import annotations

import logging
import math
import shutil
from itertools import islice
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple

import torch
from omegaconf import DictConfig, OmegaConf

from vmf_embeddings import checkpoint
from vmf_embeddings.build import (
    EmbeddingModel,
    build_data,
    build_model,
    build_optimizer,
    build_sampler,
    build_scheduler,
)
from vmf_embeddings.data_source import Batch, BatchSource
from vmf_embeddings.datasets.base import DataSplits
from vmf_embeddings.errors import CheckpointError, NonFiniteLossError
from vmf_embeddings.runtime import resolve_device, rng_state, seed_everything, set_rng_state
from vmf_embeddings.tracking import Tracker, progress

log = logging.getLogger(__name__)

CALIBRATION_BATCH = 256


def checkpoint_paths(run_dir: Path) -> Tuple[Path, Path]:
    return run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / "best.pt"


def _after_epoch(epoch: int) -> None:
    """Hook called after each epoch's checkpoint is on disk (tests simulate a kill here)."""


def _prepare_run_dir(cfg: DictConfig, run_dir: Path) -> Optional[dict]:
    """Return the checkpoint to resume from, or None for a fresh run; never overwrite a run silently."""
    last_path, _ = checkpoint_paths(run_dir)
    if cfg.resume:
        if not last_path.is_file():
            raise CheckpointError(
                f"resume=true but there is no checkpoint at {last_path}; drop resume=true to start this run"
            )
        return checkpoint.load(last_path)
    if last_path.is_file():
        if not cfg.overwrite:
            state = checkpoint.load(last_path)
            kind = "finished" if state.get("finished") else "unfinished"
            raise CheckpointError(
                f"{run_dir} already holds a {kind} run; pass resume=true to continue it, overwrite=true to "
                f"replace it, or name=<new name> for a new run"
            )
        log.warning("overwrite=true: replacing the run in %s", run_dir)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    return None


@torch.no_grad()
def compute_embeddings(model: EmbeddingModel, source: BatchSource, batch_size: int, amp: bool = False):
    """Backbone outputs f(x) for a whole split, in order, plus labels and targets (None if absent)."""
    model.eval()
    embeddings, labels, targets = [], [], []
    for x, y, t in source.batches(source.sequential(batch_size)):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            embeddings.append(model(x).float())
        labels.append(y)
        if t is not None:
            targets.append(t)
    return torch.cat(embeddings), torch.cat(labels), (torch.cat(targets) if targets else None)


def validation_metrics(
    model: EmbeddingModel, source: BatchSource, data: DataSplits, cfg: DictConfig, amp: bool = False
) -> Tuple[Dict[str, float], float]:
    """Scalars for the log and the monitored value (higher is better).

    Closed-set classification: accuracy (vMF: the sample-averaged prediction, seeded). Open-set
    retrieval data: Recall@1 on the class-disjoint validation classes in the method's geometry (vMF uses
    the mean directions, i.e. cosine, instead of the original's sampled majority vote: deterministic
    and the vote's limit). Regression: mean absolute error, monitored as -MAE.
    """
    head = model.head
    embeddings, labels, targets = compute_embeddings(model, source, int(cfg.eval.batch_size), amp)
    metrics: Dict[str, float] = {}
    if head.task in ("regression", "joint"):
        metrics["val/mae"] = float((head.predict_targets(embeddings) - targets).abs().mean())
    if head.task in ("classification", "joint"):
        if data.open_set:
            from vmf_embeddings.eval.retrieval import recall_at_1

            metrics["val/recall@1"] = float(
                recall_at_1(head.retrieval_embeddings(embeddings), labels, head.geometry, getattr(head, "c", None))
            )
        else:
            generator = torch.Generator(device=embeddings.device)
            generator.manual_seed(int(cfg.eval.seed))
            logits = head.logits(embeddings, n_samples=int(cfg.eval.vmf_samples), generator=generator)
            metrics["val/accuracy"] = float((logits.argmax(1) == labels).float().mean())
    if "val/accuracy" in metrics:
        return metrics, metrics["val/accuracy"]
    if "val/recall@1" in metrics:
        return metrics, metrics["val/recall@1"]
    return metrics, -metrics["val/mae"]


def calibrate_head(model: EmbeddingModel, source: BatchSource) -> None:
    """vMF's one-off pass over the augmented training split in train mode (as the original), but with
    BatchNorm running statistics restored afterwards so the pass leaves no trace (reference note 7.12)."""
    bn_state = {k: v.clone() for k, v in model.backbone.state_dict().items() if "running" in k or "num_batches" in k}
    model.train()
    with torch.no_grad():
        outputs = [model(x) for x, _, _ in source.batches(source.sequential(CALIBRATION_BATCH))]
    model.head.calibrate(outputs)
    model.backbone.load_state_dict(bn_state, strict=False)
    log.info("Set z-kappa-mult: %.6g", float(model.head.z_kappa_mult))


def train_epoch(
    model: EmbeddingModel, optimizer: torch.optim.Optimizer, batches: Iterable[Batch], amp: bool = False
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The hot loop: one optimiser step per batch, with no host-device sync.

    Returns (sum of finite losses, index of the first non-finite step or -1), both still on the device;
    the caller reads them once per epoch.
    """
    head = model.head
    loss_sum = None
    first_bad_step = None
    for step, (x, y, t) in enumerate(batches):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            embeddings = model(x)
        loss = head.loss(embeddings.float(), y, t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        detached = loss.detach()
        if loss_sum is None:
            loss_sum = torch.zeros((), device=detached.device)
            first_bad_step = torch.full((), -1, dtype=torch.long, device=detached.device)
        bad_here = (first_bad_step < 0) & ~torch.isfinite(detached)
        first_bad_step = torch.where(bad_here, torch.full_like(first_bad_step, step), first_bad_step)
        loss_sum += torch.nan_to_num(detached, nan=0.0, posinf=0.0, neginf=0.0)
    if loss_sum is None:
        return torch.zeros(()), torch.full((), -1, dtype=torch.long)
    return loss_sum, first_bad_step


def train(cfg: DictConfig, run_dir: Path) -> float:
    """Train until `mode.epochs` or early stopping; returns the best validation metric (for sweepers)."""
    run_dir = Path(run_dir)
    device = resolve_device(cfg.device)
    seed_everything(int(cfg.seed), bool(cfg.deterministic))
    resume_state = _prepare_run_dir(cfg, run_dir)
    last_path, best_path = checkpoint_paths(run_dir)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    # bf16 autocast needs no loss scaler. Both options also run on CPU (where they rarely pay off), so
    # the CPU test suite exercises the same code path a GPU run takes.
    amp = bool(cfg.amp)
    channels_last = bool(cfg.channels_last)
    if device.type == "cpu" and (amp or channels_last):
        log.warning("amp / channels_last are meant for CUDA; on CPU they usually slow training down")

    data = build_data(cfg)
    model = build_model(cfg).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    head = model.head
    workers = int(cfg.num_workers)
    train_source = BatchSource(data.train, data, device, data.train_augment, workers, channels_last, int(cfg.seed))
    val_source = BatchSource(data.val, data, device, "none", workers, channels_last)
    sampler = build_sampler(cfg, data.train.labels, int(cfg.seed))
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer)
    mode = cfg.mode

    start_epoch, best_metric, best_epoch = 0, -math.inf, -1
    if resume_state is not None:
        if resume_state.get("finished"):
            log.info("run in %s already finished (best %.4f at epoch %d)", run_dir, resume_state["best_metric"],
                     resume_state["best_epoch"])
            return float(resume_state["best_metric"])
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        sampler.load_state_dict(resume_state["sampler"])
        train_source.set_generator_state(resume_state["augment_rng"])
        set_rng_state(resume_state["rng"])
        start_epoch = int(resume_state["epoch"]) + 1
        best_metric, best_epoch = float(resume_state["best_metric"]), int(resume_state["best_epoch"])
        log.info("resuming %s at epoch %d (best %.4f at epoch %d)", run_dir, start_epoch, best_metric, best_epoch)
    elif head.needs_calibration:
        calibrate_head(model, train_source)

    steps = len(sampler) if mode.max_steps_per_epoch is None else min(len(sampler), int(mode.max_steps_per_epoch))
    tracker = Tracker(run_dir)
    finished = False
    try:
        for epoch in range(start_epoch, int(mode.epochs)):
            head.on_epoch_start(epoch)
            model.train()
            batches = islice(train_source.batches(sampler), steps)
            batches = progress(batches, steps, f"epoch {epoch}", bool(cfg.progress_bar))
            loss_sum, first_bad_step = train_epoch(model, optimizer, batches, amp)
            bad_step = int(first_bad_step)
            if bad_step >= 0:
                raise NonFiniteLossError(
                    f"loss became NaN/inf at epoch {epoch}, step {bad_step}; the last good checkpoint is kept at "
                    f"{last_path}; lower mode.learning_rate (now {mode.learning_rate}) or check the data"
                )
            scalars = {"train/loss": float(loss_sum) / max(steps, 1)}
            val_scalars, monitored = validation_metrics(model, val_source, data, cfg, amp)
            scalars.update(val_scalars)
            scalars.update({f"train/{k}": v for k, v in head.tracked_scalars().items()})
            scalars["train/lr"] = optimizer.param_groups[0]["lr"]
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(monitored)
            else:
                scheduler.step()
            improved = monitored > best_metric
            if improved:
                best_metric, best_epoch = monitored, epoch
                checkpoint.save_atomic(
                    {"model": model.state_dict(), "epoch": epoch, "metric": monitored, "scalars": scalars}, best_path
                )
            finished = epoch - best_epoch >= int(mode.patience) or epoch + 1 >= int(mode.epochs)
            checkpoint.save_atomic(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "sampler": sampler.state_dict(),
                    "augment_rng": train_source.generator_state(),
                    "rng": rng_state(),
                    "epoch": epoch,
                    "best_metric": best_metric,
                    "best_epoch": best_epoch,
                    "finished": finished,
                },
                last_path,
            )
            tracker.log(epoch, scalars)
            log.info(
                "epoch %d  %s%s",
                epoch,
                "  ".join(f"{k}={v:.4g}" for k, v in scalars.items()),
                "  (best)" if improved else "",
            )
            _after_epoch(epoch)
            if finished:
                if epoch + 1 < int(mode.epochs):
                    log.info("early stop: no improvement for %d epochs", int(mode.patience))
                break
    except KeyboardInterrupt:
        log.warning("interrupted; the last good checkpoint is %s; continue with resume=true", last_path)
        raise
    finally:
        tracker.close()
    log.info("best validation metric %.4f at epoch %d; checkpoint %s", best_metric, best_epoch, best_path)
    if finished and mode.extract_at_end:
        from vmf_embeddings.extract import extract

        extract(cfg, run_dir)
    return best_metric
