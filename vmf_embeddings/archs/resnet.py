"""torchvision ResNet trunks with a linear remap to the embedding (adapted from dml_cross_entropy)."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from vmf_embeddings.archs import batchnorm_eval, freeze_parameters, pretrained_state_dict, warn_frozen_random_trunk
from vmf_embeddings.errors import ConfigError

_FACTORIES = {
    18: (torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1),
    34: (torchvision.models.resnet34, torchvision.models.ResNet34_Weights.IMAGENET1K_V1),
    50: (torchvision.models.resnet50, torchvision.models.ResNet50_Weights.IMAGENET1K_V1),
    101: (torchvision.models.resnet101, torchvision.models.ResNet101_Weights.IMAGENET1K_V1),
}


class TorchvisionResNet(nn.Module):
    """ResNet trunk -> global average pool -> Linear(features -> embedding_dim) (no norm, no activation).

    first_conv_3x3: CIFAR stem (3x3 stride-1 conv1; the 3x3/2 max-pool is kept, as the original).
    set_bn_eval: BatchNorm layers stay in eval mode (frozen running statistics) whenever train() is called;
        their affine parameters still train. Used with pretrained weights on small-batch retrieval data.
    pretrained: ImageNet weights through torchvision's weights API (downloaded once into the torch hub cache).
    freeze: a fixed feature extractor: every trunk parameter has requires_grad=False and the trunk's BatchNorm
        layers stay in eval mode under train(), so a training forward leaves their running statistics unchanged
        (the RepMet seed's "frozen" backbone still updated them); only `remap` trains. With pretrained weights a
        newly initialised stem (first_conv_3x3=true or in_channels != 3) would be frozen at random: refused.
    """

    #: the output is a linear layer's pre-activation: arch.spherize=true may append the spherization layer
    preactivation_output = True

    def __init__(
        self,
        depth: int = 50,
        embedding_dim: int = 128,
        set_bn_eval: bool = False,
        pretrained: bool = False,
        first_conv_3x3: bool = True,
        in_channels: int = 3,
        freeze: bool = False,
    ) -> None:
        super().__init__()
        if depth not in _FACTORIES:
            raise ValueError(f"arch depth={depth} is not supported; choose one of {sorted(_FACTORIES)}")
        factory, weights = _FACTORIES[depth]
        new_stem = bool(first_conv_3x3) or int(in_channels) != 3
        if freeze and pretrained and new_stem:
            reason = "first_conv_3x3=true" if first_conv_3x3 else f"in_channels={in_channels}"
            raise ConfigError(
                f"arch.params.freeze=true would freeze a randomly initialised conv1 ({reason}: the stem is not "
                f"pretrained); use arch.params.first_conv_3x3=false on 3-channel images, or arch.params.freeze=false"
            )
        warn_frozen_random_trunk(f"resnet{depth}", bool(pretrained), bool(freeze))
        # zero_init_residual: each block's last BN gamma starts at 0, as dml_cross_entropy's ResNet.
        trunk = factory(weights=None, zero_init_residual=True)
        if pretrained:
            state = pretrained_state_dict(weights)
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            trunk.load_state_dict(state, strict=False)
        if new_stem:
            kernel, stride, padding = (3, 1, 1) if first_conv_3x3 else (7, 2, 3)
            trunk.conv1 = nn.Conv2d(in_channels, 64, kernel_size=kernel, stride=stride, padding=padding, bias=False)
            nn.init.kaiming_normal_(trunk.conv1.weight, mode="fan_out", nonlinearity="relu")
        n_features = trunk.fc.in_features
        trunk.fc = nn.Identity()
        self.trunk = trunk
        self.remap = nn.Linear(n_features, embedding_dim)
        nn.init.zeros_(self.remap.bias)
        self.embedding_dim = int(embedding_dim)
        self.set_bn_eval = bool(set_bn_eval)
        self.freeze = bool(freeze)
        if self.freeze:
            freeze_parameters(self.trunk)
            batchnorm_eval(self.trunk)

    def train(self, mode: bool = True) -> "TorchvisionResNet":
        super().train(mode)
        if mode and (self.set_bn_eval or self.freeze):
            batchnorm_eval(self)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.remap(self.trunk(x))
