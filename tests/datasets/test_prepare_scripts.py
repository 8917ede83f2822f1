"""scripts/prepare_*.py: --help offline, archive verification, extraction and list writing (no network:
archives are served from tmp_path through file:// URLs, and table entries are patched to their real digests)."""

import hashlib
import importlib.util
import subprocess
import sys
import tarfile
from argparse import Namespace
from dataclasses import replace
from pathlib import Path

import pytest

import dataset_fakes
from vmf_embeddings.datasets import prepare
from vmf_embeddings.datasets.archives import read_cub200, read_lists, read_sop

REPO = Path(__file__).resolve().parents[2]
CUB = "CUB_200_2011.tgz"
SCRIPT_FIRST_ARCHIVE = {"cars196": "car_ims.tgz", "cub200": CUB, "sop": "Stanford_Online_Products.zip"}


def _args(root, url=None, archive=None, skip_download=False, no_verify=False):
    return Namespace(root=root, url=url, archive=archive, skip_download=skip_download, no_verify=no_verify)


def _real_spec(path: Path, **overrides) -> prepare.ArchiveSpec:
    """The table entry of CUB_200_2011.tgz with the size and digests of `path` (then `overrides`)."""
    data = path.read_bytes()
    spec = replace(prepare.ARCHIVES[CUB], size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                   md5=hashlib.md5(data).hexdigest())
    return replace(spec, **overrides)


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("urlopen must not be called")

    monkeypatch.setattr(prepare.urllib.request, "urlopen", refuse)


@pytest.fixture(scope="module")
def cub_tgz(tmp_path_factory):
    """A tiny CUB_200_2011.tgz (metadata of all 200 classes, no images) in a folder of its own."""
    tmp = tmp_path_factory.mktemp("cub_archive")
    dataset_fakes.write_cub200(tmp / "staging", n_images=0)
    archive = tmp / "served" / CUB
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp / "staging" / "CUB_200_2011", arcname="CUB_200_2011")
    return archive


