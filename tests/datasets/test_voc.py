"""Detection data (`vmf_embeddings/datasets/detection.py`): the PASCAL VOC reader on a tiny dataset in the real
VOCdevkit layout (`voc_fakes.py`), the synthetic shapes set, the split containers, the dataset YAMLs, and
`scripts/prepare_voc.py` on tiny tars (no network anywhere)."""

import importlib.util
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

import voc_fakes
from vmf_embeddings.datasets import detection
from vmf_embeddings.datasets.base import DatasetInvalidError, DatasetMissingError
from vmf_embeddings.datasets.detection import (VOC_CLASSES, VOC_NOVEL_SPLITS, DetectionData, DetectionDataset,
                                               DetectionSplit, collate_detection, hflip, load_shapes_detection,
                                               load_voc, read_voc_annotation)
from vmf_embeddings.errors import ConfigError, UserError

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf" / "dataset"


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    """VOC2007 trainval + test and VOC2012 trainval under one root (read-only for the tests using it)."""
    root = tmp_path_factory.mktemp("voc")
    sets = voc_fakes.write_voc0712(root)
    return root, sets


def _small_voc(root: Path) -> Path:
    """A fresh VOC2007 (3 trainval, 2 test images) for the tests that break a file; returns the VOC2007 folder."""
    return voc_fakes.write_voc(root, "2007", {"trainval": voc_fakes.trainval_2007()[:3],
                                              "test": voc_fakes.testset_2007()[:2]})


def _expected(image: voc_fakes.FakeImage):
    boxes = torch.tensor([[o.box[0] - 1, o.box[1] - 1, o.box[2], o.box[3]] for o in image.objects], dtype=torch.float32)
    labels = torch.tensor([VOC_CLASSES.index(o.name) for o in image.objects], dtype=torch.int64)
    difficult = torch.tensor([o.difficult for o in image.objects], dtype=torch.bool)
    return boxes, labels, difficult


def _one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text and text, text
    return text


# ------------------------------------------------------------------------------------------------ VOC reader
def test_reads_boxes_labels_and_difficult_flags(voc):
    root, sets = voc
    data = load_voc(str(root), val_fraction=0)
    assert isinstance(data, DetectionData) and data.name == "voc2007" and data.task == "detection"
    assert data.class_names == list(VOC_CLASSES) and data.n_classes == 20 and data.channels == 3
    assert len(data.val) == 0 and data.novel_classes == () and data.base_classes == tuple(range(20))
    for split, images in ((data.train, sets["2007 trainval"]), (data.test, sets["2007 test"])):
        assert split.ids == [image.id for image in images]  # ImageSets order
        for i, image in enumerate(images):
            boxes, labels, difficult = _expected(image)
            assert split.boxes[i].dtype == torch.float32 and split.boxes[i].shape == (len(image.objects), 4)
            assert split.labels[i].dtype == torch.int64 and split.difficult[i].dtype == torch.bool
            torch.testing.assert_close(split.boxes[i], boxes, rtol=0, atol=0)
            assert torch.equal(split.labels[i], labels) and torch.equal(split.difficult[i], difficult)
            assert split.sizes[i] == (image.height, image.width) == split.image_size(i)
            assert split.images[i].endswith(f"VOCdevkit/VOC2007/JPEGImages/{image.id}.jpg")
    # the corner cases: a box from the first pixel (xmin = ymin = 1 -> 0) and one to the last (xmax = width)
    assert data.test.boxes[1].tolist() == [[0.0, 0.0, 44.0, 36.0]]
    assert data.test.target(0, label_offset=1)["labels"].tolist() == [VOC_CLASSES.index("dog") + 1,
                                                                       VOC_CLASSES.index("person") + 1]


