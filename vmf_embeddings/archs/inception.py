"""torchvision Inception-v3 trunk with a linear layer to the embedding (the RepMet / Magnet fine-grained backbone)."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from vmf_embeddings.archs import batchnorm_eval, freeze_parameters, pretrained_state_dict, warn_frozen_random_trunk
from vmf_embeddings.errors import ConfigError

#: the smallest side Inception-v3 accepts (its stride-2 stem and reductions leave 1 x 1 at 75 px; 299 as trained)
MIN_SIZE = 75
_WEIGHTS = torchvision.models.Inception_V3_Weights.IMAGENET1K_V1
_STEM = "Conv2d_1a_3x3.conv"


class TorchvisionInception3(nn.Module):
    """Inception-v3 trunk (fc replaced by Identity: 2048-d pooled features) -> Linear(2048 -> embedding_dim).

    Inputs are N x C x H x W with H, W >= 75 (299 x 299 as trained); construction does not depend on the size.
    transform_input is off: the dataset's transforms decide the normalisation. The trunk keeps torchvision's
    dropout (p = 0.5) on the pooled features before the embedding layer; it is active in train mode.

    pretrained: ImageNet weights through torchvision's weights API (downloaded once into the torch hub cache);
        otherwise torchvision's own initialisation (init_weights=True).
    freeze: a fixed feature extractor: every trunk parameter has requires_grad=False and the trunk's BatchNorm
        layers stay in eval mode under train(), so a training forward leaves their running statistics unchanged;
        only `remap` trains. With pretrained weights and in_channels != 3 the new stem conv would be frozen at
        random: refused.
    in_channels: != 3 replaces the first 3x3/2 conv (newly initialised).
    aux_logits: keep torchvision's auxiliary classifier in the trunk (its 1000-way output, computed in train mode
        on inputs of at least 299 px, is discarded: the embedding comes from the main branch); false drops it.
    """

    #: the output is a linear layer's pre-activation: arch.spherize=true may append the spherization layer
    preactivation_output = True
    #: build_model refuses datasets with smaller images before a run starts
    min_image_size = MIN_SIZE

    def __init__(self, embedding_dim: int = 1024, pretrained: bool = False, freeze: bool = False,
                 in_channels: int = 3, aux_logits: bool = False) -> None:
        super().__init__()
        in_channels = int(in_channels)
        if freeze and pretrained and in_channels != 3:
            raise ConfigError(
                f"arch.params.freeze=true would freeze a randomly initialised stem conv (in_channels={in_channels}: "
                f"the pretrained stem takes 3 channels); use 3-channel images or arch.params.freeze=false"
            )
        warn_frozen_random_trunk("inception3", bool(pretrained), bool(freeze))
        trunk = torchvision.models.inception_v3(weights=None, aux_logits=bool(aux_logits), transform_input=False,
                                                init_weights=not pretrained)
        trunk.fc = nn.Identity()
        if in_channels != 3:
            stem = nn.Conv2d(in_channels, 32, kernel_size=3, stride=2, bias=False)
            nn.init.trunc_normal_(stem.weight, mean=0.0, std=0.1, a=-2, b=2)  # torchvision's init of its convs
            trunk.Conv2d_1a_3x3.conv = stem
        if pretrained:
            state = pretrained_state_dict(_WEIGHTS)
            dropped = ("fc.",) + (() if aux_logits else ("AuxLogits.",)) + ((_STEM + ".",) if in_channels != 3 else ())
            state = {k: v for k, v in state.items() if not k.startswith(dropped)}
            missing, unexpected = trunk.load_state_dict(state, strict=False)
            if unexpected or any(not k.startswith(_STEM + ".") for k in missing):
                raise RuntimeError(f"torchvision's {_WEIGHTS} weights do not match Inception3: missing {missing}, "
                                   f"unexpected {unexpected}")
        self.trunk = trunk
        self.remap = nn.Linear(2048, int(embedding_dim))
        nn.init.zeros_(self.remap.bias)
        self.embedding_dim = int(embedding_dim)
        self.freeze = bool(freeze)
        if self.freeze:
            freeze_parameters(self.trunk)
            batchnorm_eval(self.trunk)

    def train(self, mode: bool = True) -> "TorchvisionInception3":
        super().train(mode)
        if mode and self.freeze:
            batchnorm_eval(self.trunk)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < MIN_SIZE:
            raise ConfigError(f"arch=inception3 needs images of at least {MIN_SIZE} x {MIN_SIZE} px (299 as trained), "
                              f"got {tuple(x.shape[-2:])}; use a dataset with dataset.image_size >= {MIN_SIZE}")
        features = self.trunk(x)
        if isinstance(features, tuple):  # InceptionOutputs(logits, aux_logits) in train mode with aux_logits
            features = features[0]
        return self.remap(features)