@pytest.mark.parametrize("name", ["cars196", "cub200", "sop"])
def test_help_works_offline(name):
    out = subprocess.run([sys.executable, str(REPO / "scripts" / f"prepare_{name}.py"), "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--archive" in out.stdout and "root" in out.stdout
    assert "--no-verify" in out.stdout


@pytest.mark.parametrize("name", ["cars196", "cub200", "sop"])
def test_every_default_url_has_a_checksum(name):
    spec = importlib.util.spec_from_file_location(f"prepare_{name}", REPO / "scripts" / f"prepare_{name}.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.URLS == prepare.default_urls(name) and script.URLS
    for url in script.URLS:
        entry = prepare.ARCHIVES[prepare.url_filename(url)]
        assert entry.verifiable and entry.source
        assert entry.sha256 is None or (len(entry.sha256) == 64 and int(entry.sha256, 16) >= 0)
        assert entry.md5 is None or (len(entry.md5) == 32 and int(entry.md5, 16) >= 0)
        assert url.startswith("https://") or url.startswith("ftp://cs.stanford.edu/")  # SOP: FTP only


def test_extracts_archive_and_writes_lists(tmp_path, cub_tgz, monkeypatch):
    monkeypatch.setitem(prepare.ARCHIVES, CUB, _real_spec(cub_tgz))
    root = tmp_path / "cub"
    assert prepare.run(_args(root, archive=[cub_tgz]), "cub200", [], read_cub200, "CUB files") == 0
    lists = read_lists(root)
    assert {s: len(set(labels.tolist())) for s, (_, labels) in lists.items()} == {"train": 85, "val": 15, "test": 100}
    first = (root / "train.txt").read_text().splitlines()[0]
    assert first == "CUB_200_2011/images/001.Bird_1/Bird_1_0000.jpg,0"


def test_verified_download_is_accepted(tmp_path, cub_tgz, monkeypatch):
    monkeypatch.setitem(prepare.ARCHIVES, CUB, _real_spec(cub_tgz))
    root = tmp_path / "cub"
    assert prepare.run(_args(root, url=[cub_tgz.as_uri()]), "cub200", [], read_cub200, "CUB files") == 0
    assert (root / CUB).read_bytes() == cub_tgz.read_bytes()
    assert not list(root.glob("*.part")) and read_lists(root) is not None


@pytest.mark.parametrize("broken", ["sha256", "md5", "size", "longer"])
def test_corrupted_download_is_deleted(tmp_path, cub_tgz, monkeypatch, capsys, broken):
    good = _real_spec(cub_tgz)
    wrong = {"sha256": {"sha256": "0" * 64}, "md5": {"md5": "0" * 32}, "size": {"size": good.size + 1},
             "longer": {"size": good.size // 2}}[broken]
    monkeypatch.setitem(prepare.ARCHIVES, CUB, replace(good, **wrong))
    root = tmp_path / "cub"
    assert prepare.run(_args(root, url=[cub_tgz.as_uri()]), "cub200", [], read_cub200, "CUB files") == 1
    line = _error_line(capsys)
    assert f"download of {CUB}" in line and "expected" in line and "deleted" in line and "--no-verify" in line
    assert ("size more than" in line) == (broken == "longer")
    assert list(root.iterdir()) == []  # nothing kept: no archive, no partial file


def test_failed_transfer_removes_partial_file(tmp_path, monkeypatch, capsys):
    class Broken:
        headers = {}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, n):
            raise TimeoutError("timed out")

    monkeypatch.setattr(prepare.urllib.request, "urlopen", lambda *args, **kwargs: Broken())
    root = tmp_path / "cub"
    assert prepare.run(_args(root, url=["https://example.invalid/" + CUB]), "cub200", [], read_cub200, "x") == 1
    assert "could not download" in _error_line(capsys)
    assert list(root.iterdir()) == []


def test_existing_corrupted_archive_is_refused_and_kept(tmp_path, cub_tgz, monkeypatch, capsys):
    _no_network(monkeypatch)
    monkeypatch.setitem(prepare.ARCHIVES, CUB, _real_spec(cub_tgz))
    root = tmp_path / "cub"
    root.mkdir()
    (root / CUB).write_bytes(cub_tgz.read_bytes()[:-10])  # a truncated earlier download
    assert prepare.run(_args(root), "cub200", [prepare.ARCHIVES[CUB].url], read_cub200, "x") == 1
    line = _error_line(capsys)
    assert str(root / CUB) in line and "left in place" in line and "delete it" in line and "--no-verify" in line
    assert (root / CUB).stat().st_size == cub_tgz.stat().st_size - 10


def test_existing_good_archive_is_reverified_and_used(tmp_path, cub_tgz, monkeypatch, capsys):
    _no_network(monkeypatch)
    monkeypatch.setitem(prepare.ARCHIVES, CUB, _real_spec(cub_tgz))
    root = tmp_path / "cub"
    root.mkdir()
    (root / CUB).write_bytes(cub_tgz.read_bytes())
    assert prepare.run(_args(root), "cub200", [prepare.ARCHIVES[CUB].url], read_cub200, "x") == 0
    assert "(verified)" in capsys.readouterr().out


def test_corrupted_archive_option_is_refused_and_kept(tmp_path, cub_tgz, monkeypatch, capsys):
    monkeypatch.setitem(prepare.ARCHIVES, CUB, _real_spec(cub_tgz, sha256="f" * 64))
    assert prepare.run(_args(tmp_path / "cub", archive=[cub_tgz]), "cub200", [], read_cub200, "x") == 1
    line = _error_line(capsys)
    assert str(cub_tgz) in line and "sha256" in line and "replace it" in line and "--no-verify" in line
    assert cub_tgz.is_file()


def test_file_without_checksum_requires_no_verify(tmp_path, monkeypatch, capsys):
    _no_network(monkeypatch)
    monkeypatch.setitem(prepare.ARCHIVES, CUB, replace(prepare.ARCHIVES[CUB], sha256=None, md5=None))
    for url in ["https://example.invalid/x.tgz", "https://example.invalid/" + CUB]:
        assert prepare.run(_args(tmp_path / "r", url=[url]), "cub200", [], read_cub200, "x") == 1
        line = _error_line(capsys)
        assert "no published checksum" in line and url in line and "--no-verify" in line


def test_no_verify_skips_the_check(tmp_path, cub_tgz, monkeypatch, capsys):
    monkeypatch.setitem(prepare.ARCHIVES, CUB, _real_spec(cub_tgz, sha256="0" * 64, size=1))
    root = tmp_path / "cub"
    assert prepare.run(_args(root, url=[cub_tgz.as_uri()], no_verify=True), "cub200", [], read_cub200, "x") == 0
    assert (root / CUB).read_bytes() == cub_tgz.read_bytes() and read_lists(root) is not None
    assert "--no-verify" in capsys.readouterr().err


def test_no_verify_uses_an_existing_mismatching_archive(tmp_path, cub_tgz, monkeypatch, capsys):
    _no_network(monkeypatch)
    monkeypatch.setitem(prepare.ARCHIVES, CUB, _real_spec(cub_tgz, md5="0" * 32))
    root = tmp_path / "cub"
    root.mkdir()
    (root / CUB).write_bytes(cub_tgz.read_bytes())
    args = _args(root, no_verify=True)
    assert prepare.run(args, "cub200", [prepare.ARCHIVES[CUB].url], read_cub200, "x") == 0
    assert "not verified" in capsys.readouterr().out


def test_damaged_archive_under_no_verify_fails_in_one_line(tmp_path, capsys):
    served = tmp_path / "served" / CUB
    served.parent.mkdir()
    served.write_bytes(b"not an archive")
    args = _args(tmp_path / "cub", url=[served.as_uri()], no_verify=True)
    assert prepare.run(args, "cub200", [], read_cub200, "x") == 1
    warning, error = capsys.readouterr().err.splitlines()
    assert warning.startswith("warning: --no-verify") and error.startswith("error: could not extract")


@pytest.mark.parametrize("name", ["cars196", "cub200", "sop"])
def test_script_rejects_a_wrong_file_against_the_real_table(tmp_path, name):
    served = tmp_path / "served" / SCRIPT_FIRST_ARCHIVE[name]
    served.parent.mkdir()
    served.write_bytes(b"not the published archive")
    root = tmp_path / "root"
    cmd = [sys.executable, str(REPO / "scripts" / f"prepare_{name}.py"), str(root), "--url", served.as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: download of {served.name}") and "expected" in lines[0]
    assert list(root.iterdir()) == []


def test_skip_download_on_extracted_sop(tmp_path):
    dataset_fakes.write_sop(tmp_path, n_images=0)
    args = Namespace(root=tmp_path, url=None, archive=None, skip_download=True)
    assert prepare.run(args, "sop", [], read_sop, "SOP files") == 0
    assert len((tmp_path / "test.txt").read_text().splitlines()) == 11316


def test_unreachable_url_fails_cleanly(tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(prepare.urllib.request, "urlopen", offline)
    args = _args(tmp_path, url=["http://example.invalid/Stanford_Online_Products.zip"])
    assert prepare.run(args, "sop", [], read_sop, "SOP files") == 1
    assert "--archive" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
