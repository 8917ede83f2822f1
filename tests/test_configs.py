"""Every option of every config group composes and instantiates; the seed's commands are accepted."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.conftest import CONF_DIR, compose_config
from vmf_embeddings.build import build_model, build_optimizer, build_sampler, build_scheduler
from vmf_embeddings.validate import validate

GROUPS = ["mode", "dataset", "arch", "method", "sampler"]


def options(group: str):
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def test_every_group_has_options():
    for group in GROUPS:
        assert options(group), group


def test_option_name_matches_file_stem():
    for group in GROUPS:
        for option in options(group):
            cfg = compose_config([f"{group}={option}"] + (["method=vmf_softmax"] if option == "vmf_softmax" else []))
            assert cfg[group].name == option, (group, option)


@pytest.mark.parametrize("method", options("method"))
def test_every_method_builds_with_default_arch(method):
    cfg = compose_config([f"method={method}"])
    validate(cfg)
    model = build_model(cfg)
    x = torch.rand(4, 1, 28, 28)
    features = model(x)
    assert features.shape == (4, cfg.arch.params.embedding_dim)
    if cfg.method.task == "classification":
        logits = model.head.logits(features)
        assert logits.shape == (4, cfg.arch.params.n_classes)


@pytest.mark.parametrize("arch", options("arch"))
def test_every_arch_instantiates(arch):
    cfg = compose_config([f"arch={arch}", "arch.params.embedding_dim=8"])
    backbone = instantiate(cfg.arch.backbone)
    assert backbone.embedding_dim == 8


@pytest.mark.parametrize("sampler", options("sampler"))
def test_every_sampler_instantiates(sampler):
    cfg = compose_config([f"sampler={sampler}"])
    labels = torch.arange(50) % 5
    batches = list(build_sampler(cfg, labels, seed=0))
    assert batches and all(torch.as_tensor(b).dtype == torch.long for b in batches)


@pytest.mark.parametrize("mode", options("mode"))
def test_every_mode_composes(mode):
    cfg = compose_config([f"mode={mode}"])
    validate(cfg)


@pytest.mark.parametrize("dataset", options("dataset"))
def test_every_dataset_config_is_complete(dataset):
    cfg = compose_config([f"dataset={dataset}"])
    for key in ("name", "dataset_path", "n_train_classes", "open_set", "loader", "channels", "image_size"):
        assert key in cfg.dataset, (dataset, key)
    assert cfg.dataset.loader._target_.startswith("vmf_embeddings.")
    assert cfg.arch.params.n_classes == cfg.dataset.n_train_classes


def test_optimizer_groups_follow_the_original():
    cfg = compose_config(["method=vmf_softmax", "mode.weight_decay=0.1", "mode.temp_learning_rate=0.003"])
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    build_scheduler(cfg, optimizer)
    seen = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters() if p.requires_grad)  # each exactly once
    temperature = [g for g in optimizer.param_groups if g.get("name") == "temperature"]
    assert len(temperature) == 1 and temperature[0]["params"] == [model.head.temp]
    assert temperature[0]["lr"] == 0.003 and temperature[0]["momentum"] == 0 and temperature[0]["weight_decay"] == 0
    decayed = [p for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]]
    assert decayed and all(p.ndim > 1 for p in decayed)
    assert all(p is not model.head.classifier.weight for p in decayed)  # class weights: no decay (note 7.6)


def test_targets_stay_in_whitelisted_namespaces():
    """Ready for Hydra 1.4's _target_ whitelist: only our package, torch and torchvision."""
    allowed = ("vmf_embeddings.", "torch.", "torchvision.", "pytorch_metric_learning.")
    for path in Path(CONF_DIR).rglob("*.yaml"):
        for line in path.read_text().splitlines():
            if line.strip().startswith("_target_:"):
                target = line.split(":", 1)[1].strip()
                assert target.startswith(allowed), (path, target)