def test_boxes_follow_the_pixels(voc):
    """Box x1 is the first object column, x2 - 1 the last (0-based): the pixels agree with the conversion."""
    root, sets = voc
    data = load_voc(str(root), val_fraction=0)
    for i in range(len(data.test)):
        image = data.test.load_image(i)
        assert image.dtype == torch.uint8 and image.shape == (3, *data.test.sizes[i])
        bright = image.max(0).values.int()
        for x1, y1, x2, y2 in data.test.boxes[i].int().tolist():
            row, col = (y1 + y2) // 2, (x1 + x2) // 2
            assert bright[row, x1] > 200 and bright[row, x2 - 1] > 200
            assert bright[y1, col] > 200 and bright[y2 - 1, col] > 200
            if x1 > 0:
                assert bright[row, x1 - 1] < 60
            if x2 < image.shape[2]:
                assert bright[row, x2] < 60
            if y2 < image.shape[1]:
                assert bright[y2, col] < 60


def test_voc0712_merges_years(voc):
    root, sets = voc
    data = load_voc(str(root), years=("2007", "2012"), val_fraction=0)
    assert data.name == "voc0712"
    assert data.train.ids == [i.id for i in sets["2007 trainval"] + sets["2012 trainval"]]
    assert data.test.ids == [i.id for i in sets["2007 test"]]
    k = data.train.ids.index("2008_000003")  # a person with <part> boxes: the object's own box is read
    boxes, labels, _ = _expected(sets["2012 trainval"][1])
    torch.testing.assert_close(data.train.boxes[k], boxes, rtol=0, atol=0)
    assert torch.equal(data.train.labels[k], labels)
    assert "VOC2012/JPEGImages/2008_000003.jpg" in data.train.images[k]
    assert data.train.difficult[data.train.ids.index("2009_000001")].tolist() == [True]


def test_validation_split_is_seeded_and_class_agnostic(voc):
    root, _ = voc
    a = load_voc(str(root), years=("2007", "2012"), val_fraction=0.3, seed=1)
    b = load_voc(str(root), years=("2007", "2012"), val_fraction=0.3, seed=1)
    c = load_voc(str(root), years=("2007", "2012"), val_fraction=0.3, seed=2)
    assert a.val.ids == b.val.ids and a.train.ids == b.train.ids
    assert a.val.ids != c.val.ids
    everything = load_voc(str(root), years=("2007", "2012"), val_fraction=0).train.ids
    assert len(a.val) == round(0.3 * len(everything)) == 4
    assert sorted(a.train.ids + a.val.ids) == sorted(everything) and not set(a.train.ids) & set(a.val.ids)
    assert a.train.ids == [i for i in everything if i in set(a.train.ids)]  # file order kept
    assert a.test.ids == c.test.ids  # the test set never changes
    with pytest.raises(ConfigError, match="val_fraction=1"):
        load_voc(str(root), val_fraction=1)


def test_select_classes_for_base_and_novel(voc):
    root, _ = voc
    data = load_voc(str(root), years=("2007", "2012"), val_fraction=0, novel_split=1)
    novel = tuple(VOC_CLASSES.index(c) for c in VOC_NOVEL_SPLITS[1])
    assert data.novel_classes == novel and len(data.base_classes) == 15
    assert not set(data.base_classes) & set(novel)

    dog, cow = VOC_CLASSES.index("dog"), VOC_CLASSES.index("cow")
    only = data.train.select_classes([dog])
    assert len(only) and all(lab.tolist() == [dog] * len(lab) for lab in only.labels)
    assert only.n_boxes == int((torch.cat(data.train.labels) == dog).sum())
    kept = data.train.select_classes([dog], keep_empty=True)
    assert kept.ids == data.train.ids and sum(len(b) == 0 for b in kept.boxes) == len(data.train) - len(only)

    # relabel: ids in the order given; drop_mixed: no image holding another class survives
    renamed = data.train.select_classes([cow, dog], relabel=True)
    assert set(torch.cat(renamed.labels).tolist()) <= {0, 1}
    for i, image_id in enumerate(renamed.ids):
        original = data.train.labels[data.train.ids.index(image_id)]
        mask = (original == cow) | (original == dog)
        assert renamed.labels[i].tolist() == [0 if c == cow else 1 for c in original[mask].tolist()]
    pure = data.train.select_classes([dog], drop_mixed=True)
    assert all(len(data.train.labels[data.train.ids.index(i)]) == len(pure.labels[k]) for k, i in enumerate(pure.ids))

    base = data.select_classes(data.base_classes)  # whole dataset, by ids, relabelled
    assert base.n_classes == 15 and base.class_names == [VOC_CLASSES[c] for c in data.base_classes]
    assert base.novel_classes == () and max(torch.cat(base.train.labels).tolist()) < 15
    by_name = data.select_classes(["cow", "dog"])
    assert by_name.class_names == ["cow", "dog"] and by_name.novel_classes == (0,)
    assert data.select_classes(["dog"], relabel=False, splits=["train"]).test.ids == data.test.ids
    with pytest.raises(ConfigError, match="has no class 'unicorn'"):
        data.select_classes(["unicorn"])
    with pytest.raises(ConfigError, match="novel_split=4"):
        load_voc(str(root), novel_split=4)


