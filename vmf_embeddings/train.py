"""mode=train: the epoch loop with validation, LR schedule, early stopping and atomic checkpoints.

Checkpoints: `checkpoints/last.pt` after every epoch (everything needed to resume bit-for-bit: weights,
optimizer, scheduler, epoch, step, best metric, RNG and sampler states) and `checkpoints/best.pt` on
strict improvement of the validation metric. Both are written atomically, so a crash or Ctrl-C leaves
the last good pair; `resume=true` continues from `last.pt` in the same run dir.

The loop never looks at method names: a head's data-dependent state goes through the hooks of
`vmf_embeddings.methods.base.Method`.
"""

from __future__ import annotations

import copy
import logging
import math
import signal
import threading
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple, Union

import numpy as np
import torch
from omegaconf import DictConfig

from vmf_embeddings import checkpoint
from vmf_embeddings.checkpoint import Progress
from vmf_embeddings.build import (
    EmbeddingModel,
    build_data,
    build_model,
    build_optimizer,
    build_sampler,
    build_scheduler,
    step_scheduler,
)
from vmf_embeddings.costs import build_cost
from vmf_embeddings.data_source import Batch, BatchSource
from vmf_embeddings.datasets.base import DataSplits
from vmf_embeddings import distributed
from vmf_embeddings.embedding import EmbeddedSplit, TrainContext, embed_split_sharded, head_outputs
from vmf_embeddings.errors import ConfigError, NonFiniteLossError, UserError
from vmf_embeddings.resume import Launch, launched, promote, write_records
from vmf_embeddings.runtime import CompileFallback, amp_setting, autocast_dtype, resolve_device, seed_everything
from vmf_embeddings.tracking import Tracker, progress

log = logging.getLogger(__name__)

#: batch size of the passes over the training split that hooks ask for (vMF calibration, class means)
HOOK_BATCH = 256


def _after_epoch(epoch: int) -> None:
    """Hook called after each epoch's checkpoint is on disk (tests simulate a kill here)."""


@dataclass
class Run:
    """Everything one training run is made of, built once from the config."""

    cfg: DictConfig
    run_dir: Path
    device: torch.device
    data: DataSplits
    model: EmbeddingModel
    optimizer: torch.optim.Optimizer
    scheduler: object
    sampler: object
    train_source: BatchSource  # augmented, for the optimiser steps
    plain_train_source: BatchSource  # no augmentation, for class state fitted from training data
    val_source: BatchSource
    amp: Union[bool, torch.dtype]  # False or the autocast dtype (runtime.amp_setting)
    steps_per_epoch: int
    train_step: torch.nn.Module  # TrainStep(model), wrapped in DistributedDataParallel under torchrun
    scaler: "torch.amp.GradScaler"  # enabled for amp_dtype=float16 only (bf16 needs no loss scaling)


class TrainStep(torch.nn.Module):
    """One batch's loss: backbone (under autocast when `amp`) and head. Backbone and head are one module so
    that DistributedDataParallel sees every parameter that gets a gradient in its forward."""

    def __init__(self, model: EmbeddingModel, amp: Union[bool, torch.dtype] = False, compile: bool = False) -> None:
        super().__init__()
        self.model, self.amp = model, amp
        # compile=true: the model's forward through torch.compile, outside the state dict (runtime.CompileFallback)
        self._forward = CompileFallback(model) if compile else model

    def forward(self, x: torch.Tensor, y: torch.Tensor, t: Optional[torch.Tensor]) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=autocast_dtype(self.amp), enabled=bool(self.amp)):
            embeddings = self._forward(x)
        return self.model.head.loss(embeddings.float(), y, t)


