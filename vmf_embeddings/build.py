"""The only caller of `hydra.utils.instantiate`: datasets, model, sampler, optimizer and scheduler.

Every `_target_` is checked against an allowlist before anything is instantiated: this package, torch and
torchvision, plus the module prefixes the *current command* adds with `allowed_targets=[my_pkg.]`. A run
dir's saved config.yaml cannot extend the list (extraction passes the command's list, not the file's), so
a crafted config file cannot make the runner import and call arbitrary code.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Sequence

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from vmf_embeddings.datasets.base import DataSplits
from vmf_embeddings.errors import ConfigError, UserError
from vmf_embeddings.methods.base import Method


#: `_target_` prefixes instantiated without being asked for
ALLOWED_TARGETS = ("vmf_embeddings.", "torch.", "torchvision.")


def _targets(node: Any, path: str = "") -> Iterable[tuple]:
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=False)
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            if key == "_target_":
                yield here, str(value)
            else:
                yield from _targets(value, here)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _targets(value, f"{path}[{i}]")


def check_targets(node: Any, extra: Optional[Sequence[str]] = None, where: str = "") -> None:
    """Refuse any `_target_` outside ALLOWED_TARGETS + `extra` (one line naming the key and the fix)."""
    allowed = ALLOWED_TARGETS + tuple(str(p) for p in (extra or ()))
    for key, target in _targets(node):
        if not target.startswith(allowed):
            prefix = target.rsplit(".", 1)[0] + "."
            raise ConfigError(
                f"{where + '.' if where else ''}{key}={target} is not an allowed _target_ (allowed: "
                f"{', '.join(allowed)}); if you trust that module, pass allowed_targets=[{prefix}]"
            )


def instantiate(config, *args, **kwargs):
    """hydra.utils.instantiate, but a user-facing error raised inside the target surfaces as itself
    (one line naming the key and the fix) instead of Hydra's multi-line wrapper."""
    try:
        return hydra_instantiate(config, *args, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        if isinstance(cause, (ValueError, TypeError, IndexError, KeyError)):
            key = getattr(config, "_target_", None) or (config.get("_target_") if isinstance(config, dict) else "")
            reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
            raise ConfigError(f"building {key}: {reason}") from None
        raise


class EmbeddingModel(nn.Module):
    """backbone(x) -> f(x); the method head owns the loss, class state and predictions."""

    def __init__(self, backbone: nn.Module, head: Method) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


def _allowed(cfg: DictConfig, allowed: Optional[Sequence[str]]) -> Sequence[str]:
    return list(allowed) if allowed is not None else list(cfg.get("allowed_targets") or [])


def build_data(cfg: DictConfig, allowed: Optional[Sequence[str]] = None) -> DataSplits:
    """The dataset's splits. `allowed`: extra `_target_` prefixes (default: the config's own `allowed_targets`).

    File-backed splits are then read from a decoded-image store unless `dataset.store=none`
    (vmf_embeddings/datasets/store.py; `dataset.store_dir`, else $VMF_STORE_DIR, else <dataset_path>/.vmf_store).
    """
    check_targets(cfg.dataset.loader, _allowed(cfg, allowed), "dataset.loader")
    data = instantiate(cfg.dataset.loader)
    if data.n_train_classes != cfg.dataset.n_train_classes:
        raise ConfigError(
            f"dataset.n_train_classes={cfg.dataset.n_train_classes} but the '{cfg.dataset.name}' files hold "
            f"{data.n_train_classes} training classes; set dataset.n_train_classes={data.n_train_classes}"
        )
    from vmf_embeddings.datasets.store import attach_store

    return attach_store(data, str(cfg.dataset.get("store") or "none"), cfg.dataset.get("store_dir"),
                        str(cfg.dataset.get("dataset_path") or ""), progress=bool(cfg.get("progress_bar", True)))


def build_model(cfg: DictConfig, allowed: Optional[Sequence[str]] = None) -> EmbeddingModel:
    check_targets(cfg.arch.backbone, _allowed(cfg, allowed), "arch.backbone")
    check_targets(cfg.method.head, _allowed(cfg, allowed), "method.head")
    backbone = instantiate(cfg.arch.backbone)
    need, size = getattr(backbone, "min_image_size", None), cfg.dataset.get("image_size")
    if need is not None and size is not None and int(size) < int(need):
        raise ConfigError(f"arch={cfg.arch.name} needs images of at least {need} x {need} px, but dataset="
                          f"{cfg.dataset.name} has dataset.image_size={size}; use a dataset with larger images "
                          f"(or dataset.image_size >= {need} where its loader resizes)")
    head_kwargs = {}
    if cfg.arch.get("spherize", False):
        backbone = spherize_backbone(backbone, cfg)
        if "embedding_dim" in cfg.method.head:
            head_kwargs["embedding_dim"] = int(cfg.arch.params.embedding_dim) + 1
    head = instantiate(cfg.method.head, **head_kwargs)
    return EmbeddingModel(backbone, head)


class Spherized(nn.Module):
    """A backbone whose output is a pre-activation, followed by the spherization layer (one more dimension).
    Extraction records the layer's input z and output x (`layers.spherization.recording_projection`)."""

    def __init__(self, backbone: nn.Module, spherization: nn.Module) -> None:
        super().__init__()
        self.backbone, self.spherization = backbone, spherization

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spherization(self.backbone(x))


def spherize_backbone(backbone: nn.Module, cfg: DictConfig) -> nn.Module:
    """arch.spherize=true: an arch that builds its own spherized layer (`handles_spherize`) is kept; one whose output
    is a pre-activation (`preactivation_output`) gets the layer appended; any other is refused in one line."""
    if getattr(backbone, "handles_spherize", False):
        return backbone
    if not getattr(backbone, "preactivation_output", False):
        raise ConfigError(f"arch.spherize=true: arch={cfg.arch.get('name')} does not end in a pre-activation layer "
                          f"(its output passed a ReLU or pooling), so there is nothing to spherize; use an arch "
                          f"that does (resnet18/34/50, resnet32, n_digit_mnist, mgp_conv, inception3, ...)")
    from vmf_embeddings.layers.spherization import Spherization

    options = OmegaConf.to_container(cfg.spherization, resolve=True)
    return Spherized(backbone, Spherization(int(cfg.arch.params.embedding_dim), **options))


def _instantiate_option(node: DictConfig, **kwargs):
    """Instantiate a group option whose `_target_` sits at its top level beside its `name` (not a kwarg)."""
    root = node._get_root() if isinstance(node, DictConfig) else None
    check_targets(node, list((root.get("allowed_targets") if root is not None else None) or []),
                  str(node._key()) if isinstance(node, DictConfig) else "")
    option = OmegaConf.to_container(node, resolve=True)
    option.pop("name", None)
    return instantiate(option, **kwargs)


def build_sampler(cfg: DictConfig, labels: torch.Tensor, seed: int, **shard):
    """The training batch sampler; `shard` (rank, world_size) gives a torchrun rank its share of each epoch."""
    return _instantiate_option(cfg.sampler, labels=labels, seed=seed, **shard)


def parameter_groups(model: EmbeddingModel, cfg: DictConfig) -> List[Dict]:
    """Groups as the vMF original: weights decayed (at the optimiser's weight_decay); biases, 1-D tensors and
    class-level parameters not; the temperature alone with its own learning rate and no decay."""
    decay, no_decay = [], []
    for name, parameter in model.backbone.named_parameters():
        if not parameter.requires_grad:
            continue
        (decay if parameter.ndim > 1 and not name.endswith("bias") else no_decay).append(parameter)
    head_groups = model.head.param_groups()
    decay += [p for p in head_groups.get("decay", []) if p.requires_grad]
    no_decay += [p for p in head_groups.get("no_decay", []) if p.requires_grad]
    temperature = [p for p in head_groups.get("temperature", []) if p.requires_grad]
    groups = [
        {"params": decay},
        {"params": no_decay, "weight_decay": 0.0},
        {"params": temperature, "lr": float(cfg.mode.temp_learning_rate), "weight_decay": 0.0, "name": "temperature"},
    ]
    return [group for group in groups if group["params"]]


def build_optimizer(cfg: DictConfig, model: EmbeddingModel) -> torch.optim.Optimizer:
    """The `optimizer` group's factory over `parameter_groups`; the temperature group gets no momentum
    (as the original) when the optimiser has momentum at all."""
    factory = _instantiate_option(cfg.optimizer, _convert_="all")
    try:
        optimizer = factory(parameter_groups(model, cfg))
    except (ValueError, TypeError, IndexError, KeyError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"optimizer={cfg.optimizer.get('name', '?')} rejects its settings ({reason}); check the "
                          f"optimizer.* and mode.* keys") from None
    for group in optimizer.param_groups:
        if group.get("name") == "temperature" and "momentum" in group:
            group["momentum"], group["nesterov"] = 0.0, False
    return optimizer


def build_scheduler(cfg: DictConfig, optimizer: torch.optim.Optimizer):
    """From the `scheduler` group; stepped once per epoch by `step_scheduler`."""
    return _instantiate_option(cfg.scheduler)(optimizer)


def step_scheduler(scheduler, monitored: float) -> None:
    """The end-of-epoch step: ReduceLROnPlateau with the validation metric, the others by epoch."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(monitored)
    else:
        scheduler.step()
