"""mode=get_embeddings: load a trained run's checkpoint and write `embeddings/<split>.npz`.

The model is rebuilt from the run's own saved `config.yaml` (not from the current overrides), so the
extraction command only has to name the run: the training command with `mode=get_embeddings` appended
works, its training-only keys are ignored. Each file holds what `vmf_embeddings.embedding.head_outputs`
computes: `embeddings` (N x D float32, the vectors retrieval searches: for vMF z = s f(x), whose norm is
kappa), `labels` (N int64), `log_probs` (N x C predictive log-probabilities of closed-set methods; vMF's
Monte-Carlo prediction drawn `eval.vmf_samples` times, seeded by `eval.seed`), `targets` / `predictions`
(regression), per-sample extras (vMF `kappa`; `projection_input` / `projection_output` for the overlap
analysis: an angular head's, or on the test split a spherization layer's z and x); plus `geometry` and its
parameters (e.g. `curvature`), `method`, `task`, `epoch`, and the state the head exports (class weights, temperature, prototypes).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Dict

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from vmf_embeddings import checkpoint
from vmf_embeddings.build import build_data, build_model
from vmf_embeddings.layers.spherization import recording_projection
from vmf_embeddings.data_source import BatchSource
from vmf_embeddings.distributed import all_gather_rows, world
from vmf_embeddings.embedding import embed_split_sharded, head_outputs
from vmf_embeddings.errors import CheckpointError
from vmf_embeddings.runtime import amp_setting, resolve_device

log = logging.getLogger(__name__)


def load_run_config(run_dir: Path) -> DictConfig:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise CheckpointError(
            f"no saved training config at {path}: train this run first (mode=train with the same overrides)"
        )
    return OmegaConf.load(path)


def extract(cfg: DictConfig, run_dir: Path) -> Dict[str, Path]:
    """Write embeddings for `mode.splits` from `mode.checkpoint` (best or last); returns the file paths."""
    run_dir = Path(run_dir)
    train_cfg = load_run_config(run_dir)
    mode = cfg.mode  # validated by vmf_embeddings.validate (checkpoint, splits, batch size)
    last_path, best_path = checkpoint.checkpoint_paths(run_dir)
    path = best_path if mode.checkpoint == "best" else last_path
    if not path.is_file():
        raise CheckpointError(
            f"no trained checkpoint at {path}: train first with mode=train and the same overrides "
            f"(or name=...), or point run_dir= at the run"
        )
    device = resolve_device(cfg.device)
    amp = amp_setting(cfg)
    # The saved config names the targets to build; only the current command's allowlist applies.
    allowed = list(cfg.get("allowed_targets") or [])
    data = build_data(train_cfg, allowed)
    model = build_model(train_cfg, allowed).to(device)
    state = checkpoint.load(path, map_location=device)
    model.load_state_dict(state["model"])
    model.eval()
    head = model.head
    workers, batch_size = int(cfg.num_workers), int(mode.batch_size)
    n_samples, seed = int(cfg.eval.vmf_samples), int(cfg.eval.seed)
    mc_on_train = bool(cfg.eval.mc_on_train)

    embedded = {}
    if head.fits_class_state or "train" in mode.splits:
        embedded["train"] = embed_split_sharded(model, BatchSource(data.train, data, device, "none", workers),
                                                batch_size, amp)
    if head.fits_class_state:
        head.fit_class_state(embedded["train"])

    meta = {
        "geometry": np.array(head.geometry),
        "method": np.array(str(train_cfg.method.name)),
        "task": np.array(head.task),
        "epoch": np.int64(state.get("epoch", -1)),
        **{key: np.float64(value) for key, value in head.geometry_params().items()},
        **head.export(),
    }
    # Under torchrun every rank embeds its share of each split (embed_split_sharded) and rank 0 writes the files.
    main_rank = world().is_main
    out_dir = run_dir / "embeddings"
    if main_rank:
        out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for split_name in mode.splits:
        split, projection = embedded.get(split_name), None
        if split is None:
            source = BatchSource(getattr(data, split_name), data, device, "none", workers)
            # test split: a spherization layer's input and output for the overlap analysis (layers.spherization.recording_projection)
            with recording_projection(model, enabled=split_name == "test") as projection:
                split = embed_split_sharded(model, source, batch_size, amp)
            if projection is not None and world().enabled and len(source) >= world().world_size:
                _gather_projection(projection, device)
        if not main_rank:
            continue        # Sampled predictions on a large training split are costly: skipped unless eval.mc_on_train.
        with_log_probs = (head.predicts_classes and not data.open_set
                          and not (split_name == "train" and head.sampled_prediction and not mc_on_train))
        outputs = head_outputs(head, split, with_log_probs, n_samples=n_samples, seed=seed)
        arrays = {key: value.detach().cpu().numpy() for key, value in outputs.items()}
        if projection is not None:  # a head's own projection arrays (angular_softmax) take precedence
            for key, value in projection.arrays().items():
                arrays.setdefault(key, value)
        original = data.extras.get("original_labels", {}).get(split_name)
        if original is not None:  # open-set data: class ids before the per-split re-indexing
            arrays["original_ids"] = np.asarray(original, dtype=np.int64)
        target = out_dir / f"{split_name}.npz"
        checkpoint.savez_atomic(target, **arrays, **meta)
        written[split_name] = target
        log.info("wrote %s (%d x %d)", target, *arrays["embeddings"].shape)
        if split_name == "test" and mode.get("projector", False):
            _write_projector(run_dir, arrays, int(mode.get("projector_max_points", 5000)))
    return written


def _gather_projection(record, device: torch.device) -> None:
    """The spherization layer's rows recorded on every rank, in split order, on every rank."""
    for name in ("inputs", "outputs"):
        rows = getattr(record, name)
        local = torch.cat(rows) if rows else torch.zeros(0)
        setattr(record, name, [all_gather_rows(local.to(device)).cpu()])


def _write_projector(run_dir: Path, arrays: Dict[str, np.ndarray], max_points: int) -> None:
    """Test embeddings (first `max_points`) into TensorBoard's embedding projector, labelled by class."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard is not installed: skipping the embedding projector")
        return
    log_dir = run_dir / "tensorboard" / "projector"
    shutil.rmtree(log_dir, ignore_errors=True)  # a re-extraction replaces the projector data, not appends to it
    writer = SummaryWriter(log_dir=str(log_dir))
    count = min(max_points, arrays["embeddings"].shape[0])
    writer.add_embedding(
        torch.from_numpy(arrays["embeddings"][:count]),
        metadata=[int(v) for v in arrays["labels"][:count]],
        tag="test_embeddings",
    )
    writer.close()
