"""The decoded-image store of file-backed datasets (vmf_embeddings/datasets/store.py): its rows are the decoded
images, a second use decodes nothing, changed files are re-decoded, damage is refused in one line, its device
augmentation, the persistent DataLoader workers, and a short training run through the runner."""

from __future__ import annotations

import collections
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision import transforms as T
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms import functional as TF

import dataset_fakes
from vmf_embeddings.data_source import BatchSource
from vmf_embeddings.datasets import store as store_module
from vmf_embeddings.datasets.augment import (DeviceAugment, _shift_hue, centre_crop, color_jitter, random_crop_flip,
                                             resized_crop, resized_crop_params)
from vmf_embeddings.datasets.base import DataSplits, FileSplit
from vmf_embeddings.datasets.files import FileSplitDataset, load_image
from vmf_embeddings.datasets.image_lists import load_cub200
from vmf_embeddings.datasets.store import StoreDamagedError, StoreSplit, attach_store, manifest_hash
from vmf_embeddings.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD, dml_transforms, store_plan
from vmf_embeddings.errors import ConfigError, UserError

#: stored at 32 x 32 (the recipes' 256-for-224 resize); 32 - 28 is a multiple of 4, so the device's centre crop of
#: the stored square is torchvision's Resize(32) -> CenterCrop(28) pixel for pixel
IMAGE_SIZE = 28
IMAGE_MEAN, IMAGE_STD = IMAGENET_MEAN, IMAGENET_STD
CPU = torch.device("cpu")


def _cub(root):
    """CUB stand-in: 8 classes x 3 JPEGs of assorted sizes; with 2 validation classes: train 2 classes, val 2,
    test 4."""
    rels = dataset_fakes.write_cub200(root, n_classes=8, per_class=3, n_images=None)
    dataset_fakes.write_varied_jpegs([root / "CUB_200_2011" / "images" / r for r in rels])
    return root


def _load(root):
    return load_cub200(str(root), image_size=IMAGE_SIZE, n_val_classes=2)


def _attach(root, mode="auto", data=None):
    return attach_store(data if data is not None else _load(root), mode, None, str(root), progress=False)


def _folder(root, names, recipe="cars196"):
    """DataSplits over plain JPEGs `root/<name>.jpg` (train: the first half, val and test: the rest), with the
    `recipe`'s DML pipelines."""
    paths = [str(root / f"{n}.jpg") for n in names]
    missing = [p for p in paths if not os.path.exists(p)]
    dataset_fakes.write_varied_jpegs(missing, seed=len(paths))
    train_tf, eval_tf = dml_transforms(recipe, IMAGE_SIZE)
    half = len(paths) // 2

    def split(part, tf):
        return FileSplit(paths=part, labels=torch.arange(len(part)) % 2, transform=tf)

    return DataSplits(name="folder", train=split(paths[:half], train_tf), val=split(paths[half:], eval_tf),
                      test=split(paths[half:], eval_tf), n_train_classes=2, channels=3, image_size=IMAGE_SIZE,
                      mean=IMAGE_MEAN, std=IMAGE_STD)


def _manifest(root):
    (path,) = (root / ".vmf_store").glob("*.json")
    return path, json.loads(path.read_text())


def _arrays(root):
    return sorted((root / ".vmf_store").glob("*.u8"))


def _count_decodes(monkeypatch):
    calls = []
    real = store_module.decode

    def counting(path, plan):
        calls.append(path)
        return real(path, plan)

    monkeypatch.setattr(store_module, "decode", counting)
    return calls


def _eval_batches(data, split_name, workers=0):
    source = BatchSource(getattr(data, split_name), data, CPU, "none", workers)
    return torch.cat([x for x, _, _ in source.batches(source.sequential(5))])


