"""Every option of every config group composes and instantiates; the vMF original's commands are accepted."""

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

GROUPS = ["mode", "dataset", "arch", "method", "sampler", "optimizer", "scheduler", "cost"]


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


DETECTION_METHODS = ("faster_rcnn", "repmet_det")  # tests/detection/ builds and trains them


@pytest.mark.parametrize("method", [m for m in options("method") if m not in DETECTION_METHODS])
def test_every_method_builds_with_default_arch(method):
    cfg = compose_config([f"method={method}"])
    validate(cfg)
    model = build_model(cfg)
    x = torch.rand(4, 1, 28, 28)
    features = model(x)
    assert features.shape == (4, cfg.arch.params.embedding_dim)
    if model.head.fits_class_state:  # e.g. ProtoNet class means: the runner fits them from the training split
        from vmf_embeddings.embedding import EmbeddedSplit

        model.head.fit_class_state(EmbeddedSplit(features.detach(), torch.arange(4) % cfg.dataset.n_train_classes))
    if model.head.predicts_classes:
        log_probs = model.head.log_probs(features, n_samples=3, generator=torch.Generator().manual_seed(0))
        assert log_probs.shape == (4, cfg.dataset.n_train_classes)
        torch.testing.assert_close(log_probs.exp().sum(1), torch.ones(4), rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", options("arch"))
def test_every_arch_instantiates(arch):
    cfg = compose_config([f"arch={arch}", "arch.params.embedding_dim=8"])
    if arch == "conv4":  # its embedding size follows the image size: 64-d on 28 px
        with pytest.raises(Exception, match="must equal that"):
            instantiate(cfg.arch.backbone)
        cfg = compose_config([f"arch={arch}"])
    backbone = instantiate(cfg.arch.backbone)
    assert backbone.embedding_dim == cfg.arch.params.embedding_dim


@pytest.mark.parametrize("sampler", options("sampler"))
def test_every_sampler_instantiates(sampler):
    cfg = compose_config([f"sampler={sampler}"])
    labels = torch.arange(200) % 5  # 40 images per class: enough for 5-way 5-shot 15-query episodes
    built = build_sampler(cfg, labels, seed=0)
    if hasattr(built, "attach"):  # sampler=magnet draws from a head's cluster index (method=magnet attaches itself)
        from vmf_embeddings.methods.magnet import MagnetLoss

        head = MagnetLoss(embedding_dim=2, n_classes=5, k_clusters=2, m_clusters=4, d_per_cluster=5)
        head.refresh(torch.randn(200, 2, generator=torch.Generator().manual_seed(0)), labels)
        built.attach(head)
    batches = list(built)
    assert batches and all(torch.as_tensor(b).dtype == torch.long for b in batches)


@pytest.mark.parametrize("mode", options("mode"))
def test_every_mode_composes(mode):
    cfg = compose_config([f"mode={mode}"])
    validate(cfg)


@pytest.mark.parametrize("dataset", options("dataset"))
def test_every_dataset_config_is_complete(dataset):
    cfg = compose_config([f"dataset={dataset}"])
    from vmf_embeddings.schema import REQUIRED_KEYS, check_required_keys

    check_required_keys(cfg)
    for key in REQUIRED_KEYS["dataset"]:
        assert OmegaConf.select(cfg.dataset, key) is not None, (dataset, key)
    assert cfg.dataset.loader._target_.startswith("vmf_embeddings.")
    assert cfg.arch.params.n_classes is None  # the original's key: null unless given, then only checked


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
    assert all(p is not model.head.classifier.weight for p in decayed)  # class weights: no decay (docs/departures.md)


@pytest.mark.parametrize("optimizer, cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                            ("adamw", torch.optim.AdamW)])
def test_optimizer_group_owns_its_kwargs(optimizer, cls):
    """Each option takes its own keyword arguments; the original's mode.* keys feed them in one place."""
    cfg = compose_config(["method=vmf_softmax", f"optimizer={optimizer}", "mode.learning_rate=0.002",
                          "mode.weight_decay=0.01", "mode.temp_learning_rate=0.0005"])
    model = build_model(cfg)
    opt = build_optimizer(cfg, model)
    assert type(opt) is cls
    decay, no_decay, temperature = opt.param_groups
    assert decay["lr"] == 0.002 and decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert temperature["name"] == "temperature" and temperature["lr"] == 0.0005 and temperature["weight_decay"] == 0
    if optimizer == "sgd":
        assert decay["momentum"] == 0.99 and decay["nesterov"] and temperature["momentum"] == 0
    else:
        assert "momentum" not in decay and decay["betas"] == (0.9, 0.999)
    loss = model.head.loss(model(torch.rand(8, 1, 28, 28)), torch.arange(8) % 10)
    loss.backward()
    opt.step()  # every option steps


def test_sgd_drops_nesterov_at_zero_momentum():
    cfg = compose_config(["mode.momentum=0.0", "mode.nesterov=true"])
    assert not build_optimizer(cfg, build_model(cfg)).param_groups[0]["nesterov"]


def test_a_yaml_without_a_required_key_is_named_in_one_line():
    from vmf_embeddings.errors import ConfigError

    cfg = compose_config(["method=normalized_sce"])
    OmegaConf.set_struct(cfg, False)
    del cfg.method["optim"]
    with pytest.raises(ConfigError, match=r"conf/method/normalized_sce.yaml lacks the required key 'method.optim") as info:
        validate(cfg, {"method": "normalized_sce"})
    assert "\n" not in str(info.value)


def test_every_documented_eval_key_is_accepted_on_the_command_line():
    from vmf_embeddings.schema import EVAL_DEFAULTS

    cfg = compose_config(["eval.clustering=false", "eval.cost_matrix=/tmp/cost.npy", "eval.vmf_samples=3",
                          "eval.recall_ks=[1,5]", "eval.few_shot={n_way: 5, k_shot: 1}", "eval.mc_on_train=true"])
    assert cfg.eval.clustering is False and cfg.eval.cost_matrix == "/tmp/cost.npy" and cfg.eval.vmf_samples == 3
    assert list(cfg.eval.recall_ks) == [1, 5] and cfg.eval.few_shot.n_way == 5
    assert set(cfg.eval) == set(EVAL_DEFAULTS)
    readme = (Path(CONF_DIR).parent / "README.md").read_text()
    import re

    for key in set(re.findall(r"(?<![\w./])eval\.([a-z_0-9]+)", readme)):
        assert key in EVAL_DEFAULTS, key


@pytest.mark.parametrize("override, key, value", [
    ("arch.params.init_temp=-1.5", "init_temp", -1.5),
    ("arch.params.learn_temp=false", "learn_temp", False),
    ("arch.params.kappa_confidence=0.7", "kappa_confidence", 0.7),
])
def test_legacy_arch_keys_map_onto_the_method(override, key, value):
    cfg = compose_config(["method=vmf_softmax", override])
    validate(cfg)
    assert cfg.method.params[key] == value and cfg.method.head[key] == value


def test_legacy_keys_on_a_method_without_them_are_refused():
    from vmf_embeddings.errors import ConfigError

    with pytest.raises(ConfigError, match="arch.params.init_temp=-1.0 but method=unnormalized_sce"):
        validate(compose_config(["arch.params.init_temp=-1.0"]))
    validate(compose_config(["arch.params.learn_temp=false"]))  # "no learnt temperature" holds anyway


def test_backbone_options_carry_no_method_keys():
    from vmf_embeddings.legacy import LEGACY_KEYS

    for arch in options("arch"):
        text = (Path(CONF_DIR) / "arch" / f"{arch}.yaml").read_text()
        for key in LEGACY_KEYS:
            assert f"  {key}:" not in text, (arch, key)


def test_get_embeddings_accepts_the_training_command():
    """The training command with mode=get_embeddings appended composes; the training keys are named."""
    from vmf_embeddings.main import training_only

    overrides = ["method=normalized_sce", "mode.epochs=3", "optimizer=adam", "mode=get_embeddings"]
    cfg = compose_config(overrides)
    validate(cfg)
    assert cfg.mode.name == "get_embeddings" and cfg.mode.checkpoint == "best"
    assert training_only(overrides) == ["mode.epochs", "optimizer"]


def test_targets_stay_in_whitelisted_namespaces():
    """Ready for Hydra 1.4's _target_ whitelist: only our package, torch and torchvision."""
    allowed = ("vmf_embeddings.", "torch.", "torchvision.", "pytorch_metric_learning.")
    for path in Path(CONF_DIR).rglob("*.yaml"):
        for line in path.read_text().splitlines():
            if line.strip().startswith("_target_:"):
                target = line.split(":", 1)[1].strip()
                assert target.startswith(allowed), (path, target)


# Every main.py command of the vMF original's README (google-research/vmf_embeddings), verbatim (train and
# get_embeddings, all seven datasets).
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
# The original README's CUB get_embeddings example says dataset=cars196 with n_classes=85 (a slip);
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
    """`experiment=vmf_<dataset>` composes to exactly the config of the original README's command, and its
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


HPN_EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("hpn_*.yaml"))


@pytest.mark.parametrize("experiment", HPN_EXPERIMENTS)
def test_hpn_experiment_files_keep_the_official_settings(experiment):
    """SGD lr 0.01 (OmniArt joint and the lr0.001 year row: 0.001), momentum 0.9 without Nesterov, weight decay
    1e-4, 250 epochs with x0.1 at 100 and 200, seed 100, summed loss, the paper's placement rule."""
    cfg = compose_config([f"experiment={experiment}"])
    validate(cfg)
    lr = 0.001 if ("joint" in experiment or experiment.endswith("lr0.001")) else 0.01
    assert (cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.nesterov) == (lr, 0.9, False)
    assert cfg.optimizer.weight_decay == 0.0001 and cfg.mode.epochs == 250 and cfg.seed == 100
    assert list(cfg.scheduler.milestones) == [100, 200] and cfg.scheduler.gamma == 0.1
    assert cfg.method.params.loss_reduction == "sum"
    if "placement" in cfg.method.params:
        assert cfg.method.params.placement == "paper"
    dim = int(experiment.rsplit("_d", 1)[1]) if "_d" in experiment else (47 if "joint" in experiment else 2)
    assert cfg.arch.params.embedding_dim == dim


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_file_composes_and_validates(experiment):
    cfg = compose_config([f"experiment={experiment}"])
    validate(cfg)
    assert cfg.method.name in experiment or experiment.startswith(("vmf_", "hpn_", "protonets_", "mgp_", "sph_", "det_"))