# Every main.py command of seed 004's README, verbatim (train and get_embeddings, all seven datasets).
SEED_COMMANDS = """
name=mnist_vmf_softmax mode.learning_rate=1.0 mode.nesterov=True mode.momentum=0.99 mode.temp_learning_rate=0.001 arch=n_digit_mnist arch.params.embedding_dim=3 arch.params.n_classes=10 arch.params.use_vmf=True arch.params.learn_temp=True sampler=episodic sampler.n_episodes=250 sampler.n_classes=10 sampler.n_samples=13 method=vmf_softmax dataset=mnist
name=fashion_mnist_vmf_softmax mode.learning_rate=0.05 mode.nesterov=False mode.momentum=0.99 mode.temp_learning_rate=0.001 arch=n_digit_mnist arch.params.embedding_dim=3 arch.params.n_classes=10 arch.params.use_vmf=True arch.params.learn_temp=True sampler=episodic sampler.n_episodes=250 sampler.n_classes=10 sampler.n_samples=13 method=vmf_softmax dataset=fashion_mnist
name=cifar10_vmf_softmax mode.learning_rate=0.5 mode.nesterov=False mode.momentum=0.9 mode.temp_learning_rate=0.001 mode.weight_decay=0.0001 arch=resnet50 arch.params.embedding_dim=128 arch.params.n_classes=10 arch.params.use_vmf=True arch.params.learn_temp=True sampler=episodic sampler.n_episodes=250 sampler.n_classes=10 sampler.n_samples=26 method=vmf_softmax dataset=cifar10
name=cifar100_vmf_softmax mode.learning_rate=0.1 mode.nesterov=True mode.momentum=0.99 mode.temp_learning_rate=0.01 mode.weight_decay=0.0001 arch=resnet50 arch.params.embedding_dim=128 arch.params.n_classes=100 arch.params.use_vmf=True arch.params.learn_temp=True sampler=episodic sampler.n_episodes=250 sampler.n_classes=32 sampler.n_samples=8 method=vmf_softmax dataset=cifar100
name=cars196_vmf_softmax mode.learning_rate=0.0001 mode.nesterov=False mode.momentum=0.9 mode.temp_learning_rate=0.01 mode.weight_decay=0.0001 arch=resnet50 arch.params.embedding_dim=512 arch.params.n_classes=83 arch.params.set_bn_eval=True arch.params.pretrained=True arch.params.first_conv_3x3=False arch.params.use_vmf=True arch.params.learn_temp=True arch.params.kappa_confidence=0.7 sampler=episodic sampler.n_episodes=100 sampler.n_classes=32 sampler.n_samples=4 method=vmf_softmax dataset=cars196
name=cub200_vmf_softmax mode.learning_rate=0.001 mode.nesterov=False mode.momentum=0.9 mode.temp_learning_rate=0.01 mode.weight_decay=0.0001 arch=resnet50 arch.params.embedding_dim=512 arch.params.n_classes=85 arch.params.set_bn_eval=True arch.params.pretrained=True arch.params.first_conv_3x3=False arch.params.use_vmf=True arch.params.learn_temp=True arch.params.kappa_confidence=0.7 arch.params.init_temp=-2.773 sampler=episodic sampler.n_episodes=100 sampler.n_classes=32 sampler.n_samples=4 method=vmf_softmax dataset=cub200
name=sop_vmf_softmax mode.learning_rate=0.0001 mode.nesterov=True mode.momentum=0.9 mode.temp_learning_rate=0.01 mode.weight_decay=0.0005 arch=resnet50 arch.params.embedding_dim=512 arch.params.n_classes=9620 arch.params.set_bn_eval=True arch.params.pretrained=True arch.params.first_conv_3x3=False arch.params.use_vmf=True arch.params.learn_temp=True arch.params.kappa_confidence=0.7 arch.params.init_temp=-2.773 sampler=episodic sampler.n_episodes=500 sampler.n_classes=32 sampler.n_samples=2 method=vmf_softmax dataset=sop
arch=n_digit_mnist arch.params.embedding_dim=3 arch.params.n_classes=10 arch.params.use_vmf=True arch.params.learn_temp=True method=vmf_softmax dataset=mnist name=mnist_vmf_softmax mode=get_embeddings
arch=n_digit_mnist arch.params.embedding_dim=3 arch.params.n_classes=10 arch.params.use_vmf=True arch.params.learn_temp=True method=vmf_softmax dataset=fashion_mnist name=fashion_mnist_vmf_softmax mode=get_embeddings
arch=resnet50 arch.params.embedding_dim=128 arch.params.n_classes=10 arch.params.use_vmf=True arch.params.learn_temp=True method=vmf_softmax dataset=cifar10 name=cifar10_vmf_softmax mode=get_embeddings
arch=resnet50 arch.params.embedding_dim=128 arch.params.n_classes=100 arch.params.use_vmf=True arch.params.learn_temp=True method=vmf_softmax dataset=cifar100 name=cifar100_vmf_softmax mode=get_embeddings
arch=resnet50 arch.params.embedding_dim=512 arch.params.n_classes=83 arch.params.set_bn_eval=True arch.params.pretrained=True arch.params.first_conv_3x3=False arch.params.use_vmf=True arch.params.learn_temp=True arch.params.kappa_confidence=0.7 method=vmf_softmax dataset=cars196 name=cars196_vmf_softmax mode=get_embeddings
arch=resnet50 arch.params.embedding_dim=512 arch.params.n_classes=85 arch.params.set_bn_eval=True arch.params.pretrained=True arch.params.first_conv_3x3=False arch.params.use_vmf=True arch.params.learn_temp=True arch.params.kappa_confidence=0.7 arch.params.init_temp=-2.773 method=vmf_softmax dataset=cub200 name=cub200_vmf_softmax mode=get_embeddings
arch=resnet50 arch.params.embedding_dim=512 arch.params.n_classes=9620 arch.params.set_bn_eval=True arch.params.pretrained=True arch.params.first_conv_3x3=False arch.params.use_vmf=True arch.params.learn_temp=True arch.params.kappa_confidence=0.7 arch.params.init_temp=-2.773 method=vmf_softmax dataset=sop name=sop_vmf_softmax mode=get_embeddings
""".strip().splitlines()
# The seed README's CUB get_embeddings example says dataset=cars196 with n_classes=85 (a slip, note 7.11);
# it is listed above with dataset=cub200, and the slip itself must be refused with a clear message:
SEED_CUB_SLIP = (
    "arch=resnet50 arch.params.embedding_dim=512 arch.params.n_classes=85 arch.params.set_bn_eval=True "
    "arch.params.pretrained=True arch.params.first_conv_3x3=False arch.params.use_vmf=True "
    "arch.params.learn_temp=True arch.params.kappa_confidence=0.7 arch.params.init_temp=-2.773 "
    "method=vmf_softmax dataset=cars196 name=cars196_vmf_softmax mode=get_embeddings"
)