def _one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------------------------ contents
def test_store_rows_are_the_decoded_images_and_evaluation_batches_are_torchvision_s(tmp_path):
    root = _cub(tmp_path)
    files = _load(root)
    data = _attach(root)
    stored_resize = T.Compose([T.Resize(32), T.CenterCrop(32)])  # the eval pipeline's resize, then its centre square
    for name in ("train", "val", "test"):
        split = getattr(data, name)
        assert isinstance(split, StoreSplit) and split.paths == getattr(files, name).paths
        assert torch.equal(split.labels, getattr(files, name).labels)
        rows = split.store.read(split.rows.numpy())
        expected = np.stack([np.asarray(stored_resize(load_image(p))) for p in split.paths]).transpose(0, 3, 1, 2)
        np.testing.assert_array_equal(rows, expected)
        if name != "train":  # Resize(32) -> CenterCrop(28) -> ToTensor -> Normalize, bit for bit
            reference = torch.stack([FileSplitDataset(getattr(files, name))[i][0] for i in range(len(split))])
            assert torch.equal(_eval_batches(data, name), reference)
    assert data.train_augment == "resized_crop_flip" and data.train_augment_params["size"] == IMAGE_SIZE
    assert data.train_augment_params["crop_scale"] == [0.16, 1.0]  # the vMF code's CUB recipe
    path, manifest = _manifest(root)
    assert manifest["sha256"] == manifest_hash(manifest) and manifest["shape"] == [24, 3, 32, 32]
    assert [f[0] for f in manifest["files"]] == sorted(f[0] for f in manifest["files"])
    first = manifest["files"][0]
    full = root / first[0]
    assert not os.path.isabs(first[0]) and first[1:] == [full.stat().st_size, full.stat().st_mtime_ns]
    assert os.path.getsize(path.parent / manifest["array"]) == 24 * 3 * 32 * 32


def test_training_batches_are_augmented_on_the_device_and_seeded(tmp_path):
    data = _attach(_cub(tmp_path))
    batches = [torch.arange(0, 3), torch.arange(3, 6)]  # the 6 training images
    runs = []
    for seed in (3, 3, 4):
        source = BatchSource(data.train, data, CPU, data.train_augment, 0, seed=seed)
        runs.append(torch.cat([x for x, _, _ in source.batches(batches)]))
    assert runs[0].shape == (6, 3, IMAGE_SIZE, IMAGE_SIZE) and runs[0].dtype == torch.float32
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    plain = BatchSource(data.train, data, CPU, "none", 0)  # "none": the evaluation crop of the same rows
    assert torch.equal(torch.cat([x for x, _, _ in plain.batches(batches)]),
                       DeviceAugment("none", IMAGE_MEAN, IMAGE_STD, size=IMAGE_SIZE)(
                           torch.from_numpy(data.train.store.read(data.train.rows[:6].numpy()))))


def test_store_batches_through_workers_equal_the_main_process_ones(tmp_path):
    data = _attach(_cub(tmp_path))
    assert torch.equal(_eval_batches(data, "test", workers=2), _eval_batches(data, "test", workers=0))
    batches = [torch.tensor([5, 1, 3]), torch.tensor([0, 2, 4])]
    out = []
    for workers in (0, 2):
        source = BatchSource(data.train, data, CPU, data.train_augment, workers, seed=7)
        out.append([x for x, _, _ in source.batches(batches)])
    assert all(torch.equal(a, b) for a, b in zip(*out))


# ------------------------------------------------------------------------------------------ reuse and rebuild
def test_second_use_reads_the_store_without_decoding(tmp_path, monkeypatch):
    root = _cub(tmp_path)
    first = _attach(root)

    def no_decoding(*args, **kwargs):
        raise AssertionError("the store should have been read, not rebuilt")

    monkeypatch.setattr(store_module, "decode", no_decoding)
    monkeypatch.setattr(store_module, "load_image", no_decoding)
    second = _attach(root)
    assert second.test.store.path == first.test.store.path and len(_arrays(root)) == 1
    assert torch.equal(_eval_batches(second, "test"), _eval_batches(first, "test"))


def test_a_changed_file_is_decoded_again_and_nothing_else(tmp_path, monkeypatch):
    root = _cub(tmp_path)
    data = _attach(root)
    changed = data.test.paths[4]
    before = os.stat(changed).st_mtime_ns
    dataset_fakes.write_varied_jpegs([changed], seed=99)
    os.utime(changed, ns=(before + 10**9, before + 10**9))
    calls = _count_decodes(monkeypatch)
    again = _attach(root)
    assert calls == [changed]
    assert len(_arrays(root)) == 1 and again.test.store.path != data.test.store.path  # the old array is gone
    row = again.test.store.read(again.test.rows[4:5].numpy())[0]
    expected = np.asarray(T.CenterCrop(32)(T.Resize(32)(load_image(changed))))
    np.testing.assert_array_equal(row, expected.transpose(2, 0, 1))
    others = [i for i in range(len(data.test)) if i != 4]
    np.testing.assert_array_equal(again.test.store.read(again.test.rows[others].numpy()),
                                  data.test.store.read(data.test.rows[others].numpy()))
    assert _attach(root).test.store.path == again.test.store.path  # and now it is current


