"""Detection batches: the documented sibling of `BatchSource` and the index samplers for `task: detection` data.

Images have different sizes and box counts, so a batch is a list of float images on the device (0..1; the detector
normalises and resizes them itself) and a list of target dicts (boxes, labels + 1: torchvision reserves 0 for the
background). `ImageBatchSampler` draws seeded image-index batches with the samplers' `state_dict` contract, so a
detection run checkpoints and resumes like any other. Training flips images left-right with probability 1/2 (the
detectors' standard augmentation), from a generator that is checkpointed too.
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Sequence, Tuple

import torch
from omegaconf import DictConfig

from vmf_embeddings.datasets.detection import DetectionData, DetectionSplit, hflip
from vmf_embeddings.errors import ConfigError


def build_detection_data(cfg: DictConfig) -> DetectionData:
    """The dataset's `DetectionData`; with novel classes (few-shot), base training sees only the base classes."""
    from vmf_embeddings.build import check_targets, instantiate

    check_targets(cfg.dataset.loader, list(cfg.get("allowed_targets") or []), "dataset.loader")
    data = instantiate(cfg.dataset.loader)
    if not isinstance(data, DetectionData):
        raise ConfigError(f"dataset={cfg.dataset.name} is not a detection dataset (its loader returns "
                          f"{type(data).__name__}); use voc2007, voc0712 or shapes_det with a detection method")
    return data


def base_training_data(data: DetectionData) -> DetectionData:
    """Training data without the novel classes: their boxes are removed and images holding only them dropped."""
    if not data.novel_classes:
        return data
    return data.select_classes(list(data.base_classes), relabel=True, keep_empty=False)


class ImageBatchSampler:
    """Seeded shuffled batches of image indices, one pass per epoch (the epoch's order depends on seed + epoch)."""

    def __init__(self, n_images: int, batch_size: int, seed: int) -> None:
        if int(batch_size) < 1:
            raise ConfigError(f"sampler.batch_size={batch_size} must be >= 1")
        self.n, self.batch_size, self.seed, self.epoch = int(n_images), int(batch_size), int(seed), 0

    def __len__(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[List[int]]:
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        self.epoch += 1
        for start in range(0, self.n, self.batch_size):
            yield order[start:start + self.batch_size].tolist()

    def state_dict(self) -> Dict[str, int]:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.epoch = int(state["epoch"])


class DetectionBatches:
    """Images and targets of index batches on `device`; `flip` mirrors each image with probability 1/2."""

    def __init__(self, split: DetectionSplit, device: torch.device, flip: bool, seed: int = 0) -> None:
        self.split, self.device, self.flip = split, device, bool(flip)
        self.generator = torch.Generator().manual_seed(int(seed))

    def generator_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_generator_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)

    def load(self, indices: Sequence[int]) -> Tuple[List[torch.Tensor], List[Dict[str, torch.Tensor]]]:
        flips = torch.rand(len(indices), generator=self.generator) < 0.5 if self.flip else None
        images, targets = [], []
        for position, i in enumerate(indices):
            image, boxes = self.split.load_image(i), self.split.boxes[i]
            if flips is not None and bool(flips[position]):
                image, boxes = hflip(image, boxes)
            images.append(image.to(self.device, non_blocking=True).float().div_(255.0))
            targets.append({"boxes": boxes.to(self.device), "labels": (self.split.labels[i] + 1).to(self.device)})
        return images, targets

    def batches(self, sampler) -> Iterator[Tuple[List[torch.Tensor], List[Dict[str, torch.Tensor]]]]:
        for indices in sampler:
            yield self.load(indices)