def test_difficult_boxes_can_be_dropped(voc):
    root, _ = voc
    data = load_voc(str(root), val_fraction=0)
    easy = data.train.drop_difficult()
    assert len(easy) == len(data.train) and not torch.cat(easy.difficult).any()
    assert easy.n_boxes == data.train.n_boxes - int(torch.cat(data.train.difficult).sum())
    assert len(data.train.drop_difficult(keep_empty=False)) < len(data.train)


def _replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (old, path)
    path.write_text(text.replace(old, new, 1))


# each case: (how to break the small VOC2007, the error class, text the one line must hold, the file it names)
BAD_CASES = {
    "malformed XML": (lambda v: (v / "Annotations/000005.xml").write_text("<annotation><size>"),
                      DatasetInvalidError, "malformed XML", "Annotations/000005.xml"),
    "box past the right edge": (lambda v: _replace_in(v / "Annotations/000007.xml", "<xmax>21</xmax>",
                                                      "<xmax>65</xmax>"),
                                DatasetInvalidError, "lies outside the 64x42 image", "Annotations/000007.xml"),
    "box from pixel 0": (lambda v: _replace_in(v / "Annotations/000005.xml", "<xmin>1</xmin>", "<xmin>0</xmin>"),
                         DatasetInvalidError, "lies outside", "Annotations/000005.xml"),
    "empty box": (lambda v: _replace_in(v / "Annotations/000009.xml", "<xmin>3</xmin>", "<xmin>30</xmin>"),
                  DatasetInvalidError, "empty box (xmin=30 ymin=1 xmax=22", "Annotations/000009.xml"),
    "unknown class": (lambda v: _replace_in(v / "Annotations/000007.xml", "<name>cat</name>", "<name>kat</name>"),
                      DatasetInvalidError, "unknown class 'kat'; the classes are aeroplane", "Annotations/000007.xml"),
    "non-numeric coordinate": (lambda v: _replace_in(v / "Annotations/000005.xml", "<ymax>18</ymax>",
                                                     "<ymax>x</ymax>"),
                               DatasetInvalidError, "<ymax>x</ymax>, not a number", "Annotations/000005.xml"),
    "no size": (lambda v: _replace_in(v / "Annotations/000005.xml", "<width>60</width>", ""),
                DatasetInvalidError, "<size><width> must be a positive integer", "Annotations/000005.xml"),
    "missing annotation": (lambda v: (v / "Annotations/000009.xml").unlink(),
                           DatasetMissingError, "1 of 3 listed ids have no Annotations/<id>.xml", "trainval.txt"),
    "missing JPEG": (lambda v: (v / "JPEGImages/000002.jpg").unlink(),
                     DatasetMissingError, "1 of 2 listed ids have no JPEGImages/<id>.jpg", "test.txt"),
    "JPEG of another size": (lambda v: voc_fakes.write_jpeg(v / "JPEGImages/000005.jpg",
                                                            voc_fakes.FakeImage("000005", 61, 40)),
                             DatasetInvalidError, "is 61x40 but", "JPEGImages/000005.jpg"),
    "unreadable JPEG": (lambda v: (v / "JPEGImages/000007.jpg").write_bytes(b"not a jpeg"),
                        DatasetInvalidError, "cannot be read as images", "JPEGImages/000007.jpg"),
    "id listed twice": (lambda v: (v / "ImageSets/Main/trainval.txt").write_text("000005\n000007\n000005\n"),
                        DatasetInvalidError, ":3: image id '000005' is listed twice", "trainval.txt"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_data_is_one_line_naming_the_file(tmp_path, case):
    breaker, error, text, file = BAD_CASES[case]
    voc_dir = _small_voc(tmp_path)
    breaker(voc_dir)
    with pytest.raises(error) as info:
        load_voc(str(tmp_path))
    line = _one_line(info.value)
    assert text in line and file in line, line
    assert isinstance(info.value, UserError)


def test_missing_vocdevkit_names_the_expected_path_and_the_fix(tmp_path):
    with pytest.raises(DatasetMissingError) as info:
        load_voc(str(tmp_path / "nowhere"))
    line = _one_line(info.value)
    assert f"{tmp_path / 'nowhere' / 'VOCdevkit' / 'VOC2007' / 'ImageSets' / 'Main' / 'trainval.txt'}" in line
    assert "scripts/prepare_voc.py" in line and "download=true" in line and "VOCtrainval_06-Nov-2007.tar" in line

    voc_fakes.write_voc(tmp_path, "2007", {"trainval": voc_fakes.trainval_2007()[:2]})  # no test set
    with pytest.raises(DatasetMissingError, match=r"VOC2007/ImageSets/Main/test\.txt .*VOCtest_06-Nov-2007\.tar"):
        load_voc(str(tmp_path))
    with pytest.raises(DatasetMissingError, match=r"voc0712.*VOC2012/ImageSets/Main/trainval\.txt"):
        load_voc(str(tmp_path), years=["2007", "2012"])


def test_devkit_folder_itself_is_accepted(tmp_path):
    _small_voc(tmp_path)
    data = load_voc(str(tmp_path / "VOCdevkit"), val_fraction=0)
    assert len(data.train) == 3 and len(data.test) == 2


def test_verify_files_false_skips_the_header_pass(tmp_path):
    voc_dir = _small_voc(tmp_path)
    (voc_dir / "JPEGImages/000007.jpg").write_bytes(b"not a jpeg")
    data = load_voc(str(tmp_path), verify_files=False, val_fraction=0)
    i = data.train.ids.index("000007")
    with pytest.raises(DatasetInvalidError) as info:  # found when the image is decoded
        data.train.load_image(i)
    assert "JPEGImages/000007.jpg" in _one_line(info.value) and "cannot decode image" in str(info.value)


def test_download_goes_through_torchvision(tmp_path, monkeypatch):
    """download=true asks torchvision's VOCDetection for each missing image set only; the parsing is ours."""
    calls = []

    class FakeVOCDetection:
        def __init__(self, root, year, image_set, download):
            calls.append((root, year, image_set, download))
            images = voc_fakes.trainval_2007()[:3] if image_set == "trainval" else voc_fakes.testset_2007()[:2]
            voc_fakes.write_voc(Path(root), year, {image_set: images})

    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "VOCDetection", FakeVOCDetection)
    data = load_voc(str(tmp_path), download=True, val_fraction=0)
    assert calls == [(str(tmp_path), "2007", "trainval", True), (str(tmp_path), "2007", "test", True)]
    assert len(data.train) == 3 and len(data.test) == 2
    load_voc(str(tmp_path), download=True)
    assert len(calls) == 2  # already on disk: nothing fetched

    class Offline:
        def __init__(self, **kwargs):
            raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torchvision.datasets, "VOCDetection", Offline)
    with pytest.raises(DatasetMissingError) as info:
        load_voc(str(tmp_path), years=["2007", "2012"], download=True)
    line = _one_line(info.value)
    assert "could not download VOCtrainval_11-May-2012.tar" in line and "prepare_voc.py" in line


