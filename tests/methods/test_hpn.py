"""HPN heads: loss, inference, regression and joint-layout invariants, and end-to-end training on
digits through the real runner (configs, run dir, extraction)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import FAST, compose_config
from vmf_embeddings.build import build_model, build_optimizer, build_scheduler
from vmf_embeddings.errors import ConfigError
from vmf_embeddings.methods.hpn import (
    HPNClassifier,
    HPNJoint,
    HPNRegressor,
    decode_targets,
    encode_targets,
)
from vmf_embeddings.validate import validate

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.fixture(autouse=True)
def _prototype_cache(tmp_path, monkeypatch):
    """Keep placements out of the working tree (the configs read VMF_PROTOTYPE_CACHE)."""
    monkeypatch.setenv("VMF_PROTOTYPE_CACHE", str(tmp_path / "prototypes"))


def _classifier(tmp_path, k=10, d=5, **kwargs):
    return HPNClassifier(d, k, cache_dir=str(tmp_path / "cache"), **kwargs)


# ---------------------------------------------------------------- classification
def test_loss_is_zero_on_the_prototype_and_scale_free(tmp_path):
    head = _classifier(tmp_path)
    labels = torch.arange(10)
    on_prototypes = 3.0 * head.prototypes[labels]
    assert head.loss(on_prototypes, labels).item() == pytest.approx(0.0, abs=1e-10)
    z = torch.randn(10, 5)
    assert head.loss(7.0 * z, labels).item() == pytest.approx(head.loss(z, labels).item(), rel=1e-5)
    opposite = -head.prototypes[labels]
    assert head.loss(opposite, labels).item() == pytest.approx(4.0, abs=1e-5)  # l(-p, p) = 4
    per_sample = (1 - F.cosine_similarity(z, head.prototypes[labels])) ** 2
    assert head.loss(z, labels).item() == pytest.approx(per_sample.mean().item(), rel=1e-5)
    assert 0.0 <= head.loss(z, labels).item() <= 4.0


def test_sum_reduction_is_batch_times_mean_gradient(tmp_path):
    """grad(sum) = B * grad(mean); the sum is the originals' reduction."""
    mean_head = _classifier(tmp_path)
    sum_head = _classifier(tmp_path, loss_reduction="sum")
    z = torch.randn(16, 5, requires_grad=True)
    labels = torch.randint(0, 10, (16,))
    (g_mean,) = torch.autograd.grad(mean_head.loss(z, labels), z)
    (g_sum,) = torch.autograd.grad(sum_head.loss(z, labels), z)
    assert torch.allclose(g_sum, 16 * g_mean, atol=1e-6)
    with pytest.raises(ConfigError):
        _classifier(tmp_path, loss_reduction="median")


def test_prediction_on_each_prototype_is_its_class(tmp_path):
    """z on a class's prototype predicts that class (doubles as a collapse check) at a Tammes-regime size,
    plus rescaling invariance."""
    head = _classifier(tmp_path, k=30, d=4)
    labels = torch.arange(30)
    z = 2.5 * head.prototypes
    assert torch.equal(head.logits(z).argmax(1), labels)
    noisy = torch.randn(64, 4)
    assert torch.equal(head.logits(noisy).argmax(1), head.logits(0.1 * noisy).argmax(1))


def test_softmax_scale_gives_the_configured_confidence_on_the_prototype(tmp_path):
    for confidence in (0.9, 0.99):
        head = _classifier(tmp_path, k=30, d=4, prototype_confidence=confidence)
        probs = head.logits(head.prototypes).softmax(1).diagonal()
        assert probs.mean().item() == pytest.approx(confidence, abs=1e-4)
    fixed = _classifier(tmp_path, logit_scale=16.0)
    assert fixed.logit_scale.item() == 16.0
    with pytest.raises(ConfigError):
        _classifier(tmp_path, prototype_confidence=0.05)  # below 1/K


