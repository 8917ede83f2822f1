"""Embedding a whole split: the one loop validation, extraction and the heads' data hooks share.

`embed_split` runs the backbone over a split in order (same autocast as training) and returns the
features f(x) with labels and targets, on the device. `head_outputs` turns them into everything the
head predicts (retrieval vectors, log-probabilities, regression predictions, per-sample extras), so
validation during training and `mode=get_embeddings` compute the same quantities the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch
from torch import nn

from vmf_embeddings.data_source import BatchSource
from vmf_embeddings.runtime import autocast_dtype


@dataclass
class EmbeddedSplit:
    """Backbone outputs of one split, in split order, on the device."""

    features: torch.Tensor  # N x D float32
    labels: torch.Tensor  # N int64
    targets: Optional[torch.Tensor] = None  # N float32 regression targets, or None


def _batchnorm_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running_" in k or "num_batches_tracked" in k}


@torch.no_grad()
def embed_split(
    model: nn.Module, source: BatchSource, batch_size: int, amp: bool = False, train_mode: bool = False,
    rows: Optional[range] = None,
) -> EmbeddedSplit:
    """f(x) for every item of `source` (or only `rows` of it), in order.

    train_mode=True embeds with the model in training mode (BatchNorm on batch statistics, as the
    vMF original's calibration pass does) and restores the running statistics afterwards, so the
    pass leaves no trace in the model. The model is left in eval mode either way.
    """
    saved = _batchnorm_state(model) if train_mode else None
    model.train(train_mode)
    features, labels, targets = [], [], []
    try:
        for x, y, t in source.batches(source.sequential(batch_size, rows)):
            with torch.autocast(x.device.type, dtype=autocast_dtype(amp), enabled=bool(amp)):
                features.append(model(x).float())
            labels.append(y.long())
            if t is not None:
                targets.append(t.float())
    finally:
        if saved is not None:
            model.load_state_dict(saved, strict=False)
        model.eval()
    return EmbeddedSplit(torch.cat(features), torch.cat(labels), torch.cat(targets) if targets else None)


def embed_split_sharded(model: nn.Module, source: BatchSource, batch_size: int, amp: bool = False) -> EmbeddedSplit:
    """`embed_split` (eval mode) with the rows shared out over the torchrun ranks and gathered back in order,
    so every rank holds the whole split; a single process embeds it all."""
    from vmf_embeddings.distributed import all_gather_rows, shard, world

    info = world()
    if not info.enabled or len(source) < info.world_size:
        return embed_split(model, source, batch_size, amp)
    part = embed_split(model, source, batch_size, amp, rows=shard(len(source), info))
    targets = all_gather_rows(part.targets) if part.targets is not None else None
    return EmbeddedSplit(all_gather_rows(part.features), all_gather_rows(part.labels), targets)


@torch.no_grad()
def head_outputs(
    head: nn.Module,
    split: EmbeddedSplit,
    with_log_probs: bool,
    n_samples: Optional[int] = None,
    seed: int = 1234,
) -> Dict[str, torch.Tensor]:
    """What the head makes of an embedded split: the arrays of an embeddings file.

    embeddings (retrieval vectors), labels, log_probs (N x C, when `with_log_probs`; sampled methods
    draw `n_samples` times from a generator seeded with `seed`), targets / predictions (regression),
    and the head's per-sample extras.
    """
    features = split.features
    out: Dict[str, torch.Tensor] = {
        "embeddings": head.retrieval_embeddings(features).float(),
        "labels": split.labels.long(),
    }
    if with_log_probs:
        generator = torch.Generator(device=features.device)
        generator.manual_seed(int(seed))
        out["log_probs"] = head.log_probs(features, n_samples=n_samples, generator=generator).float()
    if split.targets is not None:
        out["targets"] = split.targets.float()
    if head.predicts_targets:
        out["predictions"] = head.predict_targets(features).float()
    for key, value in head.export_batch(features).items():
        out[key] = value.float()
    return out


class TrainContext:
    """What a head's `on_train_start` may use: the model, the device and the training data."""

    def __init__(self, model: nn.Module, augmented_train: BatchSource, plain_train: BatchSource,
                 batch_size: int, amp: bool = False, sampler=None, cost_matrix=None) -> None:
        self.model = model
        self.cost_matrix = cost_matrix  # the run's class cost matrix (cost group), or None
        self.sampler = sampler  # the training batch sampler (a head that steers it attaches itself)
        self.augmented_train = augmented_train
        self.plain_train = plain_train
        self.batch_size = int(batch_size)
        self.amp = amp

    @property
    def device(self) -> torch.device:
        return self.plain_train.device

    def embed_train(self, train_mode: bool = False) -> EmbeddedSplit:
        """The training split embedded in order: in training mode with its training augmentation when
        `train_mode`, else as validation sees data (eval mode, no augmentation)."""
        source = self.augmented_train if train_mode else self.plain_train
        return embed_split(self.model, source, self.batch_size, self.amp, train_mode=train_mode)