def test_annotation_parser_directly(tmp_path):
    image = voc_fakes.FakeImage("x", 30, 20, [voc_fakes.FakeObject("bus", (2.5, 3, 10, 20), difficult=True)])
    path = tmp_path / "x.xml"
    path.write_text(voc_fakes.annotation_xml(image, "2012").replace("\t\t<difficult>1</difficult>\n", ""))
    ann = read_voc_annotation(path)
    assert ann.boxes.tolist() == [[1.5, 2.0, 10.0, 20.0]] and ann.labels.tolist() == [VOC_CLASSES.index("bus")]
    assert ann.difficult.tolist() == [False] and (ann.height, ann.width) == (20, 30)  # missing <difficult> reads 0
    path.write_text("<notvoc/>")
    with pytest.raises(DatasetInvalidError, match="expected <annotation>"):
        read_voc_annotation(path)


# ------------------------------------------------------------------------------------------ shapes generator
def test_shapes_are_deterministic_and_splits_independent():
    a = load_shapes_detection(seed=3, n_train=12, n_val=4, n_test=5, image_size=64, n_classes=5)
    b = load_shapes_detection(seed=3, n_train=12, n_val=4, n_test=5, image_size=64, n_classes=5)
    c = load_shapes_detection(seed=4, n_train=12, n_val=4, n_test=5, image_size=64, n_classes=5)
    for split in ("train", "val", "test"):
        sa, sb = getattr(a, split), getattr(b, split)
        assert all(torch.equal(x, y) for x, y in zip(sa.images, sb.images))
        assert all(torch.equal(x, y) for x, y in zip(sa.boxes, sb.boxes))
        assert all(torch.equal(x, y) for x, y in zip(sa.labels, sb.labels))
    assert not all(torch.equal(x, y) for x, y in zip(a.train.boxes, c.train.boxes))
    more = load_shapes_detection(seed=3, n_train=20, n_val=4, n_test=5, image_size=64, n_classes=5)
    assert all(torch.equal(x, y) for x, y in zip(a.test.images, more.test.images))  # test unchanged by n_train
    assert all(torch.equal(x, y) for x, y in zip(a.train.images, more.train.images[:12]))


