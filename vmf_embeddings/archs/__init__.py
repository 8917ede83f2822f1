"""Backbones: nn.Modules mapping an image batch to N x embedding_dim embeddings f(x).

Everything class-related (class weights, temperature, prototypes) lives in the method head
(`vmf_embeddings.methods`), so any backbone works with any method.

The torchvision backbones (`resnet.TorchvisionResNet`, `inception.TorchvisionInception3`) share one meaning of
`freeze=true`: every trunk parameter has requires_grad=False (the optimiser never sees it: build.parameter_groups
skips it) and the trunk's BatchNorm layers stay in eval mode even under model.train(), so their running
statistics never change; only the embedding layer after the trunk trains. The helpers below implement it.
"""

from __future__ import annotations

import logging

from torch import nn

from vmf_embeddings.errors import WeightsUnavailableError

log = logging.getLogger(__name__)


def freeze_parameters(module: nn.Module) -> None:
    """requires_grad=False on every parameter of `module`."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)


def batchnorm_eval(module: nn.Module) -> None:
    """Put every BatchNorm layer under `module` in eval mode: it normalises with, and no longer updates, its
    running statistics (`train()` overrides call this after nn.Module.train)."""
    for child in module.modules():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            child.eval()


def warn_frozen_random_trunk(arch: str, pretrained: bool, freeze: bool) -> None:
    if freeze and not pretrained:
        log.warning("arch=%s: freeze=true without pretrained weights freezes a randomly initialised trunk; only "
                    "the embedding layer trains (set arch.params.pretrained=true for the usual frozen backbone)", arch)


def pretrained_state_dict(weights) -> dict:
    """A torchvision weights enum's state dict (downloaded or from the torch hub cache); one-line error when offline."""
    try:
        return weights.get_state_dict(progress=True)
    except Exception as error:  # no network / no cached weights
        raise WeightsUnavailableError(
            f"arch.params.pretrained=true needs torchvision's {weights} weights; downloading them failed "
            f"({type(error).__name__}). Run once online or place the file in the torch hub cache "
            f"($TORCH_HOME/hub/checkpoints), or set arch.params.pretrained=false"
        ) from None
