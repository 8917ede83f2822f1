"""Omniglot and miniImageNet (few-shot, Prototypical Networks splits): tiny files in the real on-disk layouts
(official Omniglot zips or their extracted folders + Vinyals split lists; Ravi-Larochelle CSVs over images/),
the decoded-image cache, the one-line errors, and the prepare scripts without network."""

import importlib.util
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from vmf_embeddings.datasets import miniimagenet, omniglot, prepare
from vmf_embeddings.datasets.base import DatasetInvalidError, DatasetMissingError

REPO = Path(__file__).resolve().parents[2]
ROTS = ("rot000", "rot090", "rot180", "rot270")
# 2 alphabets x 3 characters x 4 drawers; Alpha_A is in images_background, Beta_(b) in images_evaluation
ALPHABETS = {"images_background": "Alpha_A", "images_evaluation": "Beta_(b)"}
CHARACTERS = ("character01", "character02", "character03")
DRAWERS = 4
LISTS = {
    "train": [f"Alpha_A/character01/{r}" for r in ROTS] + [f"Alpha_A/character02/{r}" for r in ROTS],
    "val": [f"Alpha_A/character03/{r}" for r in ROTS],
    "test": [f"Beta_(b)/character02/{r}" for r in ROTS] + [f"Beta_(b)/character01/{r}" for r in ROTS],
}
LISTS["trainval"] = LISTS["train"] + LISTS["val"]


# ------------------------------------------------------------------------------------------ fakes
def _png(rng: np.random.Generator) -> bytes:
    """A 105x105 binary PNG like Omniglot's: white (True) background, black strokes (about 20%)."""
    pixels = rng.random((105, 105)) > 0.2
    pixels[:10] = True  # a blank band, so the background is known
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")  # bool array -> mode '1'
    return buf.getvalue()


def write_omniglot(base: Path, layout: str = "zip", seed: int = 0, lists=None) -> Path:
    """`base/omniglot/` with both archives (zip or extracted folders) and the split lists; returns base."""
    rng = np.random.default_rng(seed)
    root = base / "omniglot"
    root.mkdir(parents=True, exist_ok=True)
    for top, alphabet in ALPHABETS.items():
        files = {f"{top}/{alphabet}/{c}/{i + 1:04d}_{d + 1:02d}.png": _png(rng)
                 for i, c in enumerate(CHARACTERS) for d in range(DRAWERS)}
        if layout == "zip":
            with zipfile.ZipFile(root / f"{top}.zip", "w") as zf:
                for name, data in files.items():
                    zf.writestr(name, data)
        else:
            for name, data in files.items():
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_bytes(data)
    write_lists(base, lists or LISTS)
    return base


def write_lists(base: Path, lists) -> None:
    folder = base / "omniglot" / "splits" / "vinyals"
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in lists.items():
        (folder / f"{name}.txt").write_text("".join(line + "\n" for line in lines))


def _source_png(base: Path, character: str, drawer: int) -> Image.Image:
    """The original PNG of `character`'s drawer (0-based) from the zip layout."""
    alphabet, char = character.split("/")
    top = next(t for t, a in ALPHABETS.items() if a == alphabet)
    idx = CHARACTERS.index(char)
    with zipfile.ZipFile(base / "omniglot" / f"{top}.zip") as zf:
        data = zf.read(f"{top}/{alphabet}/{char}/{idx + 1:04d}_{drawer + 1:02d}.png")
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def _protonet_image(im: Image.Image, angle: int, size: int = 28) -> np.ndarray:
    """The authors' pipeline: rotate, resize, 1 - x (as uint8 255 = stroke)."""
    x = np.asarray(im.rotate(angle).resize((size, size)), dtype=np.float32)
    return ((1.0 - x) * 255).astype(np.uint8)


@pytest.fixture
def omni(tmp_path):
    return write_omniglot(tmp_path / "zip")