def test_added_and_removed_files_rebuild_the_store(tmp_path, monkeypatch):
    names = [f"img{i}" for i in range(8)]
    first = _attach(tmp_path, data=_folder(tmp_path, names))
    assert isinstance(first.train, StoreSplit) and first.train_augment_params["crop_ratio"] == [1.0, 1.0]  # Cars
    calls = _count_decodes(monkeypatch)
    added = _attach(tmp_path, data=_folder(tmp_path, names + ["new"]))  # a file added: only it is decoded
    assert calls == [str(tmp_path / "new.jpg")] and len(_manifest(tmp_path)[1]["files"]) == 9
    assert torch.equal(_eval_batches(added, "test")[:-1][:4], _eval_batches(first, "test")[:4])

    calls.clear()
    listed_off = _attach(tmp_path, data=_folder(tmp_path, names))  # off the list but unchanged on disk: kept, reused
    assert calls == [] and listed_off.test.store.path == added.test.store.path

    os.remove(tmp_path / "new.jpg")  # gone from disk: the store is rebuilt without it, from its own rows
    rebuilt = _attach(tmp_path, data=_folder(tmp_path, names))
    assert calls == [] and rebuilt.test.store.path != added.test.store.path
    assert [f[0] for f in _manifest(tmp_path)[1]["files"]] == [f"{n}.jpg" for n in sorted(names)]
    assert torch.equal(_eval_batches(rebuilt, "test"), _eval_batches(first, "test"))


def test_rebuild_mode_decodes_everything_again(tmp_path, monkeypatch):
    root = _cub(tmp_path)
    first = _attach(root)
    calls = _count_decodes(monkeypatch)
    again = _attach(root, "rebuild")
    assert len(calls) == 24 and len(_arrays(root)) == 1 and again.val.store.path != first.val.store.path
    assert torch.equal(_eval_batches(again, "val"), _eval_batches(first, "val"))


# ------------------------------------------------------------------------------------------ damage
def _truncate(path, manifest):
    array = path.parent / manifest["array"]
    with open(array, "r+b") as handle:
        handle.truncate(os.path.getsize(array) - 10)


def _edit_without_rehashing(path, manifest):
    manifest["files"][0][1] += 1
    path.write_text(json.dumps(manifest))


def _bad_json(path, manifest):
    path.write_text(path.read_text()[:-20])


def _escaping_array(path, manifest):
    manifest["array"] = "../../outside.u8"
    manifest["sha256"] = manifest_hash(manifest)
    path.write_text(json.dumps(manifest))


def _escaping_entry(path, manifest):
    manifest["files"][0][0] = "../outside.jpg"
    manifest["sha256"] = manifest_hash(manifest)
    path.write_text(json.dumps(manifest))


def _missing_array(path, manifest):
    os.remove(path.parent / manifest["array"])


@pytest.mark.parametrize("damage, reason", [
    (_truncate, "is truncated: 12278 of 12288 bytes"),
    (_edit_without_rehashing, "manifest does not match its sha256"),
    (_bad_json, "manifest is not valid JSON"),
    (_escaping_array, "array name '../../outside.u8' is not a file of this store"),
    (_escaping_entry, "file entry '../outside.jpg' leaves the dataset root"),
    (_missing_array, "is missing"),
])
def test_a_damaged_store_is_refused_in_one_line_until_rebuilt(tmp_path, damage, reason, monkeypatch):
    names = [f"img{i}" for i in range(4)]
    _attach(tmp_path, data=_folder(tmp_path, names))
    path, manifest = _manifest(tmp_path)
    damage(path, manifest)
    calls = _count_decodes(monkeypatch)
    with pytest.raises(StoreDamagedError) as err:
        _attach(tmp_path, data=_folder(tmp_path, names))
    message = _one_line(err)
    assert message.startswith(f"decoded-image store {path} is damaged (") and reason in message
    assert message.endswith("or run with dataset.store=rebuild") and f"delete {path} and " in message
    assert calls == []  # refused, not silently rebuilt
    repaired = _attach(tmp_path, "rebuild", data=_folder(tmp_path, names))
    assert len(calls) == 4 and isinstance(repaired.test, StoreSplit)
    assert _attach(tmp_path, data=_folder(tmp_path, names)).test.store.path == repaired.test.store.path