def test_predictions_are_rotation_equivariant(tmp_path):
    """Rotating outputs and prototypes by the same Q leaves the predictions unchanged."""
    head = _classifier(tmp_path, k=12, d=5)
    z = torch.randn(50, 5)
    q, _ = torch.linalg.qr(torch.randn(5, 5))
    before = head.logits(z).argmax(1)
    head.prototypes = head.prototypes @ q
    assert torch.equal(head.logits(z @ q).argmax(1), before)


def test_unlabelled_samples_are_ignored(tmp_path):
    head = _classifier(tmp_path)
    z = torch.randn(6, 5)
    labels = torch.tensor([1, 2, -1, 3, -1, 4])
    keep = labels >= 0
    assert head.loss(z, labels).item() == pytest.approx(head.loss(z[keep], labels[keep]).item(), rel=1e-6)


def test_prototypes_live_in_the_state_dict(tmp_path):
    """Prototypes and the scale are buffers (psmmettes/hpn kept a plain tensor), so a checkpoint restores them."""
    head = _classifier(tmp_path, placement="paper", placement_options={"steps": 200})
    state = head.state_dict()
    assert {"prototypes", "logit_scale"} <= set(state)
    other = _classifier(tmp_path, placement="converged")
    assert not torch.equal(other.prototypes, head.prototypes)
    other.load_state_dict(state)
    assert torch.equal(other.prototypes, head.prototypes)
    assert not any(p.requires_grad for p in head.parameters())
    exported = head.export()
    assert exported["prototypes"].shape == (10, 5) and float(exported["logit_scale"]) > 0


def test_semantic_prior_from_a_word_vector_file(tmp_path):
    np.save(tmp_path / "wtv.npy", np.random.default_rng(0).standard_normal((10, 6)))
    head = _classifier(tmp_path, word_vectors=str(tmp_path / "wtv.npy"))
    cos = head.prototypes @ head.prototypes.t()
    assert (cos - 2 * torch.eye(10)).max().item() < 0.99


# ---------------------------------------------------------------- regression
def test_encode_decode_round_trip():
    lower, upper = 1000.0, 1932.0
    years = torch.linspace(lower, upper, 1001, dtype=torch.float64)
    assert torch.allclose(decode_targets(encode_targets(years, lower, upper), lower, upper), years,
                          rtol=0, atol=1e-9 * (upper - lower))
    assert encode_targets(torch.tensor([lower, upper, (lower + upper) / 2], dtype=torch.float64), lower,
                          upper).tolist() == [-1.0, 1.0, 0.0]
    decoded = decode_targets(torch.linspace(-1, 1, 101, dtype=torch.float64), lower, upper)
    assert torch.all(decoded.diff() > 0) and decoded[0] == lower and decoded[-1] == upper


def test_exact_fit_gives_zero_loss_and_the_target(tmp_path):
    """z = r p_u + sqrt(1 - r^2) q has cos(z, p_u) = r, zero loss, and decodes to y."""
    head = HPNRegressor(4, lower=1000.0, upper=1932.0)
    years = torch.tensor([1000.0, 1250.5, 1466.0, 1900.0, 1932.0])
    r = encode_targets(years.double(), 1000.0, 1932.0).float()
    q = torch.tensor([0.0, 1.0, 0.0, 0.0])
    z = r[:, None] * head.year_prototype + torch.sqrt(1 - r**2)[:, None] * q
    assert head.loss(z, torch.zeros(5, dtype=torch.long), years).item() == pytest.approx(0.0, abs=1e-10)
    assert torch.allclose(head.predict_targets(z), years, atol=1e-3)
    random = head.predict_targets(torch.randn(200, 4) * 10)
    assert random.min() >= 1000.0 and random.max() <= 1932.0