# ------------------------------------------------------------------------------------------ omniglot
@pytest.mark.parametrize("layout", ["zip", "folder"])
def test_omniglot_layouts_shapes_and_labels(tmp_path, layout):
    base = write_omniglot(tmp_path, layout)
    data = omniglot.load_omniglot(str(base))
    sizes = {"train": 8, "val": 4, "test": 8}
    for name, k in sizes.items():
        split = getattr(data, name)
        assert split.images.shape == (k * DRAWERS, 1, 28, 28) and split.images.dtype == torch.uint8
        assert split.labels.dtype == torch.int64
        assert torch.equal(split.labels, torch.arange(k).repeat_interleave(DRAWERS))  # 0..K-1, list order
        assert data.extras["split_class_names"][name] == LISTS[name]
    assert data.n_train_classes == 8 and data.open_set and data.channels == 1 and data.image_size == 28
    assert data.class_names == LISTS["train"]
    assert (base / "omniglot" / ".cache").is_dir()


def test_zip_and_extracted_folders_give_the_same_images(tmp_path):
    a = omniglot.load_omniglot(str(write_omniglot(tmp_path / "a", "zip", seed=3)), cache=False)
    b = omniglot.load_omniglot(str(write_omniglot(tmp_path / "b", "folder", seed=3)), cache=False)
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(a, name).images, getattr(b, name).images)
        assert torch.equal(getattr(a, name).labels, getattr(b, name).labels)


def test_rotations_are_classes_and_match_the_authors_pipeline(omni):
    data = omniglot.load_omniglot(str(omni))
    names = data.extras["split_class_names"]["train"]
    images = data.train.images.view(len(names), DRAWERS, 1, 28, 28)
    for character in ("Alpha_A/character01", "Alpha_A/character02"):
        block = {r: images[names.index(f"{character}/{r}")] for r in ROTS}
        for k, r in enumerate(ROTS):
            assert torch.equal(block[r], torch.rot90(block["rot000"], k, dims=(-2, -1)))
            for drawer in range(DRAWERS):
                expected = _protonet_image(_source_png(omni, character, drawer), 90 * k)
                assert np.array_equal(block[r][drawer, 0].numpy(), expected), (character, r, drawer)
        assert not torch.equal(block["rot000"], block["rot090"])


def test_inversion_background_is_zero(omni):
    data = omniglot.load_omniglot(str(omni))
    first = data.train.images[0, 0]  # rot000: the top rows of the source are blank (white)
    assert set(torch.unique(data.train.images).tolist()) <= {0, 255}
    assert int(first[:2].max()) == 0  # background 0
    assert 0.1 < float((data.train.images == 255).float().mean()) < 0.4  # strokes (~20%) are 255


def test_splits_are_class_disjoint_with_all_rotations_together(omni):
    data = omniglot.load_omniglot(str(omni))
    names = data.extras["split_class_names"]
    chars = {s: {n.rsplit("/", 1)[0] for n in names[s]} for s in names}
    assert not (chars["train"] & chars["val"]) and not (chars["train"] & chars["test"])
    assert not (chars["val"] & chars["test"])
    for s, cs in chars.items():
        for c in cs:
            assert {f"{c}/{r}" for r in ROTS} <= set(names[s]), (s, c)


def test_overlapping_lists_are_refused(tmp_path):
    lists = dict(LISTS, test=LISTS["test"] + ["Alpha_A/character01/rot000"])
    base = write_omniglot(tmp_path, lists=lists)
    with pytest.raises(DatasetInvalidError, match="class-disjoint") as err:
        omniglot.load_omniglot(str(base))
    assert "\n" not in str(err.value)


def test_listed_character_without_images_is_named(tmp_path):
    base = write_omniglot(tmp_path, lists=dict(LISTS, val=["Alpha_A/character09/rot000"]))
    with pytest.raises(DatasetInvalidError, match=r"val\.txt:1: class Alpha_A/character09/rot000 has no images"):
        omniglot.load_omniglot(str(base))


def test_trainval_option(omni):
    data = omniglot.load_omniglot(str(omni), trainval=True)
    assert data.n_train_classes == 12 and len(data.train) == 12 * DRAWERS
    assert data.extras["split_class_names"]["val"] == LISTS["val"]