# ------------------------------------------------------------------------------------------ no store
def test_no_room_falls_back_to_the_files_and_rebuild_mode_refuses(tmp_path, monkeypatch, caplog):
    Usage = collections.namedtuple("Usage", "total used free")
    monkeypatch.setattr(store_module.shutil, "disk_usage", lambda path: Usage(1, 1, 0))
    names = [f"img{i}" for i in range(4)]
    with caplog.at_level("WARNING"):
        data = _attach(tmp_path, data=_folder(tmp_path, names))
    assert type(data.train) is FileSplit and data.train_augment == "none"
    assert "reading the image files" in caplog.text and "GiB free" in caplog.text
    assert not list((tmp_path / ".vmf_store").glob("*.json"))
    with pytest.raises(UserError) as err:
        _attach(tmp_path, "rebuild", data=_folder(tmp_path, names))
    assert "dataset.store=rebuild: cannot write the decoded-image store" in _one_line(err)


def test_pipelines_without_a_device_equivalent_keep_the_files(tmp_path, caplog):
    data = _folder(tmp_path, [f"img{i}" for i in range(4)])
    data.train.transform = T.Compose([T.Resize((32, 32)), T.RandomRotation(10), T.ToTensor(),
                                      T.Normalize(IMAGE_MEAN, IMAGE_STD)])
    with caplog.at_level("WARNING"):
        out = _attach(tmp_path, data=data)
    assert type(out.train) is FileSplit and "reads its image files" in caplog.text
    assert attach_store(data, "none") is data and type(data.val) is FileSplit
    with pytest.raises(ConfigError):
        attach_store(data, "sometimes")


def test_store_plans_of_the_recipes():
    from vmf_embeddings.datasets.finegrained import finegrained_transforms
    from vmf_embeddings.datasets.transforms import hpn_transforms, small_image_transforms

    cars, _ = store_plan(*dml_transforms("cars196", 224))
    cub, _ = store_plan(*dml_transforms("cub200", 224))
    hpn, _ = store_plan(*hpn_transforms(224))
    small, _ = store_plan(*small_image_transforms(64))
    fine, _ = store_plan(*finegrained_transforms(224))
    assert (cars.height, cars.square, cars.augment_params["jitter"]["hue"]) == (256, None, [-0.1, 0.1])
    assert (cub.height, cub.square, cub.augment_params["jitter"]["hue"]) == (256, 256, None)
    assert hpn.augment_params["crop_scale"] == [0.08, 1.0] and any("full-resolution" in d for d in hpn.departures)
    assert (small.augment, small.height, small.augment_params["padding_mode"]) == ("crop_flip", 64, "zeros")
    assert (fine.augment, fine.augment_params["padding"], fine.augment_params["flip"]) == ("crop_flip", 0, True)


def test_validate_refuses_an_unknown_store_mode():
    from tests.conftest import compose_config
    from vmf_embeddings.validate import validate

    cfg = compose_config(["dataset=cub200"])
    assert cfg.dataset.store == "auto"
    validate(cfg)
    with pytest.raises(ConfigError) as err:
        validate(compose_config(["dataset=cub200", "dataset.store=yes"]))
    assert _one_line(err).startswith("dataset.store='yes' must be one of none, auto, rebuild")