def test_shapes_boxes_are_exact():
    data = load_shapes_detection(seed=0, n_train=40, n_val=0, n_test=0, image_size=96, n_classes=8)
    assert data.class_names == detection.shape_class_names(8) and len(set(data.class_names)) == 8
    sizes = set()
    for i in range(len(data.train)):
        image = data.train.load_image(i)
        sizes.add(tuple(image.shape))
        assert image.dtype == torch.uint8 and image.shape[0] == 3
        assert 72 <= min(image.shape[1:]) <= max(image.shape[1:]) <= 96
        shape_pixels = image.max(0).values >= 200  # background <= SHAPES_BACKGROUND_MAX, shapes have a channel >= 200
        assert int(image.max(0).values[~shape_pixels].max()) <= detection.SHAPES_BACKGROUND_MAX
        boxes, labels = data.train.boxes[i], data.train.labels[i]
        assert 1 <= len(boxes) <= 3 and not data.train.difficult[i].any()
        covered = torch.zeros_like(shape_pixels)
        for (x1, y1, x2, y2), label in zip(boxes.int().tolist(), labels.tolist()):
            inside = shape_pixels[y1:y2, x1:x2]
            # tight: the shape reaches every side of its box
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            colour = torch.tensor(detection.SHAPE_COLOURS[label % len(detection.SHAPE_COLOURS)][1], dtype=torch.uint8)
            assert (image[:, y1:y2, x1:x2][:, inside] == colour[:, None]).all()  # every shape pixel: its class colour
            covered[y1:y2, x1:x2] = True
        assert not (shape_pixels & ~covered).any()  # no shape pixel outside the boxes
    assert len(sizes) > 1  # variable canvas sizes
    assert set(torch.cat(data.train.labels).tolist()) <= set(range(8))