def test_second_load_uses_the_cache(omni, monkeypatch):
    first = omniglot.load_omniglot(str(omni))
    cached = list((omni / "omniglot" / ".cache").glob("*.pt"))
    assert len(cached) == 1 and not list((omni / "omniglot" / ".cache").glob("*.part"))
    payload = torch.load(cached[0], weights_only=True)
    assert payload["images"].dtype == torch.uint8

    def refuse(*args, **kwargs):
        raise AssertionError("the decoder must not run on a cached load")

    monkeypatch.setattr(omniglot, "decode_image", refuse)
    second = omniglot.load_omniglot(str(omni))
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(first, name).images, getattr(second, name).images)
    with pytest.raises(AssertionError, match="decoder"):  # another image_size is another key
        omniglot.load_omniglot(str(omni), image_size=14)
    write_lists(omni, dict(LISTS, test=LISTS["test"][:4]))  # a changed list is another key
    with pytest.raises(AssertionError, match="decoder"):
        omniglot.load_omniglot(str(omni))


def test_corrupt_cache_is_rebuilt(omni):
    omniglot.load_omniglot(str(omni))
    (path,) = (omni / "omniglot" / ".cache").glob("*.pt")
    path.write_bytes(b"not a torch file")
    data = omniglot.load_omniglot(str(omni))
    assert len(data.train) == 32 and torch.load(path, weights_only=True)["images"].shape[0] == 5 * DRAWERS


@pytest.mark.parametrize("what", ["nothing", "no_lists", "no_archives"])
def test_omniglot_missing_is_one_line(tmp_path, what):
    if what != "nothing":
        write_omniglot(tmp_path)
        if what == "no_lists":
            (tmp_path / "omniglot" / "splits" / "vinyals" / "test.txt").unlink()
        else:
            for top in ALPHABETS:
                (tmp_path / "omniglot" / f"{top}.zip").unlink()
    with pytest.raises(DatasetMissingError) as err:
        omniglot.load_omniglot(str(tmp_path))
    msg = str(err.value)
    assert "\n" not in msg and "dataset.dataset_path" in msg and str(tmp_path) in msg
    assert "images_background.zip" in msg and "splits/vinyals" in msg
    assert "python scripts/prepare_omniglot.py DIR" in msg


# ------------------------------------------------------------------------------------------ miniImageNet
MINI = {"train": ["n01", "n02", "n03"], "val": ["n04", "n05"], "test": ["n06", "n07"]}
PER_CLASS = 2