def test_regression_config_is_validated():
    with pytest.raises(ConfigError, match="embedding_dim >= 2"):
        HPNRegressor(1, lower=0.0, upper=1.0)  # D = 1: cos(z, p_u) = sign(z)
    with pytest.raises(ConfigError, match="upper > lower"):
        HPNRegressor(3, lower=5.0, upper=1.0)
    head = HPNRegressor(3)  # builds without bounds (e.g. method=hpn_regression on a dataset without targets)
    with pytest.raises(ConfigError, match="bounds"):
        head.loss(torch.randn(2, 3), torch.zeros(2, dtype=torch.long), torch.ones(2))
    with pytest.raises(ConfigError, match="targets"):
        HPNRegressor(3, lower=0.0, upper=1.0).loss(torch.randn(2, 3), torch.zeros(2, dtype=torch.long))


def test_regression_exports_bounds_and_opposite_prototypes():
    head = HPNRegressor(3, lower=0.0, upper=9.0)
    out = head.export()
    assert np.allclose(out["prototypes"], [[1, 0, 0], [-1, 0, 0]]) and np.allclose(out["bounds"], [0, 9])
    assert set(head.export_batch(torch.randn(4, 3))) == {"target_cosine"}
    assert "bounds" in head.state_dict()


# ---------------------------------------------------------------- joint
def test_joint_layout_and_task_weights(tmp_path):
    kwargs = dict(lower=0.0, upper=9.0, cache_dir=str(tmp_path))
    z = torch.randn(8, 6)
    labels = torch.randint(0, 5, (8,))
    targets = torch.rand(8) * 9
    joint = HPNJoint(6, 5, task_weight=0.25, **kwargs)
    full = joint.export()["prototypes"]
    assert full.shape == (5, 6) and np.allclose(full @ joint.year_prototype.numpy(), 0.0)  # orthogonal to e_0
    regression = HPNRegressor(6, lower=0.0, upper=9.0)
    classifier = HPNClassifier(5, 5, cache_dir=str(tmp_path))
    assert torch.equal(classifier.prototypes, joint.style_prototypes)
    only_r = HPNJoint(6, 5, task_weight=0.0, **kwargs).loss(z, labels, targets)
    only_c = HPNJoint(6, 5, task_weight=1.0, **kwargs).loss(z, labels, None)  # w = 1 needs no targets
    assert only_r.item() == pytest.approx(regression.loss(z, labels, targets).item(), rel=1e-6)
    assert only_c.item() == pytest.approx(classifier.loss(z[:, 1:], labels).item(), rel=1e-6)
    assert joint.loss(z, labels, targets).item() == pytest.approx(0.75 * only_r.item() + 0.25 * only_c.item(),
                                                                  rel=1e-6)
    # style from z[1:] only, year from the full z
    shifted = z.clone()
    shifted[:, 0] += 5.0
    assert torch.allclose(joint.logits(shifted), joint.logits(z))
    assert not torch.allclose(joint.predict_targets(shifted), joint.predict_targets(z))
    with pytest.raises(ConfigError):
        HPNJoint(2, 5, **kwargs)


# ---------------------------------------------------------------- schedule and configs
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("hpn_*.yaml"))