def test_shapes_options_are_checked():
    with pytest.raises(ConfigError, match="n_classes=41 must lie in 1..40"):
        load_shapes_detection(n_classes=41)
    with pytest.raises(ConfigError, match="n_novel_classes=3"):
        load_shapes_detection(n_classes=3, n_novel_classes=3)
    data = load_shapes_detection(n_train=2, n_val=1, n_test=1, n_classes=6, n_novel_classes=2)
    assert data.novel_classes == (4, 5) and data.base_classes == (0, 1, 2, 3)
    assert data.max_size == 171 and data.image_size == 128


# -------------------------------------------------------------------------------------------- the containers
def test_split_container_checks_and_helpers():
    image = torch.zeros(3, 10, 20, dtype=torch.uint8)
    split = DetectionSplit(images=[image], boxes=[[[1, 2, 5, 6]]], labels=[[3]], difficult=[[0]], ids=["a"])
    assert split.boxes[0].dtype == torch.float32 and split.labels[0].dtype == torch.int64
    assert split.difficult[0].dtype == torch.bool and split.sizes == [(10, 20)] and split.in_memory
    flipped_image, flipped = hflip(image, split.boxes[0])
    assert flipped.tolist() == [[15.0, 2.0, 19.0, 6.0]] and flipped_image.shape == image.shape
    with pytest.raises(DatasetInvalidError, match="lies outside its image"):
        DetectionSplit(images=[image], boxes=[[[1, 2, 21, 6]]], labels=[[0]], difficult=[[0]], ids=["a"])
    with pytest.raises(DatasetInvalidError, match="empty or not finite"):
        DetectionSplit(images=[image], boxes=[[[5, 2, 5, 6]]], labels=[[0]], difficult=[[0]], ids=["a"])
    with pytest.raises(DatasetInvalidError, match="1 boxes but 2 labels"):
        DetectionSplit(images=[image], boxes=[[[1, 2, 5, 6]]], labels=[[0, 1]], difficult=[[0]], ids=["a"])
    with pytest.raises(DatasetInvalidError, match="integer class ids"):
        DetectionSplit(images=[image], boxes=[[[1, 2, 5, 6]]], labels=[[0.5]], difficult=[[0]], ids=["a"])
    with pytest.raises(DatasetInvalidError, match="label\\(s\\) outside the 3 classes"):
        DetectionData(name="t", train=split, val=detection.empty_split(), test=detection.empty_split(),
                      class_names=["a", "b", "c"], n_classes=3)

    dataset = DetectionDataset(split)  # label_offset=1: torchvision's background is 0
    images, targets = collate_detection([dataset[0], dataset[0]])
    assert len(images) == 2 and targets[0]["labels"].tolist() == [4] and int(targets[0]["image_id"]) == 0


def test_detection_dataset_in_a_dataloader(voc):
    root, _ = voc
    data = load_voc(str(root), val_fraction=0)
    loader = torch.utils.data.DataLoader(DetectionDataset(data.test), batch_size=3, collate_fn=collate_detection)
    images, targets = next(iter(loader))
    assert [tuple(im.shape[1:]) for im in images] == data.test.sizes[:3]
    assert torch.equal(targets[0]["boxes"], data.test.boxes[0])


# ---------------------------------------------------------------------------------------------- dataset YAMLs
def _compose(name, **overrides):
    root = OmegaConf.create({"dataset": OmegaConf.load(CONF / f"{name}.yaml")})
    for key, value in overrides.items():
        OmegaConf.update(root, f"dataset.{key}", value)
    return root.dataset


@pytest.mark.parametrize("name", ["voc2007", "voc0712", "shapes_det"])
def test_yaml_instantiates_to_what_it_declares(voc, name):
    root, _ = voc
    overrides = {"loader.n_train": 6, "loader.n_val": 2, "loader.n_test": 3} if name == "shapes_det" else {}
    cfg = _compose(name, dataset_path=str(root), **overrides)
    assert cfg.task == "detection" and cfg.name == name and cfg.open_set is False and cfg.channels == 3
    data = instantiate(cfg.loader)
    assert isinstance(data, DetectionData) and data.name == name
    assert data.n_classes == cfg.n_train_classes and data.channels == cfg.channels
    assert data.image_size == cfg.image_size and data.max_size == cfg.max_size and data.open_set == cfg.open_set


