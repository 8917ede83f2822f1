"""Frozen torchvision backbones (freeze=true): no trunk gradients, truly frozen BatchNorm statistics, a trainable
embedding layer, and optimisers that never see a frozen parameter; the Inception-v3 backbone's shapes."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from tests.conftest import compose_config
from vmf_embeddings.archs.inception import TorchvisionInception3
from vmf_embeddings.archs.resnet import TorchvisionResNet
from vmf_embeddings.build import build_model, build_optimizer
from vmf_embeddings.errors import ConfigError

# (backbone factory, a small training batch): Inception needs >= 75 px, so 80 x 80 there
CASES = {
    "resnet18": (lambda freeze: TorchvisionResNet(depth=18, embedding_dim=8, freeze=freeze), (2, 3, 32, 32)),
    "inception3": (lambda freeze: TorchvisionInception3(embedding_dim=8, freeze=freeze), (2, 3, 80, 80)),
}


def _bn_stats(net: nn.Module) -> dict:
    return {name: buffer.clone() for name, buffer in net.named_buffers()
            if name.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")}


def _train_step(net: nn.Module, shape) -> None:
    net.train()
    net(torch.rand(*shape) * 4 + 1).square().sum().backward()  # far from the initial statistics (0, 1)


@pytest.mark.parametrize("arch", sorted(CASES))
def test_frozen_trunk_has_no_gradients_and_fixed_batchnorm_statistics(arch):
    torch.manual_seed(0)
    factory, shape = CASES[arch]
    net = factory(True)
    assert all(not p.requires_grad for p in net.trunk.parameters())
    assert all(p.requires_grad for p in net.remap.parameters())
    bns = [m for m in net.trunk.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns
    before = _bn_stats(net)
    _train_step(net, shape)
    assert net.training and all(not m.training for m in bns)  # model.train() keeps the trunk's BN in eval
    after = _bn_stats(net)
    assert before.keys() == after.keys() and len(before) == 3 * len(bns)
    for name in before:
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=0, msg=name)
    assert all(p.grad is None for p in net.trunk.parameters())
    assert net.remap.weight.grad is not None and net.remap.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("arch", sorted(CASES))
def test_unfrozen_trunk_trains_and_updates_batchnorm_statistics(arch):
    torch.manual_seed(0)
    factory, shape = CASES[arch]
    net = factory(False)
    assert all(p.requires_grad for p in net.parameters())
    before = _bn_stats(net)
    _train_step(net, shape)
    after = _bn_stats(net)
    changed = [k for k in before if k.endswith("running_mean") and not torch.equal(before[k], after[k])]
    assert len(changed) == sum(k.endswith("running_mean") for k in before)  # every BatchNorm layer moved
    assert any(p.grad is not None for p in net.trunk.parameters())


@pytest.mark.parametrize("arch", ["resnet18", "inception3"])
def test_optimizer_never_holds_a_frozen_parameter(arch):
    cfg = compose_config([f"arch={arch}", "arch.params.embedding_dim=8", "arch.params.freeze=true", "dataset=synthetic",
                          "dataset.image_size=80"])
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    held = [p for group in optimizer.param_groups for p in group["params"]]
    assert held and all(p.requires_grad for p in held)
    frozen = {id(p) for p in model.backbone.trunk.parameters()}
    assert frozen and not frozen & {id(p) for p in held}
    assert {id(p) for p in model.backbone.remap.parameters()} <= {id(p) for p in held}
    assert sorted(id(p) for p in held) == sorted(id(p) for p in model.parameters() if p.requires_grad)


def test_freeze_flows_from_the_config():
    for arch in ("resnet18", "resnet34", "resnet50", "inception3"):
        cfg = compose_config([f"arch={arch}"])
        assert cfg.arch.params.freeze is False and cfg.arch.backbone.freeze is False, arch


def test_inception_shapes_and_options():
    net = TorchvisionInception3(embedding_dim=16).eval()
    assert isinstance(net.trunk.fc, nn.Identity) and net.remap.in_features == 2048 and net.embedding_dim == 16
    assert not net.trunk.transform_input and net.trunk.AuxLogits is None
    with torch.no_grad():
        assert net(torch.rand(1, 3, 80, 80)).shape == (1, 16)
    # the auxiliary classifier needs full-size inputs; its output is not the embedding
    aux = TorchvisionInception3(embedding_dim=4, aux_logits=True, freeze=True).train()
    assert aux.trunk.AuxLogits is not None
    assert aux(torch.rand(1, 3, 299, 299)).shape == (1, 4)
    gray = TorchvisionInception3(embedding_dim=8, in_channels=1).eval()
    with torch.no_grad():
        assert gray(torch.rand(2, 1, 75, 75)).shape == (2, 8)
    with pytest.raises(ConfigError, match="at least 75") as info:
        gray(torch.rand(2, 1, 28, 28))
    assert "\n" not in str(info.value)


def test_inception_pretrained_weights_load_without_fc(monkeypatch):
    reference = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict()
    reference = {k: torch.full_like(v, 0.5) if v.is_floating_point() else v for k, v in reference.items()}
    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", lambda self, *a, **k: reference)
    net = TorchvisionInception3(embedding_dim=8, pretrained=True, freeze=True)
    assert torch.all(net.trunk.Conv2d_1a_3x3.conv.weight == 0.5)
    assert torch.all(net.trunk.Mixed_7c.branch1x1.conv.weight == 0.5)
    assert not torch.all(net.remap.weight == 0.5) and net.remap.weight.requires_grad
    with_aux = TorchvisionInception3(embedding_dim=8, pretrained=True, aux_logits=True)
    assert torch.all(with_aux.trunk.AuxLogits.fc.weight == 0.5)


def test_pretrained_offline_is_one_clear_line(monkeypatch):
    def offline(self, *args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(RuntimeError, match="arch.params.pretrained") as info:
        TorchvisionInception3(embedding_dim=8, pretrained=True)
    assert "\n" not in str(info.value)


def test_freezing_a_new_stem_over_pretrained_weights_is_refused(monkeypatch):
    def never(self, *args, **kwargs):
        raise AssertionError("refused before any download")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", never)
    with pytest.raises(ConfigError, match="first_conv_3x3=false"):
        TorchvisionResNet(depth=18, embedding_dim=8, pretrained=True, freeze=True, first_conv_3x3=True)
    with pytest.raises(ConfigError, match="in_channels=1"):
        TorchvisionResNet(depth=18, embedding_dim=8, pretrained=True, freeze=True, first_conv_3x3=False,
                          in_channels=1)
    with pytest.raises(ConfigError, match="in_channels=1"):
        TorchvisionInception3(embedding_dim=8, pretrained=True, freeze=True, in_channels=1)
