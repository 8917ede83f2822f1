"""CNN-9 of SphereNet (Liu et al., "Deep Hyperspherical Learning", NeurIPS 2017), as the spherization paper's
comparison with angle-based operators uses it (Kim & Kim, NeurIPS 2022; `models/cnn.py` of
github.com/GIST-IRR/spherization_layer): the backbone up to the 256-d layer; the FC-10 is the method head.

    3 x (Conv3x3 128 -> BN -> ReLU), MaxPool2 -> 3 x (Conv3x3 192 ...), MaxPool2 -> 3 x (Conv3x3 256 ...), MaxPool2
    -> flatten (32 px: 4 x 4 x 256 = 4096) -> FC 4096 -> embedding_dim (256; no activation)

Options (arch.params), each a row of the paper's comparison table:

- `fc256_operator: none` (plain FC with bias) | linear | cosine | sigmoid: the FC-256 becomes SphereNet's direct
  projection, `AngularLinear(4096, 256, operator, "direct")` (`hsn_cnn9-d --norm <op>`). `fc256_bias: true` adds the
  original's bias inside the cosine ((w . x^ + b) / |w|, vmf_embeddings/layers/angular.py); the plain FC-256
  (operator none) always has its bias, as the original. `fc256_normalize_input_quirk: true`: the original -d nets'
  HSNLinear FC-256 divides its input by sqrt(|x|^2 + 1e-4) (with operator none too: the W-Softmax rows,
  `hsn_cnn9-d --norm none --w_norm w_*`).
- `spherize_conv_features: true` (`hsnsph_cnn9-d`): the flattened conv features go through Spherization(4096)
  (conf/config.yaml `spherization:`) and then a bias-free FC 4097 -> 256 (an angular one with a direct operator).
  These features are post-ReLU and pooled, so z >= 0 and only the upper half of each angle range is used.
- `arch.spherize=true` (`hsnsph_cnn9-s`): the 256-d output is a pre-activation (`preactivation_output`), so
  build_model appends Spherization(256) and the head sees 257 dimensions (`unnormalized_sce`: bias-free 257 -> C).

`widths` (default 128/192/256) exists for small smoke tests; the paper's network is the default.
Initialisation: PyTorch's defaults, as the port (SphereNet's TF code draws convs from N(0, 2 / (9 C_in))).
"""

from __future__ import annotations

from typing import List, Mapping, Optional, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from vmf_embeddings.errors import ConfigError
from vmf_embeddings.layers.angular import OPERATORS, AngularLinear

LAYERS_PER_GROUP = 3


def cnn9_side(image_size: int) -> int:
    """Side of the last feature map: three 2 x 2 max-pools (floor), 32 -> 4, 28 -> 3."""
    return int(image_size) // 8


class CNN9(nn.Module):
    """N x C x H x W -> N x embedding_dim (module docstring)."""

    #: the FC-256 output has no activation: arch.spherize=true may append the spherization layer (hsnsph_cnn9-s)
    preactivation_output = True

    def __init__(self, embedding_dim: int = 256, in_channels: int = 3, image_size: int = 32,
                 widths: Sequence[int] = (128, 192, 256), fc256_operator: str = "none", fc256_bias: bool = False,
                 fc256_normalize_input_quirk: bool = False, spherize_conv_features: bool = False,
                 spherization: Optional[Mapping] = None) -> None:
        super().__init__()
        if isinstance(embedding_dim, bool) or int(embedding_dim) != embedding_dim or int(embedding_dim) < 1:
            raise ConfigError(f"arch=cnn9: arch.params.embedding_dim={embedding_dim!r} must be an integer >= 1")
        widths = [int(w) for w in widths]
        if len(widths) != 3 or min(widths) < 1:
            raise ConfigError(f"arch=cnn9: arch.params.widths={widths} must be three positive channel counts")
        if fc256_operator not in OPERATORS:
            raise ConfigError(f"arch=cnn9: arch.params.fc256_operator={fc256_operator!r} must be one of "
                              f"{', '.join(OPERATORS)}")
        side = cnn9_side(image_size)
        if side < 1:
            raise ConfigError(f"arch=cnn9 needs images of at least 8 px (dataset.image_size={image_size})")
        if spherize_conv_features and (fc256_bias or fc256_normalize_input_quirk):
            raise ConfigError("arch=cnn9: spherize_conv_features=true feeds a bias-free FC-256 with the spherized "
                              "features; set arch.params.fc256_bias=false and fc256_normalize_input_quirk=false")
        self.embedding_dim, self.fc256_operator = int(embedding_dim), fc256_operator
        self.spherize_conv_features = bool(spherize_conv_features)

        layers: List[nn.Module] = []
        channels = int(in_channels)
        for width in widths:
            for _ in range(LAYERS_PER_GROUP):
                layers += [nn.Conv2d(channels, width, kernel_size=3, padding=1), nn.BatchNorm2d(width),
                           nn.ReLU(inplace=True)]
                channels = width
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.feature_dim = channels * side * side

        fc_in = self.feature_dim
        if self.spherize_conv_features:
            from vmf_embeddings.layers.spherization import Spherization

            options = spherization or {}
            if isinstance(options, DictConfig):
                options = OmegaConf.to_container(options, resolve=True)
            self.spherization = Spherization(self.feature_dim, **dict(options))
            fc_in += 1
        else:
            self.spherization = None
        # operator none: a plain FC (AngularLinear "none" is nn.Linear plus the optional input-normalising quirk)
        bias = (not self.spherize_conv_features) if fc256_operator == "none" else bool(fc256_bias)
        self.fc = AngularLinear(fc_in, self.embedding_dim, operator=fc256_operator, projection="direct", bias=bias,
                                normalize_input_quirk=bool(fc256_normalize_input_quirk))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        if self.spherization is not None:
            h = self.spherization(h)
        return self.fc(h)


__all__ = ["CNN9", "cnn9_side"]