# ----------------------------------------------------------------------------------------- scripts/prepare_voc.py
@pytest.fixture(scope="module")
def prepare_voc():
    spec = importlib.util.spec_from_file_location("prepare_voc", REPO / "scripts" / "prepare_voc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tars(tmp_path_factory):
    return voc_fakes.write_release_tars(tmp_path_factory.mktemp("voc_tars"))


def _archives(tars, *keys):
    return [arg for key in keys for arg in ("--archive", str(tars[key]))]


def _error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning: --no-verify")]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_prepare_help_works_offline():
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "prepare_voc.py"), "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "--archive" in out.stdout and "--years" in out.stdout


def test_prepare_extracts_the_release_tars(tmp_path, tars, prepare_voc, capsys):
    root = tmp_path / "data"
    argv = [str(root), *_archives(tars, "2007 trainval", "2007 test", "2012 trainval"), "--no-verify"]
    assert prepare_voc.main(argv) == 0
    out = capsys.readouterr().out
    for year in ("2007", "2012"):
        for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
            assert (root / "VOCdevkit" / f"VOC{year}" / folder).is_dir()
    assert (root / "VOCdevkit/VOC2007/ImageSets/Main/test.txt").is_file()
    assert "voc2007: train 9 images" in out and "voc0712: train 13 images" in out and "test 4 images / 6 boxes" in out
    assert f"dataset.dataset_path={root.resolve()}" in out
    data = load_voc(str(root), years=("2007", "2012"), val_fraction=0)
    assert len(data.train) == 14 and len(data.test) == 4

    assert prepare_voc.main(argv) == 0  # again: every archive is already extracted
    assert capsys.readouterr().out.count("already extracted") == 3


def test_prepare_refuses_a_path_escape(tmp_path, tars, prepare_voc, capsys):
    evil = tmp_path / "evil" / "VOCtrainval_06-Nov-2007.tar"
    evil.parent.mkdir()
    payload = tmp_path / "payload.txt"
    payload.write_text("pwned")
    with tarfile.open(evil, "w") as tf:
        tf.add(tars["2007 trainval"], arcname="VOCdevkit/VOC2007/harmless.tar")
        tf.add(payload, arcname="../../escaped.txt")
    root = tmp_path / "deep" / "data"
    assert prepare_voc.main([str(root), "--archive", str(evil), "--no-verify"]) == 1
    line = _error_line(capsys)
    assert "'../../escaped.txt'" in line and "OutsideDestinationError" in line and "nothing was extracted" in line
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "deep" / "escaped.txt").exists()
    assert not (root / "VOCdevkit").exists()

    absolute = tmp_path / "abs" / "VOCtest_06-Nov-2007.tar"
    absolute.parent.mkdir()
    with tarfile.open(absolute, "w") as tf:
        info = tarfile.TarInfo(str(tmp_path / "abs_escape.txt"))
        tf.addfile(info)
        link = tarfile.TarInfo("VOCdevkit/out")
        link.type, link.linkname = tarfile.SYMTYPE, "../../../.."
        tf.addfile(link)
    assert prepare_voc.main([str(root), "--archive", str(absolute), "--no-verify"]) == 1
    assert "refused by the safe-extraction filter" in _error_line(capsys)
    assert not (tmp_path / "abs_escape.txt").exists()


def test_prepare_checks_the_published_checksum(tmp_path, tars, prepare_voc, capsys):
    root = tmp_path / "data"
    assert prepare_voc.main([str(root), *_archives(tars, "2007 trainval")]) == 1
    line = _error_line(capsys)
    assert "VOCtrainval_06-Nov-2007.tar does not match its published checksum" in line
    assert "expected c52e279531787c972589f7e41ab4ae64" in line and "--no-verify" in line
    assert not (root / "VOCdevkit").exists()
    other = tmp_path / "mine.tar"
    other.write_bytes(tars["2007 test"].read_bytes())
    assert prepare_voc.main([str(root), "--archive", str(other)]) == 1
    assert "no published checksum for mine.tar" in _error_line(capsys)


