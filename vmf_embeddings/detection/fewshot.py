"""Few-shot detection episodes with RepMet (Karlinsky et al., CVPR 2019), on the classes held out of base training.

An episode draws `n_way` novel classes, `k_shot` support images and `n_query` query images per class (seeded).
Each class's representatives come from its support: the detector's proposals on the support images (plus the
ground-truth boxes themselves, so a class always has one sample) that overlap a ground-truth box of the class with
IoU > 0.7 are embedded by the DML head and clustered by k-means into the head's K representatives (fewer samples are
used directly, repeated: an identical representative does not change max_j p_ij). Optional episode fine-tuning
(`finetune_steps` > 0, `finetune_lr`, the official README's 5e-4) then trains the representatives alone on the
support RoIs (background: proposals overlapping no support box above 0.3). The head then detects the episode's
classes on the query images; the episode's score is VOC mAP@0.5 over them, boxes of other classes removed.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Tuple

import torch
from torchvision.ops import box_iou

from vmf_embeddings.datasets.detection import DetectionData
from vmf_embeddings.errors import ConfigError
from vmf_embeddings.eval.detection import detection_metrics
from vmf_embeddings.methods.clustering import kmeans

log = logging.getLogger(__name__)


@torch.no_grad()
def support_rois(model, images: List[torch.Tensor], boxes: List[torch.Tensor], iou: float = 0.7,
                 background_iou: float = 0.3) -> Tuple[torch.Tensor, torch.Tensor]:
    """Unit embeddings of the support images' RoIs: the proposals (and ground-truth boxes) overlapping `boxes` with
    IoU > `iou` (label 1), and proposals overlapping none above `background_iou` (label 0, for fine-tuning)."""
    model.eval()
    targets = [{"boxes": b, "labels": torch.ones(len(b), dtype=torch.int64, device=b.device)} for b in boxes]
    image_list, targets = model.transform(images, targets)
    features = model.backbone(image_list.tensors)
    proposals, _ = model.rpn(image_list, features)
    chosen, labels = [], []
    for props, target in zip(proposals, targets):
        gt = target["boxes"]
        overlap = box_iou(props, gt).amax(1) if len(gt) else torch.zeros(len(props), device=props.device)
        positive, negative = torch.cat([gt, props[overlap > iou]]), props[overlap < background_iou]
        chosen.append(torch.cat([positive, negative]))
        labels.append(torch.cat([torch.ones(len(positive), dtype=torch.long, device=gt.device),
                                 torch.zeros(len(negative), dtype=torch.long, device=gt.device)]))
    heads = model.roi_heads
    pooled = heads.box_roi_pool(features, chosen, image_list.image_sizes)
    return heads.box_predictor.embeddings(heads.box_head(pooled)), torch.cat(labels)


def finetune_representatives(predictor, reps: torch.Tensor, embeddings: torch.Tensor, labels: torch.Tensor,
                             steps: int, lr: float) -> torch.Tensor:
    """An episode's fine-tuning, on the representatives only (the network stays as base training left it):
    `steps` of SGD (momentum 0.9) on the head's cross-entropy over the support RoIs (labels 0 = background,
    1..N = the episode's classes)."""
    reps = reps.detach().clone().requires_grad_(True)
    optimizer = torch.optim.SGD([reps], lr=float(lr), momentum=0.9)
    with torch.enable_grad():
        for _ in range(int(steps)):
            scores = torch.exp(-predictor.distances(embeddings, reps) / (2 * predictor.sigma ** 2)).amax(-1)
            logits = predictor.logit_scale * torch.cat([1 - scores.amax(-1, keepdim=True), scores], 1)
            loss = torch.nn.functional.cross_entropy(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return reps.detach()


@torch.no_grad()
def run_episodes(model, data: DetectionData, device: torch.device, n_way: int = 5, k_shot: int = 1,
                 n_query: int = 10, n_episodes: int = 500, seed: int = 1234, batch_size: int = 4,
                 finetune_steps: int = 0, finetune_lr: float = 5e-4) -> List[float]:
    """mAP@0.5 of each episode on the test split's novel classes (module docstring)."""
    from vmf_embeddings.detection.infer import detect

    predictor = model.roi_heads.box_predictor
    if not hasattr(predictor, "set_representatives"):
        raise ConfigError("eval.detection_episodes needs method=repmet_det (its representatives are replaced by "
                          "each episode's novel classes); the linear detector has none")
    split = data.test
    holding = {c: [i for i in range(len(split)) if bool((split.labels[i] == c).any())] for c in data.novel_classes}
    novel = [c for c in data.novel_classes if len(holding[c]) > int(k_shot)]  # classes an episode can draw
    skipped = sorted(set(data.novel_classes) - set(novel))
    if skipped:
        log.info("few-shot episodes skip novel classes with <= k_shot test images: %s",
                 ", ".join(data.class_names[c] for c in skipped))
    if len(novel) < int(n_way):
        raise ConfigError(f"eval.detection_episodes.n_way={n_way} but only {len(novel)} novel classes of {data.name} "
                          f"have more than k_shot={k_shot} test images; lower n_way or k_shot")
    generator = torch.Generator().manual_seed(int(seed))
    saved = predictor.reps.detach().clone()
    n_reps = saved.shape[1]
    maps: List[float] = []
    try:
        for _ in range(int(n_episodes)):
            pick = torch.randperm(len(novel), generator=generator)[: int(n_way)].tolist()
            classes = [novel[p] for p in pick]
            reps, queries, fg, bg = [], [], [], []
            for position, c in enumerate(classes):
                images = holding[c]
                order = torch.randperm(len(images), generator=generator).tolist()
                support = [images[o] for o in order[: int(k_shot)]]
                queries += [images[o] for o in order[int(k_shot): int(k_shot) + int(n_query)]]
                imgs = [split.load_image(i).to(device).float().div_(255.0) for i in support]
                boxes = [split.boxes[i][split.labels[i] == c].to(device) for i in support]
                emb, kind = support_rois(model, imgs, boxes)
                reps.append(kmeans(emb[kind == 1], n_reps, generator=torch.Generator().manual_seed(int(seed))))
                fg.append((emb[kind == 1], position + 1))
                bg.append(emb[kind == 0])
            episode_reps = torch.stack(reps)
            if int(finetune_steps) > 0:
                embeddings = torch.cat([e for e, _ in fg] + bg)
                labels = torch.cat([torch.full((len(e),), y, dtype=torch.long) for e, y in fg]
                                   + [torch.zeros(len(b), dtype=torch.long) for b in bg]).to(embeddings.device)
                episode_reps = finetune_representatives(predictor, episode_reps, embeddings, labels,
                                                        int(finetune_steps), float(finetune_lr))
            predictor.set_representatives(episode_reps)
            queries = sorted(set(queries))
            detections = detect(model, split, device, batch_size, indices=queries)
            truth = []
            for i in queries:
                keep = torch.zeros(len(split.labels[i]), dtype=torch.bool)
                relabel = torch.full_like(split.labels[i], -1)
                for position, c in enumerate(classes):
                    keep |= split.labels[i] == c
                    relabel[split.labels[i] == c] = position
                truth.append({"boxes": split.boxes[i][keep], "labels": relabel[keep],
                              "difficult": split.difficult[i][keep]})
            maps.append(float(detection_metrics(detections, truth, n_classes=int(n_way))["map50"]))
    finally:
        predictor.set_representatives(saved)
        predictor.reps.requires_grad_(True)
    return maps


def episode_options(node) -> Dict[str, float]:
    options = {"n_way": 5, "k_shot": 1, "n_query": 10, "n_episodes": 500, "finetune_steps": 0, "finetune_lr": 5e-4}
    unknown = sorted(set(node) - set(options))
    if unknown:
        raise ConfigError(f"eval.detection_episodes.{unknown[0]} is not an option; use {', '.join(options)}")
    options.update({k: type(options[k])(v) for k, v in dict(node).items()})
    return options