# ------------------------------------------------------------------------------------------ device augmentation
def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_resized_crop_boxes_follow_torchvision_s_draw():
    boxes = resized_crop_params(20000, 48, 64, (0.16, 1.0), (3 / 4, 4 / 3), _gen(1))
    top, left, h, w = boxes.unbind(1)
    assert bool(((top >= 0) & (left >= 0) & (top + h <= 48) & (left + w <= 64) & (h > 0) & (w > 0)).all())
    torch.manual_seed(0)
    reference = torch.tensor([RandomResizedCrop.get_params(torch.zeros(1, 48, 64), (0.16, 1.0), (3 / 4, 4 / 3))
                              for _ in range(20000)]).float()
    assert torch.allclose(boxes.float().mean(0), reference.mean(0), rtol=0.03)
    assert abs((h * w).float().mean() - (reference[:, 2] * reference[:, 3]).mean()) < 0.02 * 48 * 64
    fallback = resized_crop_params(5, 10, 40, (0.99, 1.0), (1.0, 1.0), _gen(2))  # no square of that area fits
    assert fallback.tolist() == [[0, 15, 10, 10]] * 5  # torchvision's clamped centre crop


def test_resized_crop_is_torchvision_s_antialiased_resized_crop():
    x = torch.rand(40, 3, 30, 37)
    boxes = resized_crop_params(40, 30, 37, (0.05, 1.0), (0.5, 2.0), _gen(4))  # shrinking and enlarging crops
    reference = torch.stack([TF.resized_crop(image, *box.tolist(), [16, 16], antialias=True)
                             for image, box in zip(x, boxes)])
    assert torch.allclose(resized_crop(x, boxes, 16), reference, atol=1e-5)
    whole = torch.tensor([[0, 0, 30, 37]] * 40)
    assert torch.allclose(resized_crop(x[:, :, :, :30], torch.tensor([[0, 0, 30, 30]] * 40), 30), x[:, :, :, :30],
                          atol=1e-6)
    assert resized_crop(x, whole, 16).shape == (40, 3, 16, 16)


def test_resized_crop_flip_kind_crops_flips_and_normalises():
    x = torch.randint(0, 256, (40, 3, 12, 12), dtype=torch.uint8)
    aug = DeviceAugment("resized_crop_flip", IMAGE_MEAN, IMAGE_STD, size=12, crop_scale=(1.0, 1.0),
                        crop_ratio=(1.0, 1.0))
    out = aug(x, _gen(3))
    plain = DeviceAugment("none", IMAGE_MEAN, IMAGE_STD)(x)
    same = torch.tensor([torch.allclose(o, p, atol=1e-5) for o, p in zip(out, plain)])
    mirrored = torch.tensor([torch.allclose(o, p.flip(-1), atol=1e-5) for o, p in zip(out, plain)])
    assert bool((same | mirrored).all()) and same.any() and mirrored.any()
    random = DeviceAugment("resized_crop_flip", IMAGE_MEAN, IMAGE_STD, size=8,
                           jitter={"brightness": (0.6, 1.4), "contrast": (0.6, 1.4), "saturation": (0.6, 1.4),
                                   "hue": (-0.1, 0.1)})
    a, b = random(x, _gen(5)), random(x, _gen(5))
    assert a.shape == (40, 3, 8, 8) and a.dtype == torch.float32 and torch.equal(a, b)
    assert not torch.equal(a, random(x, _gen(6)))
    with pytest.raises(ValueError):
        DeviceAugment("resized_crop_flip", IMAGE_MEAN, IMAGE_STD)  # needs an output size


def test_color_jitter_factors_and_hue_match_torchvision():
    x = torch.rand(64, 3, 6, 6) * 0.7
    out = color_jitter(x, {"brightness": (0.75, 1.25)}, _gen(0))
    ratio = (out / x).flatten(1)
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-5)  # one factor per sample
    assert ratio.min() >= 0.75 - 1e-5 and ratio.max() <= 1.25 + 1e-5 and ratio[:, 0].std() > 0.05
    for shift in (-0.5, -0.13, 0.0, 0.3):
        reference = torch.stack([TF.adjust_hue(image, shift) for image in x])
        assert torch.allclose(_shift_hue(x, torch.full((64,), shift)), reference, atol=1e-5)
    contrast = color_jitter(x, {"contrast": (0.5, 0.5)}, _gen(0))
    assert torch.allclose(contrast, torch.stack([TF.adjust_contrast(image, 0.5) for image in x]), atol=1e-6)
    saturation = color_jitter(x, {"saturation": (1.5, 1.5)}, _gen(0))
    assert torch.allclose(saturation, torch.stack([TF.adjust_saturation(image, 1.5) for image in x]), atol=1e-6)


