"""Faster R-CNN with FPN from torchvision, assembled for the runner: a torchvision ResNet trunk (the `arch` group's
depth and `pretrained` flag), torchvision's RPN, RoI Align and two-FC box head (FC 1024 -> FC 1024, RepMet's too),
and the method's box predictor (`detection/heads.py`) inside RoI heads that also add the predictor's own losses.
"""

from __future__ import annotations

from typing import Tuple

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign

from vmf_embeddings.errors import ConfigError

#: depth -> torchvision ImageNet weights of the trunk
_WEIGHTS = {18: "ResNet18_Weights", 34: "ResNet34_Weights", 50: "ResNet50_Weights", 101: "ResNet101_Weights"}


class PredictorLossRoIHeads(RoIHeads):
    """torchvision's RoI heads, plus the box predictor's `extra_losses(labels)` on the sampled RoIs (RepMet's
    embedding loss needs the RoIs' class labels, which only the RoI heads know)."""

    def select_training_samples(self, proposals, targets):
        proposals, matched_idxs, labels, regression_targets = super().select_training_samples(proposals, targets)
        self._sampled_labels = torch.cat(labels)
        return proposals, matched_idxs, labels, regression_targets

    def forward(self, features, proposals, image_shapes, targets=None):
        result, losses = super().forward(features, proposals, image_shapes, targets)
        if self.training:
            losses.update(self.box_predictor.extra_losses(self._sampled_labels))
        return result, losses


def _trunk(cfg: DictConfig) -> Tuple[int, bool]:
    backbone = cfg.arch.get("backbone", {})
    depth = backbone.get("depth") if isinstance(backbone, DictConfig) else None
    if depth not in _WEIGHTS:
        raise ConfigError(f"method={cfg.method.name} detects with a ResNet-FPN: use arch=resnet18 | resnet34 | "
                          f"resnet50 (arch={cfg.arch.get('name')} has no ResNet depth)")
    return int(depth), bool(cfg.arch.params.get("pretrained", False))


def build_detector(cfg: DictConfig, n_classes: int) -> FasterRCNN:
    """Faster R-CNN for `n_classes` foreground classes with the method's predictor (`method.head`)."""
    from vmf_embeddings.build import check_targets, instantiate

    depth, pretrained = _trunk(cfg)
    options = OmegaConf.to_container(cfg.method.detector, resolve=True)
    # pretrained trunks keep ImageNet BatchNorm statistics frozen (torchvision's recipe); from scratch they train
    backbone = resnet_fpn_backbone(backbone_name=f"resnet{depth}", weights=None,
                                   norm_layer=FrozenBatchNorm2d if pretrained else nn.BatchNorm2d,
                                   trainable_layers=int(options["trainable_layers"]) if pretrained else 5)
    if pretrained:
        import torchvision

        from vmf_embeddings.archs import pretrained_state_dict

        weights = getattr(torchvision.models, _WEIGHTS[depth]).IMAGENET1K_V1
        state = {k: v for k, v in pretrained_state_dict(weights).items() if not k.startswith("fc.")}
        backbone.body.load_state_dict(state, strict=False)
    check_targets(cfg.method.head, list(cfg.get("allowed_targets") or []), "method.head")
    predictor = instantiate(cfg.method.head, n_classes=int(n_classes))
    resolution = 7
    roi_heads = PredictorLossRoIHeads(
        box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=resolution, sampling_ratio=2),
        box_head=TwoMLPHead(backbone.out_channels * resolution ** 2, 1024),
        box_predictor=predictor,
        fg_iou_thresh=0.5, bg_iou_thresh=0.5,
        batch_size_per_image=int(options["rois_per_image"]), positive_fraction=0.25, bbox_reg_weights=None,
        score_thresh=float(options["score_threshold"]), nms_thresh=float(options["nms_threshold"]),
        detections_per_img=int(options["detections_per_image"]),
    )
    data = cfg.dataset
    model = FasterRCNN(
        backbone, num_classes=None, min_size=int(data.image_size), max_size=int(data.get("max_size", 1333)),
        image_mean=list(options["image_mean"]), image_std=list(options["image_std"]),
        rpn_pre_nms_top_n_train=int(options["rpn_pre_nms_top_n"]),
        rpn_post_nms_top_n_train=int(options["rpn_post_nms_top_n"]),
        rpn_pre_nms_top_n_test=int(options["rpn_pre_nms_top_n"]) // 2,
        rpn_post_nms_top_n_test=int(options["rpn_post_nms_top_n"]) // 2,
        box_predictor=predictor,
    )
    model.roi_heads = roi_heads
    return model