def write_mini_source(folder: Path, seed: int = 0, sizes=((30, 20), (84, 84))) -> Path:
    """Ravi-Larochelle layout in `folder`: images/<wnid><NNNN>.jpg and train/val/test.csv; returns folder."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for split, wnids in MINI.items():
        lines = ["filename,label"]
        for wnid in wnids:
            for i in range(PER_CLASS):
                name = f"{wnid}0000000{i}.jpg"
                w, h = sizes[i % len(sizes)]
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / "images" / name)
                lines.append(f"{name},{wnid}")
        (folder / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def mini(tmp_path):
    write_mini_source(tmp_path / "miniimagenet")
    return tmp_path


def test_miniimagenet_shapes_labels_and_classes(mini):
    data = miniimagenet.load_miniimagenet(str(mini))
    for split, wnids in MINI.items():
        s = getattr(data, split)
        assert s.images.shape == (len(wnids) * PER_CLASS, 3, 84, 84) and s.images.dtype == torch.uint8
        assert torch.equal(s.labels, torch.arange(len(wnids)).repeat_interleave(PER_CLASS))
        assert data.extras["split_class_names"][split] == wnids
    assert data.n_train_classes == 3 and data.open_set and data.channels == 3 and data.class_names == MINI["train"]
    # an 84x84 source is kept pixel for pixel (RGB), a smaller one is resized
    src = np.asarray(Image.open(mini / "miniimagenet" / "images" / "n0100000001.jpg").convert("RGB"))
    assert np.array_equal(data.train.images[1].permute(1, 2, 0).numpy(), src)


def test_miniimagenet_cache_and_image_size(mini, monkeypatch):
    first = miniimagenet.load_miniimagenet(str(mini), image_size=16)
    assert first.train.images.shape[-2:] == (16, 16)

    def refuse(*args, **kwargs):
        raise AssertionError("the decoder must not run on a cached load")

    monkeypatch.setattr(miniimagenet, "decode_image", refuse)
    second = miniimagenet.load_miniimagenet(str(mini), image_size=16)
    assert torch.equal(first.test.images, second.test.images)
    with pytest.raises(AssertionError, match="decoder"):
        miniimagenet.load_miniimagenet(str(mini), image_size=12)


def test_miniimagenet_missing_is_one_line(tmp_path):
    with pytest.raises(DatasetMissingError) as err:
        miniimagenet.load_miniimagenet(str(tmp_path))
    msg = str(err.value)
    assert "\n" not in msg and "dataset.dataset_path" in msg and "train,val,test}.csv" in msg
    assert "python scripts/prepare_miniimagenet.py DIR" in msg


def test_miniimagenet_bad_files_are_named(mini):
    csv_path = mini / "miniimagenet" / "val.csv"
    text = csv_path.read_text()
    csv_path.write_text(text + "n0100000000.jpg,n01\n")  # a train class in val
    with pytest.raises(DatasetInvalidError, match="class-disjoint"):
        miniimagenet.load_miniimagenet(str(mini))
    csv_path.write_text(text + "gone.jpg,n04\n")
    with pytest.raises(DatasetInvalidError, match=r"val\.csv:6: .*gone\.jpg is missing"):
        miniimagenet.load_miniimagenet(str(mini))
    csv_path.write_text("file,wnid\n")
    with pytest.raises(DatasetInvalidError, match="expected 'filename,label'"):
        miniimagenet.load_miniimagenet(str(mini))


# ------------------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("name, loader, build", [
    ("omniglot", "load_omniglot", lambda base: write_omniglot(base)),
    ("miniimagenet", "load_miniimagenet", lambda base: write_mini_source(base / "miniimagenet").parent),
])
def test_yaml_instantiates(tmp_path, name, loader, build):
    from hydra.utils import instantiate

    base = build(tmp_path)
    cfg = OmegaConf.create({"dataset": OmegaConf.load(REPO / "conf" / "dataset" / f"{name}.yaml")})
    OmegaConf.update(cfg, "dataset.dataset_path", str(base))
    assert cfg.dataset.loader._target_.endswith(loader) and cfg.dataset.open_set
    data = instantiate(cfg.dataset.loader)
    assert data.channels == cfg.dataset.channels and data.image_size == cfg.dataset.image_size
    assert data.name == name
    assert cfg.dataset.n_train_classes == {"omniglot": 4112, "miniimagenet": 64}[name]


# ------------------------------------------------------------------------------------------ prepare scripts
def _script(name):
    spec = importlib.util.spec_from_file_location(f"prepare_{name}", REPO / "scripts" / f"prepare_{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, flag", [("omniglot", "--no-verify"), ("miniimagenet", "--images")])
def test_prepare_help_works_offline(name, flag):
    out = subprocess.run([sys.executable, str(REPO / "scripts" / f"prepare_{name}.py"), "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and flag in out.stdout and "root" in out.stdout


def test_omniglot_table_has_no_invented_checksums():
    script = _script("omniglot")
    names = [prepare.url_filename(u) for u in script.URLS]
    assert names == ["images_background.zip", "images_evaluation.zip", "train.txt", "val.txt", "test.txt",
                     "trainval.txt"]
    for url in script.URLS:
        entry = prepare.ARCHIVES[prepare.url_filename(url)]
        assert entry.url == url and url.startswith("https://raw.githubusercontent.com/")
        assert not entry.verifiable and entry.source and entry.size is None


def _serve(monkeypatch, files):
    """urlopen serving `files` (file name -> bytes); records the URLs asked for."""
    asked = []

    class Response(io.BytesIO):
        headers = {}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def urlopen(url, timeout=None):
        asked.append(url)
        return Response(files[prepare.url_filename(url)])

    monkeypatch.setattr(prepare.urllib.request, "urlopen", urlopen)
    return asked


def _official_files(tmp_path):
    src = write_omniglot(tmp_path / "src")
    files = {p.name: p.read_bytes() for p in (src / "omniglot").glob("*.zip")}
    files.update({p.name: p.read_bytes() for p in (src / "omniglot" / "splits" / "vinyals").glob("*.txt")})
    return files


def test_prepare_omniglot_requires_no_verify(tmp_path, monkeypatch, capsys):
    asked = _serve(monkeypatch, _official_files(tmp_path))
    assert _script("omniglot").main([str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: no published checksum for images_background.zip")
    assert "--no-verify" in err[0]
    assert asked == [] and list((tmp_path / "out" / "omniglot").iterdir()) == []  # nothing fetched


def test_prepare_omniglot_downloads_with_no_verify(tmp_path, monkeypatch, capsys):
    files = _official_files(tmp_path)
    asked = _serve(monkeypatch, files)
    out = tmp_path / "out"
    assert _script("omniglot").main([str(out), "--no-verify"]) == 0
    assert [prepare.url_filename(u) for u in asked] == list(dict.fromkeys(
        prepare.url_filename(u) for u in prepare.default_urls("omniglot")))
    assert (out / "omniglot" / "images_background.zip").read_bytes() == files["images_background.zip"]
    assert (out / "omniglot" / "splits" / "vinyals" / "trainval.txt").read_bytes() == files["trainval.txt"]
    stdout = capsys.readouterr().out
    assert "omniglot: train 8 classes, val 4 classes, test 8 classes, trainval 12 classes" in stdout
    data = omniglot.load_omniglot(str(out))
    assert len(data.train) == 32
    asked.clear()  # a second run keeps the files in place
    assert _script("omniglot").main([str(out), "--no-verify"]) == 0 and asked == []


def test_prepare_omniglot_archive_option_and_failed_download(tmp_path, monkeypatch, capsys):
    files = _official_files(tmp_path)
    local = tmp_path / "local"
    local.mkdir()
    for name in ("images_background.zip", "images_evaluation.zip"):
        (local / name).write_bytes(files[name])
    asked = _serve(monkeypatch, {k: v for k, v in files.items() if k.endswith(".txt")})
    out = tmp_path / "out"
    args = [str(out), "--no-verify", "--archive", str(local / "images_background.zip"),
            "--archive", str(local / "images_evaluation.zip")]
    assert _script("omniglot").main(args) == 0
    assert all(u.endswith(".txt") for u in asked) and len(asked) == 4

    def down(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(prepare.urllib.request, "urlopen", down)
    assert _script("omniglot").main([str(tmp_path / "other"), "--no-verify"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("error: could not download https://raw.githubusercontent.com/") and "--archive" in err[-1]
    assert not list((tmp_path / "other" / "omniglot").glob("*.part"))


def test_prepare_miniimagenet_checks_and_lays_out(tmp_path, capsys):
    src = write_mini_source(tmp_path / "src")
    out = tmp_path / "out"
    script = _script("miniimagenet")
    assert script.main([str(out), "--images", str(src / "images")]) == 1  # not 64/16/20 x 600
    err = capsys.readouterr().err.splitlines()
    assert any("3 classes, expected 64" in line for line in err)
    assert err[-1] == f"error: {len(err) - 1} problem(s); nothing was written" and not out.exists()

    assert script.main([str(out), "--images", str(src / "images"), "--allow-other-counts"]) == 0
    for split in MINI:
        assert (out / "miniimagenet" / f"{split}.csv").read_bytes() == (src / f"{split}.csv").read_bytes()
    with Image.open(out / "miniimagenet" / "images" / "n0100000000.jpg") as im:
        assert im.size == (84, 84) and im.mode == "RGB"
    data = miniimagenet.load_miniimagenet(str(out))
    assert data.train.images.shape == (6, 3, 84, 84)
    assert script.main([str(out), "--allow-other-counts"]) == 0  # check the laid-out folder in place


def test_prepare_miniimagenet_one_line_per_problem(tmp_path, capsys):
    src = write_mini_source(tmp_path / "src")
    (src / "images" / "n0400000000.jpg").unlink()
    (src / "test.csv").write_text((src / "test.csv").read_text() + "n0100000000.jpg,n01\n")
    assert _script("miniimagenet").main([str(tmp_path / "out"), "--images", str(src / "images"),
                                         "--allow-other-counts"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3, err
    assert err[0].endswith("n0400000000.jpg is missing") and "val.csv" in err[0]
    assert "class n01 is in both train.csv and test.csv" in err[1]
    assert err[2] == "error: 2 problem(s); nothing was written"
    assert not (tmp_path / "out").exists()