def test_prepare_reports_a_missing_archive_and_bad_files(tmp_path, tars, prepare_voc, capsys):
    root = tmp_path / "data"
    assert prepare_voc.main([str(root), *_archives(tars, "2007 trainval"), "--no-verify"]) == 1
    line = _error_line(capsys)
    assert "VOC2007/ImageSets/Main/test.txt" in line and "pass VOCtest_06-Nov-2007.tar with --archive" in line

    damaged = tmp_path / "VOCtest_06-Nov-2007.tar"
    damaged.write_bytes(tars["2007 test"].read_bytes()[:700])
    assert prepare_voc.main([str(root), "--archive", str(damaged), "--no-verify"]) == 1
    assert "as a .tar archive" in _error_line(capsys)

    assert prepare_voc.main([str(root), *_archives(tars, "2007 test"), "--no-verify"]) == 0
    capsys.readouterr()
    (root / "VOCdevkit/VOC2007/Annotations/000005.xml").write_text("<annotation>")
    assert prepare_voc.main([str(root), "--skip-download"]) == 1
    line = _error_line(capsys)
    assert "Annotations/000005.xml: not a readable VOC annotation (malformed XML" in line


def test_prepare_downloads_only_what_is_missing(tmp_path, tars, prepare_voc, monkeypatch, capsys):
    """Without --archive the default URLs are fetched (served here from the fake tars; checksums patched)."""
    import hashlib
    from dataclasses import replace

    fetched = []

    def fake_download(url, dest, spec=None, verify=True):
        fetched.append(Path(url).name)
        source = tars[{"VOCtrainval_06-Nov-2007.tar": "2007 trainval", "VOCtest_06-Nov-2007.tar": "2007 test",
                       "VOCtrainval_11-May-2012.tar": "2012 trainval"}[dest.name]]
        assert spec is not None and spec.md5 and verify
        dest.write_bytes(source.read_bytes())
        return dest

    real = {key: replace(spec, md5=hashlib.md5(tars[label].read_bytes()).hexdigest())
            for key, label in (("VOCtrainval_06-Nov-2007.tar", "2007 trainval"),
                               ("VOCtest_06-Nov-2007.tar", "2007 test"),
                               ("VOCtrainval_11-May-2012.tar", "2012 trainval"))
            for spec in [prepare_voc.ARCHIVES[key]]}
    monkeypatch.setattr(prepare_voc, "ARCHIVES", real)
    monkeypatch.setattr(prepare_voc, "download", fake_download)
    root = tmp_path / "data"
    assert prepare_voc.main([str(root), "--years", "2007"]) == 0
    assert fetched == ["VOCtrainval_06-Nov-2007.tar", "VOCtest_06-Nov-2007.tar"]
    assert prepare_voc.main([str(root)]) == 0  # 2007 is there: only 2012 is fetched
    assert fetched[2:] == ["VOCtrainval_11-May-2012.tar"]
    assert "voc0712: train 13 images" in capsys.readouterr().out


def test_another_class_list_in_voc_layout(tmp_path):
    """ImageNet-LOC-style data written as a VOCdevkit: its own class names and novel classes."""
    from tests.detection.shapes_voc import write_shapes_voc

    names = ["n01440764", "n01443537", "n01484850"]
    write_shapes_voc(tmp_path, names, n_train=6, n_test=4)
    data = load_voc(str(tmp_path), classes=names, novel=["n01484850"])
    assert data.class_names == names and data.n_classes == 3 and data.novel_classes == (2,)
    assert len(data.train) + len(data.val) == 6 and len(data.test) == 4
    with pytest.raises(ConfigError, match="novel names 'n0'"):
        load_voc(str(tmp_path), classes=names, novel=["n0"])
    with pytest.raises(DatasetInvalidError, match="unknown class 'n01440764'"):
        load_voc(str(tmp_path))  # VOC's own 20 names do not include them
