"""mode=train for `task: detection`: the sibling of `vmf_embeddings.train` for detectors.

Same lifecycle as every run (`vmf_embeddings.resume`: run lock, staged overwrite, records; `checkpoint`: atomic
last.pt / best.pt, bit-for-bit resume, also inside an epoch; SIGINT / SIGTERM save last.pt and stop), with detection
batches (`detection/data.py`) and validation mAP@0.5 as the monitored metric. Base training sees the base classes
only when the dataset marks novel classes for few-shot episodes.
"""

from __future__ import annotations

import copy
import logging
from itertools import islice
from pathlib import Path
from typing import Iterable

import torch
from omegaconf import DictConfig

from vmf_embeddings import checkpoint
from vmf_embeddings.build import step_scheduler
from vmf_embeddings.checkpoint import Progress
from vmf_embeddings.detection.data import (
    DetectionBatches,
    ImageBatchSampler,
    base_training_data,
    build_detection_data,
)
from vmf_embeddings.detection.infer import split_map
from vmf_embeddings.detection.model import build_detector
from vmf_embeddings.errors import ConfigError, NonFiniteLossError
from vmf_embeddings.resume import launched, promote, write_records
from vmf_embeddings.runtime import resolve_device, seed_everything
from vmf_embeddings.tracking import Tracker, progress

log = logging.getLogger(__name__)


def detection_optimizer(cfg: DictConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The `optimizer` group over two groups: weights decayed, biases and normalisation parameters not."""
    from vmf_embeddings.build import _instantiate_option

    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim > 1 and not name.endswith("bias") else no_decay).append(parameter)
    factory = _instantiate_option(cfg.optimizer, _convert_="all")
    return factory([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}])


def batch_size(cfg: DictConfig) -> int:
    size = cfg.sampler.get("batch_size")
    if size is None:
        raise ConfigError(f"detection trains on image batches: use sampler=random (sampler.batch_size), not "
                          f"sampler={cfg.sampler.get('name')}")
    return int(size)


def train_detection(cfg: DictConfig, run_dir: Path, overrides: Iterable[str] = ()) -> Progress:
    return launched(cfg, run_dir, lambda launch: _train(cfg, launch, overrides))


def _train(cfg: DictConfig, launch, overrides) -> Progress:
    from vmf_embeddings.train import Interrupted, SkipFirst, StopRequest, _after_epoch

    seed_everything(int(cfg.seed), bool(cfg.deterministic))
    device = resolve_device(cfg.device)
    data = base_training_data(build_detection_data(cfg))
    model = build_detector(cfg, data.n_classes).to(device)
    optimizer = detection_optimizer(cfg, model)
    from vmf_embeddings.build import build_scheduler

    scheduler = build_scheduler(cfg, optimizer)
    sampler = ImageBatchSampler(len(data.train), batch_size(cfg), int(cfg.seed))
    source = DetectionBatches(data.train, device, flip=bool(cfg.method.detector.get("flip", True)), seed=int(cfg.seed))
    write_records(cfg, launch, overrides)
    progress_ = Progress()
    if launch.resume_state is not None:
        progress_ = checkpoint.restore_training_state(launch.resume_state, model, optimizer, scheduler, sampler,
                                                      source.set_generator_state)
    if progress_.finished:
        log.info("run in %s already finished (best %.4f at epoch %d)", launch.run_dir, progress_.best_metric,
                 progress_.best_epoch)
        return progress_
    mode = cfg.mode
    cap = mode.max_steps_per_epoch
    steps_per_epoch = len(sampler) if cap is None else min(len(sampler), int(cap))
    clip = float(cfg.method.detector.get("clip_grad_norm") or 0.0)
    inference_batch = int(cfg.method.detector.get("inference_batch", 4))
    tracker, stop = Tracker(launch.work_dir), StopRequest().install()
    work_dir = launch.work_dir
    try:
        for epoch in range(progress_.epoch, int(mode.epochs)):
            sampler_at_start = copy.deepcopy(sampler.state_dict())
            skip = progress_.epoch_step
            model.train()
            index_batches = SkipFirst(sampler, skip) if skip else sampler
            batches = islice(source.batches(index_batches), steps_per_epoch - skip)
            loss_sum = torch.zeros((), device=device)
            finite = torch.ones((), dtype=torch.bool, device=device)
            taken = 0
            for images, targets in progress(batches, steps_per_epoch - skip, f"epoch {epoch}", bool(cfg.progress_bar)):
                losses = model(images, targets)
                loss = sum(losses.values())
                finite &= torch.isfinite(loss)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if clip:  # from-scratch detectors diverge on the occasional huge RPN gradient
                    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
                optimizer.step()
                loss_sum += loss.detach()
                taken += 1
                if stop:
                    break
            if not bool(finite):  # the epoch's one host-device sync
                raise NonFiniteLossError(
                    f"detection loss became NaN/inf in epoch {epoch}; the last good checkpoint is kept at "
                    f"{checkpoint.checkpoint_paths(work_dir)[0]}; lower mode.learning_rate or check the boxes")
            progress_.step += taken
            epoch_loss = progress_.epoch_loss + float(loss_sum)
            if stop and skip + taken < steps_per_epoch:
                progress_.epoch_step, progress_.epoch_loss = skip + taken, epoch_loss
                checkpoint.save_atomic(checkpoint.training_state(model, optimizer, scheduler, sampler_at_start,
                                                                 source.generator_state(), progress_),
                                       checkpoint.checkpoint_paths(work_dir)[0])
                raise Interrupted(f"interrupted at epoch {epoch}, step {progress_.epoch_step}; saved "
                                  f"{checkpoint.checkpoint_paths(work_dir)[0]}; continue with the same command and "
                                  f"resume=true", stop.signal)
            progress_.epoch_step, progress_.epoch_loss = 0, 0.0
            val = split_map(model, data.val, device, data.class_names, inference_batch)
            monitored = float(val["map50"]) if val["map50"] == val["map50"] else 0.0
            scalars = {"train/loss": epoch_loss / max(steps_per_epoch, 1), "val/map50": monitored,
                       "train/lr": optimizer.param_groups[0]["lr"]}
            step_scheduler(scheduler, monitored)
            improved = progress_.close_epoch(epoch, monitored, mode.patience, mode.epochs)
            if improved:
                checkpoint.save_best(model, epoch, monitored, scalars, work_dir)
            checkpoint.save_atomic(checkpoint.training_state(model, optimizer, scheduler, sampler.state_dict(),
                                                             source.generator_state(), progress_),
                                   checkpoint.checkpoint_paths(work_dir)[0])
            if launch.staged:
                tracker.close()
                promote(launch)
                work_dir = launch.run_dir
                tracker = Tracker(launch.run_dir)
            tracker.log(epoch, scalars)
            log.info("epoch %d  %s%s", epoch, "  ".join(f"{k}={v:.4g}" for k, v in scalars.items()),
                     "  (best)" if improved else "")
            _after_epoch(epoch)
            if stop:
                raise Interrupted(f"interrupted at the end of epoch {epoch}; saved "
                                  f"{checkpoint.checkpoint_paths(work_dir)[0]}; continue with resume=true", stop.signal)
            if progress_.finished:
                break
    finally:
        stop.uninstall()
        tracker.close()
    return progress_
