"""scripts/prepare_*.py: --help offline, archive extraction and list writing (no network)."""

import subprocess
import sys
import tarfile
from argparse import Namespace
from pathlib import Path

import pytest

import dataset_fakes
from vmf_embeddings.datasets import prepare
from vmf_embeddings.datasets.archives import read_cub200, read_lists, read_sop

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["cars196", "cub200", "sop"])
def test_help_works_offline(name):
    out = subprocess.run([sys.executable, str(REPO / "scripts" / f"prepare_{name}.py"), "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--archive" in out.stdout and "root" in out.stdout


def test_extracts_archive_and_writes_lists(tmp_path):
    staging = tmp_path / "staging"
    dataset_fakes.write_cub200(staging, n_images=0)
    archive = tmp_path / "CUB_200_2011.tgz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(staging / "CUB_200_2011", arcname="CUB_200_2011")
    root = tmp_path / "cub"
    args = Namespace(root=root, url=None, archive=[archive], skip_download=False)
    assert prepare.run(args, "cub200", [], read_cub200, "CUB files") == 0
    lists = read_lists(root)
    assert {s: len(set(labels.tolist())) for s, (_, labels) in lists.items()} == {"train": 85, "val": 15, "test": 100}
    first = (root / "train.txt").read_text().splitlines()[0]
    assert first == "CUB_200_2011/images/001.Bird_1/Bird_1_0000.jpg,0"


def test_skip_download_on_extracted_sop(tmp_path):
    dataset_fakes.write_sop(tmp_path, n_images=0)
    args = Namespace(root=tmp_path, url=None, archive=None, skip_download=True)
    assert prepare.run(args, "sop", [], read_sop, "SOP files") == 0
    assert len((tmp_path / "test.txt").read_text().splitlines()) == 11316


def test_unreachable_url_fails_cleanly(tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(prepare.urllib.request, "urlopen", offline)
    args = Namespace(root=tmp_path, url=["http://example.invalid/x.tgz"], archive=None, skip_download=False)
    assert prepare.run(args, "sop", [], read_sop, "SOP files") == 1
    assert "--archive" in capsys.readouterr().err
