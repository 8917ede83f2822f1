"""The spherization paper's architectures (simple_fnn, lenet5, vgg, vis_cnn, convnet4_fewshot, resnet12_wide):
baseline vs spherized shapes through the config, the VGG layouts against torchvision, and short training runs."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from tests.conftest import FAST, compose_config
from vmf_embeddings.archs.fewshot_nets import ConvNet4FewShot, ResNet12Wide
from vmf_embeddings.archs.spherization_nets import LeNet5, SimpleFNN, VisCNN
from vmf_embeddings.archs.vgg import VGG, WIDTHS
from vmf_embeddings.build import Spherized, build_model
from vmf_embeddings.errors import ConfigError
from vmf_embeddings.layers.spherization import Spherization, spherization_modules

# arch -> (embedding_dim, dataset overrides, input shape)
ARCHS = {
    "simple_fnn": (300, ["dataset=digits"], (1, 28, 28)),
    "lenet5": (84, ["dataset=digits"], (1, 28, 28)),
    "vis_cnn": (2, ["dataset=digits"], (1, 28, 28)),
    "vgg": (4096, ["dataset=synthetic", "dataset.image_size=32"], (1, 32, 32)),
    "convnet4_fewshot": (64, ["dataset=synthetic", "dataset.image_size=84"], (1, 84, 84)),
    "resnet12_wide": (640, ["dataset=synthetic", "dataset.image_size=80"], (1, 80, 80)),
}


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_baseline_and_spherized_shapes_through_the_config(arch):
    dim, overrides, shape = ARCHS[arch]
    x = torch.rand(3, *shape)
    seen = {}
    for spherize in (False, True):
        cfg = compose_config([f"arch={arch}", f"arch.spherize={str(spherize).lower()}", *overrides])
        assert cfg.arch.spherize is spherize and cfg.arch.params.embedding_dim == dim
        torch.manual_seed(0)
        model = build_model(cfg).eval()
        assert not isinstance(model.backbone, Spherized)  # handles_spherize: built by the arch, not appended
        assert model.backbone.embedding_dim == dim and model.backbone.output_dim == dim + spherize
        with torch.no_grad():
            f = model(x)
            logits = model.head.logits(f)
        assert f.shape == (3, dim + spherize) and logits.shape == (3, 10)
        sph = spherization_modules(model)
        assert len(sph) == int(spherize)
        if spherize:
            assert sph[0].n == dim and float(sph[0].scaling.detach()) == 5.0  # conf/config.yaml spherization.*
            torch.testing.assert_close(f.norm(dim=1), torch.full((3,), 5.0), rtol=1e-5, atol=1e-5)
            assert (f >= 0).all()
        seen[spherize] = f.shape[1]
    assert seen[True] == seen[False] + 1


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_embedding_dim_is_free_on_the_default_dataset(arch):
    """As tests/test_configs.py builds every arch: arch.params.embedding_dim=8 on 28-px digits."""
    cfg = compose_config([f"arch={arch}", "arch.params.embedding_dim=8", "arch.spherize=true"])
    model = build_model(cfg).eval()
    assert model.backbone.embedding_dim == 8
    with torch.no_grad():
        assert model(torch.rand(2, 1, 28, 28)).shape == (2, 9)


def test_spherization_options_reach_the_arch():
    cfg = compose_config(["arch=lenet5", "arch.spherize=true", "spherization.scaling=1", "spherization.radius=2",
                          "spherization.learn_scaling=false"])
    (sph,) = spherization_modules(build_model(cfg))
    assert float(sph.scaling) == 1.0 and float(sph.radius) == 2.0
    assert not isinstance(sph.scaling, nn.Parameter)


@pytest.mark.parametrize("depth", [11, 16, 19])
def test_vgg_width_c_features_match_torchvision(depth):
    ours = VGG(embedding_dim=8, hidden=8, depth=depth, width="C", in_channels=3, image_size=32)
    reference = make_layers(cfgs[{11: "A", 16: "D", 19: "E"}[depth]], batch_norm=True)  # vgg*_bn's features
    assert _count(ours.features) == _count(reference)
    assert [tuple(v.shape) for v in ours.features.state_dict().values()] == \
        [tuple(v.shape) for v in reference.state_dict().values()]
    assert [type(m) for m in ours.features] == [type(m) for m in reference]
    convs = [_count(m) for m in ours.features if isinstance(m, nn.Conv2d)]
    assert convs == [_count(m) for m in reference if isinstance(m, nn.Conv2d)]
    if depth == 11:  # torchvision.models.vgg11_bn().features: 9,220,480 conv + 5,504 BN parameters
        assert sum(convs) == 9_220_480 and _count(ours.features) == 9_225_984


def test_vgg_classifier_has_default_init_and_features_torchvision_init():
    torch.manual_seed(0)
    net = VGG(embedding_dim=512, hidden=512, depth=11, width="A", in_channels=3)
    first = net.classifier[0]
    bound = 1 / first.in_features ** 0.5  # nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert float(first.weight.detach().abs().max()) <= bound and float(first.bias.detach().abs().max()) > 0
    conv = net.features[0]
    assert torch.count_nonzero(conv.bias) == 0
    assert float(conv.weight.detach().std()) == pytest.approx((2 / (9 * conv.out_channels)) ** 0.5, rel=0.2)


@pytest.mark.parametrize("width", sorted(WIDTHS))
def test_vgg_widths_set_the_stage_widths(width):
    net = VGG(embedding_dim=8, hidden=8, depth=11, width=width, in_channels=3)
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    # cfg A: 1, 1, 2, 2, 2 convs per stage; stage 5 reuses the fourth width
    stage_widths = [convs[0].out_channels, convs[1].out_channels, convs[2].out_channels, convs[4].out_channels,
                    convs[6].out_channels]
    assert stage_widths == [*WIDTHS[width], WIDTHS[width][3]]
    assert net.flat_dim == WIDTHS[width][3] == net.classifier[0].in_features
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 8)


def test_vgg_one_channel_variant():
    net = VGG(embedding_dim=8, hidden=8, depth=11, width="A", one_channel=True, in_channels=1, image_size=28).eval()
    pools = [m for m in net.features if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))]
    assert len(pools) == 5 and all(isinstance(m, nn.AvgPool2d) for m in pools)
    assert net.features[0].in_channels == 1 and net.flat_dim == 128  # 28 px resized to 32 -> 1 x 1
    seen = []
    net.features.register_forward_hook(lambda module, args, out: seen.append((args[0].shape, out.shape)))
    with torch.no_grad():
        assert net(torch.rand(2, 1, 28, 28)).shape == (2, 8)
    assert seen[0][0] == (2, 1, 32, 32) and seen[0][1] == (2, 128, 1, 1)
    standard = VGG(embedding_dim=8, hidden=8, depth=11, width="A", in_channels=1, image_size=32)
    assert not any(isinstance(m, nn.AvgPool2d) for m in standard.features)
    with pytest.raises(ConfigError, match="one_channel"):
        VGG(one_channel=True, in_channels=3)
    on_28 = VGG(embedding_dim=8, hidden=8, width="A", in_channels=1, image_size=28).eval()  # resized too
    assert on_28.resize_to == 32 and on_28.flat_dim == 128 and on_28(torch.rand(2, 1, 28, 28)).shape == (2, 8)
    assert VGG(embedding_dim=8, hidden=8, width="A", image_size=64).flat_dim == 128 * 4  # larger: not resized
    with pytest.raises(ConfigError, match="depth"):
        VGG(depth=12)
    with pytest.raises(ConfigError, match="width"):
        VGG(width="F")


def test_spherized_vgg_has_no_relu_or_dropout_before_the_spherization():
    baseline = VGG(embedding_dim=16, hidden=32, width="A")
    spherized = VGG(embedding_dim=16, hidden=32, width="A", spherize=True, spherization={"scaling": 5.0})
    assert [type(m) for m in baseline.classifier] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear, nn.ReLU, nn.Dropout]
    assert [type(m) for m in spherized.classifier] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear, Spherization]
    assert spherized.classifier[3].out_features == 16 and spherized.classifier[4].n == 16
    # train mode: nothing random after the embedding layer, so the spherized output is the embedding layer's
    # pre-activation mapped to the sphere
    spherized.train()
    z = []
    spherized.classifier[3].register_forward_hook(lambda module, args, out: z.append(out))
    out = spherized(torch.rand(4, 3, 32, 32))
    torch.testing.assert_close(out, spherized.classifier[4](z[0]))


@pytest.mark.parametrize("net_class, dim", [(SimpleFNN, 300), (LeNet5, 84), (VisCNN, 2)])
def test_mnist_nets_drop_the_relu_after_the_embedding_when_spherized(net_class, dim):
    baseline, spherized = net_class(), net_class(spherize=True)
    tail_b = list(baseline.modules())[-2:]
    tail_s = list(spherized.modules())[-2:]
    assert isinstance(tail_b[0], nn.Linear) and tail_b[0].out_features == dim and isinstance(tail_b[1], nn.ReLU)
    assert isinstance(tail_s[0], nn.Linear) and isinstance(tail_s[1], Spherization) and tail_s[1].n == dim
    x = torch.rand(5, 1, 28, 28)
    assert (baseline.eval()(x) >= 0).all() and spherized.eval()(x).shape == (5, dim + 1)
    assert _count(spherized) == _count(baseline) + 1  # the learnt scaling


def test_paper_layer_sizes():
    fnn = SimpleFNN()
    assert [(m.in_features, m.out_features) for m in fnn.modules() if isinstance(m, nn.Linear)] == \
        [(784, 500), (500, 300)]
    lenet = LeNet5()
    assert [(m.in_features, m.out_features) for m in lenet.head if isinstance(m, nn.Linear)] == [(400, 120), (120, 84)]
    assert [m.padding for m in lenet.features if isinstance(m, nn.Conv2d)] == [(2, 2), (0, 0)]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in lenet.modules())
    vis = VisCNN(embedding_dim=3)
    assert [m.out_channels for m in vis.features if isinstance(m, nn.Conv2d)] == [32, 32, 64, 64, 128, 128]
    assert vis.head[0].in_features == 6272 and vis.head[2].out_features == 3


def test_fewshot_convnet4():
    base = ConvNet4FewShot(in_channels=3).eval()
    sph = ConvNet4FewShot(in_channels=3, spherize=True, spherization={"scaling": 5.0, "radius": 5.0}).eval()
    assert isinstance(base.pool, nn.MaxPool2d) and base.pool.kernel_size == 5
    conv, bn = sph.pool
    assert conv.kernel_size == (5, 5) and conv.stride == (5, 5) and isinstance(bn, nn.BatchNorm2d)
    x = torch.rand(2, 3, 84, 84)
    with torch.no_grad():
        assert base(x).shape == (2, 64) and sph(x).shape == (2, 65)
    assert _count(base) == 113_088  # = arch=conv4 on 84 px (the same four blocks)
    small = ConvNet4FewShot(embedding_dim=32, in_channels=1, image_size=28, spherize=True).eval()  # 1 x 1 map
    assert small.pool[0].kernel_size == (1, 1) and small.encoder[3][0].out_channels == 32
    with torch.no_grad():
        assert small(torch.rand(2, 1, 28, 28)).shape == (2, 33)
    wide = ConvNet4FewShot(embedding_dim=64, image_size=160)  # 10 x 10 map -> MaxPool(5) -> 2 x 2 x 16 channels
    assert wide.pool.kernel_size == 5 and wide.encoder[3][0].out_channels == 16
    with pytest.raises(ConfigError, match="multiple of 4"):
        ConvNet4FewShot(embedding_dim=30, image_size=160)
    with pytest.raises(ConfigError, match="16 px"):
        ConvNet4FewShot(image_size=12)


def test_fewshot_resnet12_wide_layout():
    net = ResNet12Wide(in_channels=3)
    assert net.stem[0].out_channels == 80
    assert [len(stage) for stage in net.layers] == [4, 4, 4]
    assert [stage[0].conv1.out_channels for stage in net.layers] == [160, 320, 640]
    assert all(stage[0].conv1.stride == (2, 2) and stage[0].downsample is not None for stage in net.layers)
    assert net.bn_sph is None and net.spherization is None
    small = dict(widths=(8, 16, 32), blocks=(2, 1, 1), embedding_dim=32, in_channels=3)
    base, sph = ResNet12Wide(**small).eval(), ResNet12Wide(spherize=True, **small).eval()
    assert isinstance(sph.bn_sph, nn.BatchNorm2d) and sph.spherization.n == 32
    x = torch.rand(2, 3, 80, 80)
    with torch.no_grad():
        assert base(x).shape == (2, 32) and sph(x).shape == (2, 33)
        assert (base(x) >= 0).all()  # pooled post-ReLU features
    with pytest.raises(ConfigError, match="last width"):
        ResNet12Wide(embedding_dim=64, **{k: v for k, v in small.items() if k != "embedding_dim"})


def _train(tmp_path, name, overrides):
    from vmf_embeddings.main import run

    run(compose_config(FAST + ["mode.projector=false", "eval.clustering=false", "eval.plots=false", *overrides]),
        tmp_path / name)
    history = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    return json.loads((tmp_path / name / "metrics.json").read_text())["test"], history


# Measured (digits, 270 test images, Adam 1e-3, 15 epochs x 20 episodes, seeds 1234 and 1..7): baseline / spherized
# test accuracy simple_fnn 0.963-0.981 / 0.974-0.985, lenet5 0.963-0.989 / 0.981-0.993; spherized - baseline in
# [0, +0.0148] (simple_fnn) and [+0.0037, +0.0185] (lenet5), i.e. at most 5 test images apart.
@pytest.mark.parametrize("arch", ["simple_fnn", "lenet5"])
def test_spherized_accuracy_matches_the_baseline_on_digits(tmp_path, arch):
    budget = [f"arch={arch}", "optimizer=adam", "mode.learning_rate=1e-3", "mode.epochs=15", "mode.patience=100"]
    base, _ = _train(tmp_path, "base", budget)
    sph, _ = _train(tmp_path, "sph", budget + ["arch.spherize=true"])
    assert base["accuracy"] >= 0.95 and sph["accuracy"] >= 0.95, (base["accuracy"], sph["accuracy"])
    assert sph["accuracy"] >= base["accuracy"] - 0.01, (base["accuracy"], sph["accuracy"])  # within one point


# Measured (width A, 256-d, 5 epochs x 10 episodes, Adam 1e-3, seeds 1234 and 1..3): the training loss falls every
# epoch (baseline 1.9 -> 0.002, spherized 2.0 -> 0.25) and test accuracy is 0.995-1.0 for both (chance 0.1). With
# fewer steps the BatchNorm running statistics lag and validation accuracy can still sit at chance. CNN-9 (narrow
# widths, same budget) is compared the same way.
def _baseline_and_spherized(tmp_path, arch: str, budget: list, epochs: int) -> dict:
    """Train `arch` without and with spherization; each run must log `epochs` epochs and halve its training loss.
    Returns {spherize: test accuracy}."""
    results = {}
    for spherize in (False, True):
        test, history = _train(tmp_path, f"{arch}_{spherize}", budget + [f"arch.spherize={str(spherize).lower()}"])
        losses = [h["train/loss"] for h in history]
        assert len(losses) == epochs and losses[-1] < 0.5 * losses[0], (spherize, losses)
        results[spherize] = test["accuracy"]
    return results


TINY_32PX = {
    "vgg": ["arch=vgg", "arch.params.width=A", "arch.params.hidden=256", "arch.params.embedding_dim=256"],
    "cnn9": ["arch=cnn9", "arch.params.widths=[16,24,32]"],
}


@pytest.mark.parametrize("arch", sorted(TINY_32PX))
def test_tiny_32px_nets_train_on_synthetic_spherized_within_a_point(tmp_path, arch):
    budget = TINY_32PX[arch] + ["dataset=synthetic", "dataset.image_size=32", "mode.epochs=5", "sampler.n_episodes=10",
                                "mode.patience=100", "optimizer=adam", "mode.learning_rate=1e-3"]
    results = _baseline_and_spherized(tmp_path, arch, budget, epochs=5)
    assert results[False] >= 0.8 and results[True] >= results[False] - 0.01, results


# vis_cnn: the paper's 2-d (or 3-d) embedding is a bottleneck that trains slowly; no bug in the arch or the head.
# After the baseline's ReLU, samples whose two pre-activations are negative sit at the origin (zero logits, no
# gradient), so whole digits merge and accuracy sits on plateaus at multiples of 0.1 for hundreds of steps. Measured
# on digits, Adam 1e-3, 2-d: 0.10-0.69 after 300-600 steps depending on the seed (28, 16 or 8 px), 0.88 after 3,000
# (spherized 0.89); 3-d: 0.79 after 300; lr 3e-3 or 1e-2 kill both units (0.1-0.2); a bias in the head (the
# original's output layer has one) gives 0.40 / 0.88 after 600. The original trains ~19k MNIST steps. So the
# comparison uses a 16-d embedding at the digits' native 8 px (2 x 2 x 128 = 512 flattened inputs; every layer of the
# arch kept). Measured (4 epochs x 20 episodes, Adam 1e-3, seeds 1234 and 1..7, 270 test images): baseline
# 0.9815-0.9926, spherized 0.9852-0.9963, spherized - baseline in [0, +0.0074].
def test_spherized_vis_cnn_matches_the_baseline_on_digits(tmp_path):
    budget = ["arch=vis_cnn", "arch.params.embedding_dim=16", "dataset.image_size=8", "optimizer=adam",
              "mode.learning_rate=1e-3", "mode.epochs=4", "mode.patience=100"]
    base, _ = _train(tmp_path, "base", budget)
    sph, _ = _train(tmp_path, "sph", budget + ["arch.spherize=true"])
    assert base["accuracy"] >= 0.95 and sph["accuracy"] >= 0.95, (base["accuracy"], sph["accuracy"])
    assert sph["accuracy"] >= base["accuracy"] - 0.01, (base["accuracy"], sph["accuracy"])  # within one point


# The few-shot nets, narrow, on 16-px synthetic images with 100 per class and split (1,000 test images; 16 px is
# ConvNet-4's smallest: four halvings to a 1 x 1 map; ResNet: 2 x 2 before the pool). Measured (10 epochs x 20
# episodes, Adam 1e-3, seeds 1234 and 1..7): convnet4_fewshot baseline 0.999-1.0 / spherized 0.997-1.0,
# resnet12_wide 0.998-1.0 / 0.998-1.0; spherized - baseline in [-0.002, +0.001]. The ResNet runs at
# spherization.scaling=1: its BN'd features are averaged over 2 x 2 pixels here (10 x 10 at the original's 80 px),
# and at s = 5 one seed in six kept a class merged (0.91). Harder settings, measured and not asserted: on digits
# (270 test images, 240-320 steps, training accuracy 1.0 for all) the spherized nets mostly trail, by up to 1.8
# points (a third to a half of the seeds more than one point); on synthetic with 20 images per class they reach
# 0.66-0.97 against the baselines' 0.975-1.0; ProtoNet (cosine) on held-out digits 0.51-0.61 against 0.65-0.75.
TINY_FEWSHOT = {
    "convnet4_fewshot": ["arch=convnet4_fewshot", "arch.params.width=16", "arch.params.embedding_dim=32"],
    "resnet12_wide": ["arch=resnet12_wide", "arch.params.widths=[8,16,32]", "arch.params.blocks=[1,1,1]",
                      "arch.params.embedding_dim=32", "spherization.scaling=1"],
}


@pytest.mark.parametrize("arch", sorted(TINY_FEWSHOT))
def test_fewshot_nets_train_on_synthetic_spherized_within_a_point(tmp_path, arch):
    budget = TINY_FEWSHOT[arch] + ["dataset=synthetic", "dataset.image_size=16", "dataset.loader.n_per_class=100",
                                   "mode.epochs=10", "sampler.n_episodes=20", "mode.patience=100", "optimizer=adam",
                                   "mode.learning_rate=1e-3"]
    results = _baseline_and_spherized(tmp_path, arch, budget, epochs=10)
    assert results[False] >= 0.95 and results[True] >= results[False] - 0.01, results


@pytest.mark.parametrize("distance", ["squared_euclidean", "cosine"])
def test_spherized_protonet_runs_few_shot_episodes(tmp_path, distance):
    """The paper's few-shot rows, on the bundled digits: ConvNet-4 spherized, ProtoNet episodes, few-shot test."""
    from vmf_embeddings.main import run

    run(compose_config(FAST + ["experiment=protonets_digits_fewshot", "arch=convnet4_fewshot", "arch.spherize=true",
                               f"method.params.distance={distance}", "mode.epochs=2", "sampler.n_episodes=5",
                               "eval.val_episodes=5", "eval.few_shot={n_way: 5, k_shot: 5, n_query: 5, n_episodes: 20}",
                               "mode.projector=false"]), tmp_path / "run")
    test = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert 0.2 < test["fewshot_5way5shot"] <= 1.0, test  # above chance (0.2) after 10 episodes