def test_zero_padded_crop_and_centre_crop_match_torchvision():
    x = torch.rand(20, 2, 8, 8) + 0.5  # no zero pixels of its own
    out = random_crop_flip(x, padding=2, generator=_gen(1), padding_mode="zeros")
    padded = F.pad(x, (2, 2, 2, 2))
    for n in range(20):
        assert any(torch.equal(out[n], (c.flip(-1) if fl else c))
                   for dy in range(5) for dx in range(5) for fl in (False, True)
                   for c in [padded[n, :, dy:dy + 8, dx:dx + 8]])
    assert (out == 0).any()
    y = torch.rand(2, 3, 11, 14)
    assert torch.equal(centre_crop(y, 7), TF.center_crop(y, [7, 7]))


# ------------------------------------------------------------------------------------------ DataLoader workers
def test_file_workers_persist_across_passes_and_each_batch_has_its_own_seed(tmp_path):
    data = _folder(tmp_path, [f"img{i}" for i in range(16)])  # no store: the train split's PIL pipeline decodes
    batches = [torch.arange(0, 3), torch.arange(3, 6), torch.arange(6, 8)]
    torch.manual_seed(0)
    one = BatchSource(data.train, data, CPU, "none", num_workers=1)
    first = [x for x, _, _ in one.batches(batches)]
    workers = [w.pid for w in one._loader._iterator._workers]
    second = [x for x, _, _ in one.batches(batches)]
    assert [w.pid for w in one._loader._iterator._workers] == workers and all(w.is_alive() for w in
                                                                                one._loader._iterator._workers)
    assert not torch.equal(first[0], second[0])  # a new pass, new seeds
    torch.manual_seed(0)
    two = BatchSource(data.train, data, CPU, "none", num_workers=2)
    assert all(torch.equal(a, b) for a, b in zip(first, [x for x, _, _ in two.batches(batches)]))


def test_an_unfinished_pass_is_ended_by_the_next(tmp_path):
    data = _attach(tmp_path, data=_folder(tmp_path, [f"img{i}" for i in range(8)]))
    source = BatchSource(data.test, data, CPU, "none", 0)
    first = source.batches(source.sequential(1))
    next(first)
    assert len(list(source.batches(source.sequential(2)))) == 2
    with pytest.raises(RuntimeError, match="a later pass over this source started"):
        next(first)


# ------------------------------------------------------------------------------------------ the runner
def _run_overrides(root):
    from tests.conftest import FAST

    return FAST + [
        "dataset=cub200", f"dataset.dataset_path={root}", f"dataset.image_size={IMAGE_SIZE}",
        "dataset.loader.n_val_classes=2", "dataset.n_train_classes=2", "arch=conv4", "arch.params.width=8",
        "sampler.n_classes=2", "sampler.n_samples=3", "sampler.n_episodes=2", "mode.epochs=2",
    ]


def test_a_short_training_run_builds_the_store_and_extraction_reads_it(tmp_path, monkeypatch):
    from tests.conftest import FAST, compose_config
    from vmf_embeddings.main import run

    root = _cub(tmp_path / "cub")
    overrides = _run_overrides(root)
    run_dir = tmp_path / "run"
    best = run(compose_config(overrides), run_dir)
    assert 0.0 <= best <= 1.0
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2
    assert len(_arrays(root)) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("extraction should read the store")

    monkeypatch.setattr(store_module, "decode", no_decoding)
    run(compose_config(FAST + ["mode=get_embeddings"]), run_dir)
    test = np.load(run_dir / "embeddings" / "test.npz")
    assert test["embeddings"].shape[0] == 12 and sorted(set(test["labels"].tolist())) == [0, 1, 2, 3]


def test_a_killed_run_on_the_store_resumes_bit_for_bit(tmp_path, monkeypatch):
    """The device augmentation draws from the train source's generator, which last.pt carries."""
    from tests.conftest import assert_same_weights, killed_and_resumed_weights

    root = _cub(tmp_path / "cub")
    assert_same_weights(*killed_and_resumed_weights(_run_overrides(root), tmp_path, monkeypatch))