def wrap_distributed(cfg: DictConfig, model: EmbeddingModel, device: torch.device,
                     amp: Union[bool, torch.dtype]) -> torch.nn.Module:
    """TrainStep(model), under torchrun in DistributedDataParallel (gradients averaged over ranks; buffers
    broadcast from rank 0 at each forward); `distributed.sync_bn=true` first turns BatchNorm into SyncBatchNorm."""
    step = TrainStep(model, amp, compile=bool(cfg.get("compile", False)))
    if not distributed.world().enabled:
        return step
    options = cfg.get("distributed") or {}
    if options.get("sync_bn", False):
        if device.type != "cuda":
            raise ConfigError("distributed.sync_bn=true needs CUDA (torch's SyncBatchNorm has no CPU kernel); "
                              "drop it on CPU")
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # replaces the BatchNorm modules in place
    if getattr(model.head, "steers_sampler", False):
        raise ConfigError(f"method={cfg.method.name} steers the batch sampler from each rank's own batch losses, "
                          f"which torchrun ranks cannot share; run it in one process")
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return DistributedDataParallel(step, device_ids=ids,
                                   find_unused_parameters=bool(options.get("find_unused_parameters", False)))


# -- building ---------------------------------------------------------------------------------------

def build_run(cfg: DictConfig, run_dir: Path) -> Run:
    device = resolve_device(cfg.device)
    # bf16 autocast needs no loss scaler. Both options also run on CPU (where they rarely pay off), so
    # the CPU test suite exercises the same code path a GPU run takes.
    amp, channels_last = amp_setting(cfg), bool(cfg.channels_last)
    if device.type == "cpu" and (amp or channels_last):
        log.warning("amp / channels_last are meant for CUDA; on CPU they usually slow training down")
    data = build_data(cfg)
    model = build_model(cfg).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    workers, seed = int(cfg.num_workers), int(cfg.seed)
    info = distributed.world()
    # each rank draws its own augmentation; rank 0's generator is the one checkpoints keep
    train_source = BatchSource(data.train, data, device, data.train_augment, workers, channels_last,
                               seed + 7919 * info.rank)
    plain_train_source = BatchSource(data.train, data, device, "none", workers, channels_last)
    val_source = BatchSource(data.val, data, device, "none", workers, channels_last)
    n_train_classes = int(torch.unique(data.train.labels).numel())
    if int(cfg.sampler.get("n_classes", 1)) > n_train_classes:
        raise ConfigError(f"sampler.n_classes={cfg.sampler.n_classes} but the training split of {cfg.dataset.name} "
                          f"has {n_train_classes} classes; set sampler.n_classes <= {n_train_classes}")
    sampler = build_sampler(cfg, data.train.labels, seed, **(
        {"rank": info.rank, "world_size": info.world_size} if info.enabled else {}))
    if getattr(model.head, "episodic", False) and not hasattr(sampler, "episode_layout"):
        raise ConfigError(f"method={cfg.method.name} trains on few-shot episodes: use sampler=fewshot "
                          f"(not sampler={cfg.sampler.get('name', '?')})")
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer)
    cap = cfg.mode.max_steps_per_epoch
    steps = len(sampler) if cap is None else min(len(sampler), int(cap))
    train_step = wrap_distributed(cfg, model, device, amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    return Run(cfg, Path(run_dir), device, data, model, optimizer, scheduler, sampler, train_source,
               plain_train_source, val_source, amp, steps, train_step, scaler)


def restore(run: Run, state: dict) -> Progress:
    """Load a checkpoint into the run's components; returns where to continue.

    A best.pt (resume_from=best) holds weights only: the optimiser, schedule and sampler start afresh
    after its epoch.
    """
    if "optimizer" not in state:
        run.model.load_state_dict(state["model"])
        epoch = int(state.get("epoch", -1))
        return Progress(epoch=epoch + 1, best_metric=float(state.get("metric", -math.inf)), best_epoch=epoch)
    if state.get("grad_scaler") and run.scaler.is_enabled():
        run.scaler.load_state_dict(state["grad_scaler"])
    return checkpoint.restore_training_state(state, run.model, run.optimizer, run.scheduler, run.sampler,
                                             run.train_source.set_generator_state)


#: scheduler state keys that track progress (kept on resume); every other key comes from the new config
SCHEDULER_PROGRESS_KEYS = {"last_epoch", "_step_count", "_last_lr", "best", "num_bad_epochs", "cooldown_counter",
                           "_get_lr_called_within_step", "_is_initial"}


def apply_new_settings(run: Run, fresh_groups: list, fresh_scheduler: dict) -> None:
    """A resume with changed optimiser or schedule settings: the restored optimiser and scheduler take
    the new hyper-parameters (learning rates, momentum, weight decay, milestones...), keeping their
    progress (momentum buffers, step counts, plateau counters)."""
    for group, fresh in zip(run.optimizer.param_groups, fresh_groups):
        group.update({k: v for k, v in fresh.items() if k != "params"})
    state = run.scheduler.state_dict()
    state.update({k: v for k, v in fresh_scheduler.items() if k not in SCHEDULER_PROGRESS_KEYS})
    run.scheduler.load_state_dict(state)


def save_last(run: Run, progress_: Progress, sampler_state: dict) -> None:
    if not distributed.world().is_main:
        return
    state = checkpoint.training_state(run.model, run.optimizer, run.scheduler, sampler_state,
                                      run.train_source.generator_state(), progress_)
    if run.scaler.is_enabled():  # the fp16 loss scale and its growth counter, for a bit-for-bit resume
        state["grad_scaler"] = run.scaler.state_dict()
    checkpoint.save_atomic(state, checkpoint.checkpoint_paths(run.run_dir)[0])


class StopRequest:
    """SIGTERM / SIGINT set a flag the hot loop reads after each step (a plain bool: no sync)."""

    def __init__(self) -> None:
        self.signal: Optional[int] = None
        self._previous: dict = {}

    def __bool__(self) -> bool:
        return self.signal is not None

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.signal = signum

    def install(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


class SkipFirst:
    """A batch sampler without its first `skip` batches (continuing an interrupted epoch)."""

    def __init__(self, sampler, skip: int) -> None:
        self.sampler, self.skip = sampler, int(skip)

    def __iter__(self):
        return islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return max(len(self.sampler) - self.skip, 0)


# -- one epoch --------------------------------------------------------------------------------------

def train_epoch(
    model: EmbeddingModel,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[Batch],
    amp: bool = False,
    first_step: int = 0,
    stop: Optional[StopRequest] = None,
    train_step: Optional[torch.nn.Module] = None,
    scaler: Optional["torch.amp.GradScaler"] = None,
) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """The hot loop: one optimiser step per batch, with no host-device sync.

    `train_step` computes a batch's loss (default `TrainStep(model, amp)`; under torchrun its
    DistributedDataParallel wrapper, whose backward averages the gradients over the ranks). `scaler`: the
    GradScaler of amp_dtype=float16 (it skips a step whose gradients overflowed and adapts the loss scale).

    Returns (sum of finite losses, index of the first non-finite step or -1, steps taken); the first two
    are still on the device and the caller reads them once per epoch. A stop request ends the loop
    after the current step.
    """
    head = model.head
    train_step = train_step if train_step is not None else TrainStep(model, amp)
    loss_sum = None
    first_bad_step = None
    taken = 0
    for step, (x, y, t) in enumerate(batches):
        loss = train_step(x, y, t)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None and scaler.is_enabled():
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        head.after_step(first_step + step)
        detached = loss.detach()
        if loss_sum is None:
            loss_sum = torch.zeros((), device=detached.device)
            first_bad_step = torch.full((), -1, dtype=torch.long, device=detached.device)
        bad_here = (first_bad_step < 0) & ~torch.isfinite(detached)
        first_bad_step = torch.where(bad_here, torch.full_like(first_bad_step, step), first_bad_step)
        loss_sum += torch.nan_to_num(detached, nan=0.0, posinf=0.0, neginf=0.0)
        taken = step + 1
        if stop:
            break
    if loss_sum is None:
        return torch.zeros(()), torch.full((), -1, dtype=torch.long), 0
    return loss_sum, first_bad_step, taken


def few_shot_specs(node) -> list:
    """eval.few_shot as a list of plain dicts (it may be one mapping or a list of them)."""
    if not node:
        return []
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(node, resolve=True) if not isinstance(node, (dict, list)) else node
    return [dict(s) for s in (plain if isinstance(plain, list) else [plain])]


def fit_class_state(model: EmbeddingModel, plain_train: BatchSource, amp: bool = False) -> None:
    """Give a head that predicts from training-data state (class means, ...) the embedded training split."""
    if model.head.fits_class_state:
        model.head.fit_class_state(embed_split_sharded(model, plain_train, HOOK_BATCH, amp))


def validation_metrics(
    model: EmbeddingModel, val: EmbeddedSplit, open_set: bool, cfg: DictConfig
) -> Tuple[Dict[str, float], float]:
    """Scalars for the log and the monitored value (higher is better).

    Closed-set classification: accuracy of the head's predictive distribution (sampled methods draw
    `eval.vmf_samples` times, seeded). Open-set data: Recall@1 on the class-disjoint validation classes
    in the head's geometry (vMF: on the mean directions, deterministic; the sampled majority vote is an
    evaluation metric). Regression: mean absolute error, monitored as -MAE.
    """
    head = model.head
    metrics: Dict[str, float] = {}
    outputs = head_outputs(head, val, with_log_probs=head.predicts_classes and not open_set,
                           n_samples=int(cfg.eval.vmf_samples), seed=int(cfg.eval.seed))
    spec = few_shot_specs(cfg.eval.get("few_shot"))[:1]
    if spec and head.predicts_classes:  # few-shot runs monitor test-way episodes on the validation classes
        from vmf_embeddings.eval.fewshot import few_shot_accuracy, spec_tag

        options = {k: v for k, v in spec[0].items() if k not in ("n_episodes", "seed")}
        result = few_shot_accuracy(outputs["embeddings"], val.labels, geometry=head.geometry,
                                   params=head.geometry_params(), n_episodes=int(cfg.eval.val_episodes),
                                   seed=int(cfg.eval.seed), **options)
        key = f"val/fewshot_{spec_tag(spec[0])}"
        metrics[key] = float(result["accuracy"])
        return metrics, metrics[key]
    if "predictions" in outputs and val.targets is not None:
        metrics["val/mae"] = float((outputs["predictions"] - val.targets).abs().mean())
    if "log_probs" in outputs:
        metrics["val/accuracy"] = float((outputs["log_probs"].argmax(1) == val.labels).float().mean())
    elif head.predicts_classes and open_set:
        from vmf_embeddings.eval.retrieval import recall_at_1

        metrics["val/recall@1"] = float(recall_at_1(outputs["embeddings"], val.labels, head.geometry,
                                                    params=head.geometry_params()))
    for key in ("val/accuracy", "val/recall@1"):
        if key in metrics:
            return metrics, metrics[key]
    return metrics, -metrics["val/mae"]


class Interrupted(UserError):
    """Training stopped on SIGTERM / SIGINT after saving last.pt; `exit_code` is 128 + the signal number."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signum)


def run_epoch(run: Run, epoch: int, progress_: Progress, stop: StopRequest) -> Optional[Tuple[Dict[str, float], float]]:
    """Train one epoch (or what is left of an interrupted one), validate; returns the epoch's scalars and the
    monitored validation value, or None when a stop request ended the epoch early (last.pt then holds the
    partial epoch)."""
    model, head, cfg = run.model, run.model.head, run.cfg
    sampler_at_start = copy.deepcopy(run.sampler.state_dict())
    skip = progress_.epoch_step
    head.on_epoch_start(epoch)
    model.train()
    remaining = run.steps_per_epoch - skip
    index_batches = SkipFirst(run.sampler, skip) if skip else run.sampler
    batches = islice(run.train_source.batches(index_batches), remaining)
    info = distributed.world()
    batches = progress(batches, remaining, f"epoch {epoch}", bool(cfg.progress_bar) and info.is_main)
    try:
        loss_sum, first_bad_step, taken = train_epoch(model, run.optimizer, batches, run.amp, progress_.step, stop,
                                                      run.train_step, run.scaler)
    except RuntimeError as error:
        if "find_unused_parameters" in str(error):  # DDP: some parameter got no gradient in a step
            raise ConfigError(f"method={cfg.method.name} leaves some parameters without a gradient in a step, which "
                              f"DistributedDataParallel must be told of: add distributed.find_unused_parameters=true"
                              ) from None
        raise
    if info.enabled:  # every rank learns of a non-finite loss on any rank; the loss is the global batch's mean
        bad = (first_bad_step >= 0).to(loss_sum.dtype)
        loss_sum, bad_anywhere = (distributed.all_reduce_sum(torch.stack([loss_sum, bad])) / info.world_size).unbind()
        if float(bad_anywhere) > 0 and int(first_bad_step) < 0:
            first_bad_step = torch.zeros_like(first_bad_step)  # reported below as the epoch's first step
    bad_step = int(first_bad_step)  # the epoch's one host-device sync
    if bad_step >= 0:
        last_path = checkpoint.checkpoint_paths(run.run_dir)[0]
        lr = run.optimizer.param_groups[0]["lr"]
        where = f"step {skip + bad_step}" if info.world_size == 1 else "this epoch (on some rank)"
        raise NonFiniteLossError(
            f"loss became NaN/inf at epoch {epoch}, {where}; the last good checkpoint is kept at "
            f"{last_path}; lower mode.learning_rate (the optimiser's is now {lr:g}) or check the data"
        )
    progress_.step += taken
    epoch_loss = progress_.epoch_loss + float(loss_sum)
    if stop and skip + taken < run.steps_per_epoch:
        progress_.epoch_step, progress_.epoch_loss = skip + taken, epoch_loss
        save_last(run, progress_, sampler_at_start)
        return None
    progress_.epoch_step, progress_.epoch_loss = 0, 0.0
    head.on_epoch_end(epoch)
    fit_class_state(model, run.plain_train_source, run.amp)
    val = embed_split_sharded(model, run.val_source, int(cfg.eval.batch_size), run.amp)
    # computed on the gathered split; rank 0's numbers are the ones every rank acts on
    val_scalars, monitored = distributed.broadcast_object(validation_metrics(model, val, run.data.open_set, cfg))
    scalars = {"train/loss": epoch_loss / max(run.steps_per_epoch, 1), **val_scalars}
    scalars.update({f"train/{k}": v for k, v in head.tracked_scalars().items()})
    scalars.update(spherization_scalars(model))
    scalars["train/lr"] = run.optimizer.param_groups[0]["lr"]
    step_scheduler(run.scheduler, monitored)
    return scalars, monitored


# -- the whole run ----------------------------------------------------------------------------------

def train(cfg: DictConfig, run_dir: Path, overrides: Iterable[str] = ()) -> Progress:
    """Train until `mode.epochs` or early stopping; returns where the run ended (best validation metric,
    whether it finished). `vmf_embeddings.main` then extracts and evaluates a finished run.

    Nothing is written into the run dir before the launch is accepted (vmf_embeddings.resume). SIGTERM
    and SIGINT finish the current step, save last.pt and raise `Interrupted`.
    """
    if distributed.world().is_main:
        return launched(cfg, run_dir, lambda launch: _train(cfg, _shared_launch(launch), overrides))
    return _train(cfg, _shared_launch(None), overrides)


def _shared_launch(launch: Optional[Launch]) -> Launch:
    """Under torchrun rank 0 alone checks, locks and prepares the run dir; the other ranks receive its
    decision (and the checkpoint to resume from). A refused launch ends rank 0 with its one-line error, and
    torchrun then stops the others."""
    return distributed.broadcast_object(launch) if distributed.world().enabled else launch


class _NoTracker:
    """What ranks other than 0 log: nothing."""

    def log(self, epoch: int, scalars: Dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


def _train(cfg: DictConfig, launch: Launch, overrides: Iterable[str]) -> Progress:
    seed_everything(int(cfg.seed), bool(cfg.deterministic))
    run = build_run(cfg, launch.work_dir)
    info = distributed.world()
    if info.rank > 0:  # DDP gave every rank rank 0's weights; from here each rank draws its own noise (vMF samples,
        torch.manual_seed(int(cfg.seed) + 7919 * info.rank)  # dropout), rank 0 the one-process stream
    fresh_groups = [dict(g) for g in run.optimizer.param_groups]
    fresh_scheduler = run.scheduler.state_dict()
    cost = build_cost(cfg)  # validated before anything is written
    main_rank = distributed.world().is_main
    if main_rank:
        write_records(cfg, launch, overrides)
    if cost is not None and main_rank:
        checkpoint.atomic_write(launch.work_dir / "cost_matrix.npy", lambda f: np.save(f, cost))
    resumed = launch.resume_state is not None
    progress_ = restore(run, launch.resume_state) if resumed else Progress()
    if resumed and launch.changes:
        apply_new_settings(run, fresh_groups, fresh_scheduler)
        log.info("resume applies %s", ", ".join(f"{k}: {o} -> {n}" for k, (o, n) in launch.changes.items()))
    mode = cfg.mode
    if progress_.finished and progress_.epoch < int(mode.epochs) and (
            progress_.epoch - 1 - progress_.best_epoch < int(mode.patience)):
        log.info("extending the finished run in %s to mode.epochs=%d", launch.run_dir, int(mode.epochs))
        progress_.finished = False
    if progress_.finished:
        log.info("run in %s already finished (best %.4f at epoch %d)", launch.run_dir, progress_.best_metric,
                 progress_.best_epoch)
        return progress_
    if resumed:
        log.info("resuming %s at epoch %d%s (best %.4f at epoch %d)", launch.run_dir, progress_.epoch,
                 f", step {progress_.epoch_step}" if progress_.epoch_step else "", progress_.best_metric,
                 progress_.best_epoch)
    context = TrainContext(run.model, run.train_source, run.plain_train_source, HOOK_BATCH, run.amp, run.sampler, cost)
    run.model.head.on_train_start(context, resumed=resumed)

    tracker = Tracker(launch.work_dir) if main_rank else _NoTracker()
    # Under torchrun a signal ends every rank at once (the last end-of-epoch last.pt is kept): a deferred stop
    # would leave the other ranks waiting in a collective.
    stop = StopRequest() if distributed.world().enabled else StopRequest().install()
    try:
        for epoch in range(progress_.epoch, int(mode.epochs)):
            result = run_epoch(run, epoch, progress_, stop)
            if result is None:
                _stopped(stop, run, progress_, launch, epoch)
            scalars, monitored = result
            improved = progress_.close_epoch(epoch, monitored, mode.patience, mode.epochs)
            if improved and main_rank:
                checkpoint.save_best(run.model, epoch, monitored, scalars, run.run_dir)
            save_last(run, progress_, run.sampler.state_dict())
            if launch.staged and main_rank:  # the new run has its first checkpoint: it replaces the old one now
                tracker.close()
                promote(launch)
                run.run_dir = launch.run_dir
                tracker = Tracker(launch.run_dir)
            tracker.log(epoch, scalars)
            log.info("epoch %d  %s%s", epoch, "  ".join(f"{k}={v:.4g}" for k, v in scalars.items()),
                     "  (best)" if improved else "")
            _after_epoch(epoch)
            if stop:
                _stopped(stop, run, progress_, launch, epoch + 1)
            if progress_.finished:
                if epoch + 1 < int(mode.epochs):
                    log.info("early stop: no improvement for %d epochs", int(mode.patience))
                break
    finally:
        stop.uninstall()
        tracker.close()
    log.info("best validation metric %.4f at epoch %d; checkpoint %s", progress_.best_metric,
             progress_.best_epoch, checkpoint.checkpoint_paths(launch.run_dir)[1])
    return progress_


def _stopped(stop: StopRequest, run: Run, progress_: Progress, launch: Launch, epoch: int) -> None:
    name = signal.Signals(stop.signal).name
    where = f"epoch {epoch}, step {progress_.epoch_step}" if progress_.epoch_step else f"the end of epoch {epoch - 1}"
    if launch.staged:
        raise Interrupted(f"interrupted by {name} before the new run's first checkpoint; the old run in "
                          f"{launch.run_dir} is untouched; start again with overwrite=true", stop.signal)
    raise Interrupted(
        f"interrupted by {name} at {where}; saved {checkpoint.checkpoint_paths(run.run_dir)[0]}; continue with "
        f"the same command and resume=true", stop.signal
    )


def spherization_scalars(model: torch.nn.Module) -> Dict[str, float]:
    """Per spherization layer: its scaling s, radius r and the fraction of training angles that saturated this
    epoch (a sigmoid at 0 or 1: a dead unit). One host sync per epoch."""
    from vmf_embeddings.layers.spherization import spherization_modules

    layers = spherization_modules(model)
    out: Dict[str, float] = {}
    for index, layer in enumerate(layers):
        prefix = "train/spherization" + (str(index) if len(layers) > 1 else "")
        out[f"{prefix}/scaling"] = float(layer.scaling.detach())
        out[f"{prefix}/radius"] = float(layer.radius.detach())
        out[f"{prefix}/saturated_fraction"] = layer.take_saturated_fraction()
    return out

