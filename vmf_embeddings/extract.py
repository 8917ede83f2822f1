"""mode=get_embeddings: load a trained run's checkpoint and write `embeddings/<split>.npz`.

The model is rebuilt from the run's own saved `config.yaml` (not from the current overrides), so the
extraction command only has to name the run. Each file holds `embeddings` (N x D float32, the vectors
retrieval searches: for vMF z = s f(x), whose norm is kappa), `labels` (N int64), `geometry`, `method`,
`logits` (closed-set deterministic methods), `targets`/`predictions` (regression), per-sample extras
(vMF `kappa`) and the method state evaluation needs (class weights, temperature, curvature, prototypes).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from vmf_embeddings import checkpoint
from vmf_embeddings.build import build_data, build_model
from vmf_embeddings.data_source import BatchSource
from vmf_embeddings.errors import CheckpointError
from vmf_embeddings.runtime import resolve_device
from vmf_embeddings.train import checkpoint_paths

log = logging.getLogger(__name__)

GET_EMBEDDINGS_DEFAULTS = Path(__file__).resolve().parents[1] / "conf" / "mode" / "get_embeddings.yaml"


def load_run_config(run_dir: Path) -> DictConfig:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise CheckpointError(
            f"no saved training config at {path}: train this run first (mode=train with the same overrides)"
        )
    return OmegaConf.load(path)


@torch.no_grad()
def split_arrays(model, source: BatchSource, batch_size: int, with_logits: bool) -> Dict[str, np.ndarray]:
    head = model.head
    model.eval()
    columns: Dict[str, List[torch.Tensor]] = {}

    def add(key: str, value: torch.Tensor) -> None:
        columns.setdefault(key, []).append(value.detach().cpu())

    for x, y, t in source.batches(source.sequential(batch_size)):
        features = model(x).float()
        add("embeddings", head.retrieval_embeddings(features).float())
        add("labels", y.long())
        if with_logits:
            add("logits", head.logits(features).float())
        if t is not None:
            add("targets", t.float())
        if head.task in ("regression", "joint"):
            add("predictions", head.predict_targets(features).float())
        for key, value in head.export_batch(features).items():
            add(key, value.float())
    return {key: torch.cat(values).numpy() for key, values in columns.items()}


def extract(cfg: DictConfig, run_dir: Path) -> Dict[str, Path]:
    """Write embeddings for `mode.splits` from `mode.checkpoint` (best or last); returns the file paths."""
    run_dir = Path(run_dir)
    train_cfg = load_run_config(run_dir)
    # Called from training (mode.extract_at_end): use the get_embeddings mode's own defaults.
    get_cfg = cfg.mode if cfg.mode.name == "get_embeddings" else OmegaConf.load(GET_EMBEDDINGS_DEFAULTS)
    last_path, best_path = checkpoint_paths(run_dir)
    path = best_path if get_cfg.checkpoint == "best" else last_path
    if not path.is_file():
        raise CheckpointError(
            f"no trained checkpoint at {path}: train first with mode=train and the same overrides "
            f"(or name=...), or point run_dir= at the run"
        )
    device = resolve_device(cfg.device)
    data = build_data(train_cfg)
    model = build_model(train_cfg).to(device)
    state = checkpoint.load(path, map_location=device)
    model.load_state_dict(state["model"])
    head = model.head
    # vMF predictions are Monte-Carlo: evaluation draws them (seeded) from the exported state instead.
    with_logits = head.task in ("classification", "joint") and head.geometry != "vmf" and not data.open_set
    meta = {
        "geometry": np.array(head.geometry),
        "method": np.array(str(train_cfg.method.name)),
        "task": np.array(head.task),
        "epoch": np.int64(state.get("epoch", -1)),
        **head.export(),
    }
    out_dir = run_dir / "embeddings"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for split_name in get_cfg.splits:
        split = getattr(data, split_name, None)
        if split is None:
            raise CheckpointError(f"mode.splits names {split_name!r}; choose from train, val, test")
        source = BatchSource(split, data, device, "none", int(cfg.num_workers))
        arrays = split_arrays(model, source, int(get_cfg.batch_size), with_logits)
        arrays["labels"] = arrays["labels"].astype(np.int64)
        original = data.extras.get("original_labels", {}).get(split_name)
        if original is not None:  # open-set data: class ids before the per-split re-indexing
            arrays["original_ids"] = np.asarray(original, dtype=np.int64)
        target = out_dir / f"{split_name}.npz"
        checkpoint.savez_atomic(target, **arrays, **meta)
        written[split_name] = target
        log.info("wrote %s (%d x %d)", target, *arrays["embeddings"].shape)
        if split_name == "test" and get_cfg.get("projector", False):
            _write_projector(run_dir, arrays, int(get_cfg.get("projector_max_points", 5000)))
    return written


def _write_projector(run_dir: Path, arrays: Dict[str, np.ndarray], max_points: int) -> None:
    """Test embeddings (first `max_points`) into TensorBoard's embedding projector, labelled by class."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard is not installed: skipping the embedding projector")
        return
    writer = SummaryWriter(log_dir=str(run_dir / "tensorboard" / "projector"))
    count = min(max_points, arrays["embeddings"].shape[0])
    writer.add_embedding(
        torch.from_numpy(arrays["embeddings"][:count]),
        metadata=[int(v) for v in arrays["labels"][:count]],
        tag="test_embeddings",
    )
    writer.close()