@pytest.mark.parametrize("command", SEED_COMMANDS, ids=[c.split()[0] + "-" + c.split()[-1] for c in SEED_COMMANDS])
def test_seed_commands_compose_unchanged(command):
    overrides = shlex.split(command)
    cfg = compose_config(overrides)
    validate(cfg)
    assert cfg.method.name == "vmf_softmax" and cfg.arch.params.use_vmf
    for override in overrides:
        key, value = override.split("=", 1)
        if "." in key:
            got = OmegaConf.select(cfg, key)
            assert str(got).lower() == value.lower() or float(got) == float(value), (key, got, value)


def test_seed_cub_slip_is_refused_clearly():
    from vmf_embeddings.errors import ConfigError

    cfg = compose_config(shlex.split(SEED_CUB_SLIP))
    with pytest.raises(ConfigError, match=r"arch.params.n_classes=85 .*cars196.*83"):
        validate(cfg)


TRAIN_COMMANDS = [c for c in SEED_COMMANDS if "mode=get_embeddings" not in c]


@pytest.mark.parametrize("command", TRAIN_COMMANDS, ids=[c.split()[-1] for c in TRAIN_COMMANDS])
def test_vmf_experiment_files_equal_the_seed_commands(command):
    """`experiment=vmf_<dataset>` composes to exactly the config of the seed README's command, and its
    `mode=get_embeddings` form lands in the same run dir as the README's extraction command."""
    from hydra.core.hydra_config import HydraConfig

    dataset = command.split("dataset=")[1].split()[0]
    from_command = compose_config(shlex.split(command))
    from_file = compose_config([f"experiment=vmf_{dataset}"])
    assert OmegaConf.to_container(from_file, resolve=True) == OmegaConf.to_container(from_command, resolve=True)
    extract_command = next(c for c in SEED_COMMANDS if "mode=get_embeddings" in c and f"dataset={dataset} " in c)

    def run_dir(overrides):
        cfg = compose_config(overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        validate(cfg)
        return OmegaConf.to_container(cfg.hydra.run, resolve=True)["dir"]

    assert run_dir([f"experiment=vmf_{dataset}", "mode=get_embeddings"]) == run_dir(shlex.split(extract_command))
