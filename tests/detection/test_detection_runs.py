"""Detection in the runner: Faster R-CNN and RepMet's head train on shapes written in VOC's on-disk layout until
mAP@0.5 clears a stated level, RepMet's few-shot episodes run on held-out shapes, and the RepMet head's scores
follow the paper."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import FAST, compose_config
from tests.detection.shapes_voc import write_shapes_voc
from vmf_embeddings.detection.heads import RepMetPredictor
from vmf_embeddings.errors import ConfigError

#: a small, fast detection problem: 64-px canvases, few proposals and RoIs, a ResNet-18 FPN from scratch
TINY = FAST + ["threads=2", "dataset=voc2007", "arch=resnet18", "sampler=random", "sampler.batch_size=8",
               "dataset.image_size=64", "dataset.max_size=86", "method.detector.rpn_pre_nms_top_n=300",
               "method.detector.rpn_post_nms_top_n=200", "method.detector.rois_per_image=64",
               "mode.learning_rate=0.01", "mode.projector=false"]


def test_repmet_scores_background_and_margin_loss():
    head = RepMetPredictor(in_channels=8, n_classes=3, n_reps=2, embedding_dim=4, sigma=0.5, logit_scale=15.0,
                           margin=0.5)
    x = torch.randn(5, 8)
    logits, deltas = head(x)
    assert logits.shape == (5, 4) and deltas.shape == (5, 16)
    assert torch.equal(deltas[:, :4], deltas[:, 4:8])  # class-agnostic regression
    d2 = head.distances(head.embeddings(x))
    scores = torch.exp(-d2 / 0.5).amax(-1)
    torch.testing.assert_close(logits[:, 1:], 15 * scores)
    torch.testing.assert_close(logits[:, 0], 15 * (1 - scores.amax(-1)))
    labels = torch.tensor([0, 1, 2, 3, 1])
    loss = head.extra_losses(labels)["loss_embedding"]
    nearest = d2.amin(-1)[labels > 0]
    y = labels[labels > 0] - 1
    pos = nearest[torch.arange(len(y)), y]
    neg = torch.stack([torch.cat([row[:c], row[c + 1:]]).min() for row, c in zip(nearest, y)])
    torch.testing.assert_close(loss, torch.relu(pos - neg + 0.5).mean())
    head.set_representatives(torch.randn(2, 2, 4))
    assert head(x)[0].shape == (5, 3)  # an episode's two classes + background


def test_episode_fine_tuning_fits_the_representatives_to_the_support():
    from vmf_embeddings.detection.fewshot import finetune_representatives

    torch.manual_seed(0)
    head = RepMetPredictor(in_channels=8, n_classes=2, n_reps=2, embedding_dim=4)
    centres = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)  # background, class 1, class 2
    labels = torch.arange(3).repeat_interleave(20)
    emb = torch.nn.functional.normalize(centres[labels] + 0.05 * torch.randn(60, 4), dim=-1)
    start = torch.randn(2, 2, 4)

    def loss(reps):
        scores = torch.exp(-head.distances(emb, reps) / (2 * head.sigma ** 2)).amax(-1)
        logits = head.logit_scale * torch.cat([1 - scores.amax(-1, keepdim=True), scores], 1)
        return float(torch.nn.functional.cross_entropy(logits, labels))

    tuned = finetune_representatives(head, start, emb, labels, steps=50, lr=0.05)
    assert loss(tuned) < loss(start) and not tuned.requires_grad


def test_a_detection_method_needs_a_detection_dataset():
    from vmf_embeddings.validate import validate

    with pytest.raises(ConfigError, match="method=faster_rcnn is a detection method but dataset=digits"):
        validate(compose_config(FAST + ["method=faster_rcnn", "arch=resnet18", "sampler=random"]))


def test_faster_rcnn_learns_the_shapes(tmp_path):
    from vmf_embeddings.main import run

    root = write_shapes_voc(tmp_path / "voc", ["aeroplane", "bicycle", "boat"], n_train=140, n_test=40)
    run(compose_config(TINY + ["method=faster_rcnn", f"dataset.dataset_path={root}", "mode.epochs=3"]),
        tmp_path / "run")
    test = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert test["map50"] >= 0.5, test  # measured 0.99 after 6 epochs of 160 in-memory shapes, 0.81 val mAP after 2
    assert 0 <= test["map50_07"] <= 1 and test["ap50/bicycle"] >= 0 and test["ap50/cow"] != test["ap50/cow"]  # NaN


def test_repmet_detects_and_runs_few_shot_episodes_on_held_out_shapes(tmp_path):
    from vmf_embeddings.main import run

    # VOC's few-shot split 1 holds out bird, bus, cow, motorbike and sofa: two of the five shapes are novel
    root = write_shapes_voc(tmp_path / "voc", ["aeroplane", "bicycle", "boat", "bird", "bus"], n_train=140, n_test=60)
    episodes = "eval.detection_episodes={n_way: 2, k_shot: 1, n_query: 3, n_episodes: 3, finetune_steps: 2}"
    run(compose_config(TINY + ["method=repmet_det", f"dataset.dataset_path={root}", "dataset.loader.novel_split=1",
                               "mode.epochs=3", episodes]), tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    test = metrics["test"]
    assert test["map50"] >= 0.1, test  # the three base shapes; measured 0.29 after 3 epochs (in-memory shapes)
    assert "ap50/bird" not in test and "ap50/aeroplane" in test  # novel classes are held out of base training
    assert test["fewshot_det_2way1shot_ft_episodes"] == 3 and 0 <= test["fewshot_det_2way1shot_ft_map50"] <= 1
    # evaluate.py re-scores the stored detections to the same numbers
    from vmf_embeddings.eval.run_eval import evaluate_run

    again = evaluate_run(tmp_path / "run", write=False)["test"]
    assert again["map50"] == pytest.approx(test["map50"])


def test_a_killed_detection_run_resumes_bit_for_bit(tmp_path, monkeypatch):
    from tests.conftest import assert_same_weights, killed_and_resumed_weights

    overrides = FAST + ["threads=2", "dataset=shapes_det", "arch=resnet18", "method=faster_rcnn", "sampler=random",
                        "sampler.batch_size=4", "dataset.image_size=64", "dataset.max_size=86",
                        "dataset.loader.n_train=16", "dataset.loader.n_val=4", "dataset.loader.n_test=4",
                        "method.detector.rpn_pre_nms_top_n=100", "method.detector.rpn_post_nms_top_n=50",
                        "method.detector.rois_per_image=32", "mode.learning_rate=0.01", "mode.epochs=2",
                        "mode.extract_at_end=false", "mode.evaluate_at_end=false"]
    assert_same_weights(*killed_and_resumed_weights(overrides, tmp_path, monkeypatch))