def test_experiment_files_cover_the_papers_tables():
    assert {f"hpn_cifar100_d{d}" for d in (10, 25, 50, 100)} <= set(EXPERIMENTS)
    assert {f"hpn_imagenet200_d{d}" for d in (25, 50, 100, 200)} <= set(EXPERIMENTS)
    assert {f"hpn_omniart_joint_w{w}" for w in ("0.01", "0.1", "0.25", "0.5", "0.9")} <= set(EXPERIMENTS)
    assert {"hpn_omniart_year_lr0.01", "hpn_omniart_year_lr0.001"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_with_the_official_settings(experiment):
    cfg = compose_config([f"experiment={experiment}"])
    validate(cfg)
    assert cfg.method.name.startswith("hpn") and cfg.mode.epochs == 250
    assert cfg.seed == 100  # the originals' seed: experiment files may set top-level keys
    assert cfg.method.params.loss_reduction == "sum" and cfg.mode.weight_decay == 0.0001
    assert cfg.sampler.name == "random" and cfg.scheduler.name == "multistep"
    assert list(cfg.scheduler.milestones) == [100, 200] and cfg.scheduler.gamma == 0.1
    if cfg.dataset.name == "omniart":
        assert cfg.arch.name == "resnet34" and cfg.method.params.lower == 1000.0
    else:
        assert cfg.arch.name == "resnet32" and cfg.sampler.batch_size == 128
        assert cfg.method.params.placement == "paper"


def test_an_experiment_builds_its_model_optimizer_and_schedule():
    cfg = compose_config(["experiment=hpn_cifar100_d10", "method.params.placement=converged"])
    model = build_model(cfg)
    assert model.head.prototypes.shape == (100, 10) and model.backbone.embedding_dim == 10
    optimizer = build_optimizer(cfg, model)
    schedule = build_scheduler(cfg, optimizer)
    assert isinstance(schedule, torch.optim.lr_scheduler.MultiStepLR) and optimizer.param_groups[0]["lr"] == 0.01
    lrs = []
    for _ in range(201):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[99] == pytest.approx(0.01) and lrs[100] == pytest.approx(0.001) and lrs[200] == pytest.approx(0.0001)


# ---------------------------------------------------------------- end to end on digits (runner)
SHORT = ["mode.epochs=4", "sampler.n_episodes=25"]


def _train_and_extract(tmp_path, overrides):
    from vmf_embeddings.main import run

    cfg = compose_config(FAST + SHORT + overrides)
    run_dir = tmp_path / "run"
    best = run(cfg, run_dir)
    run(compose_config(FAST + overrides + ["mode=get_embeddings", "mode.splits=[test]"]), run_dir)
    return best, dict(np.load(run_dir / "embeddings" / "test.npz"))


def test_hpn_classifies_digits(tmp_path):
    best, test = _train_and_extract(tmp_path, ["method=hpn"])
    accuracy = float((test["log_probs"].argmax(1) == test["labels"]).mean())
    assert best > 0.9 and accuracy > 0.9, (best, accuracy)
    assert str(test["geometry"]) == "cosine" and str(test["task"]) == "classification"
    assert test["prototypes"].shape == (10, 3) and float(test["logit_scale"]) > 0
    # the exported prototypes and scale reproduce the predictive distribution written beside them
    from scipy.special import log_softmax

    z = test["embeddings"] / np.linalg.norm(test["embeddings"], axis=1, keepdims=True)
    expected = log_softmax(float(test["logit_scale"]) * z @ test["prototypes"].T, axis=1)
    assert np.allclose(expected, test["log_probs"], atol=1e-4)


def test_hpn_regression_beats_a_constant_on_digit_values(tmp_path):
    _, test = _train_and_extract(tmp_path, ["method=hpn_regression", "dataset=digits_regression"])
    mae = float(np.abs(test["predictions"] - test["targets"]).mean())
    constant = float(np.abs(np.median(test["targets"]) - test["targets"]).mean())  # ~2.5 digits
    assert mae < 0.4 * constant, (mae, constant)
    assert np.allclose(test["bounds"], [0.0, 9.0]) and str(test["task"]) == "regression"
    assert test["predictions"].min() >= 0.0 and test["predictions"].max() <= 9.0


def test_hpn_joint_trains_both_tasks(tmp_path):
    _, test = _train_and_extract(tmp_path, ["method=hpn_joint", "dataset=digits_regression",
                                            "arch.params.embedding_dim=5", "method.params.task_weight=0.5"])
    accuracy = float((test["log_probs"].argmax(1) == test["labels"]).mean())
    mae = float(np.abs(test["predictions"] - test["targets"]).mean())
    constant = float(np.abs(np.median(test["targets"]) - test["targets"]).mean())
    assert accuracy > 0.8 and mae < 0.5 * constant, (accuracy, mae, constant)
    assert test["prototypes"].shape == (10, 5) and np.allclose(test["prototypes"][:, 0], 0.0)
