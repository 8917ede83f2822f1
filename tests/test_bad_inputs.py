"""The runner's catalogue of bad inputs: each is refused with one line naming the key or file and the fix,
before anything is written. The README's table of bad inputs lists these rows with their messages
(`python tests/test_bad_inputs.py` prints them); the dataset, prepare-script and evaluation-script rows
are tested in tests/datasets and tests/eval."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import FAST, compose_config  # noqa: E402
from vmf_embeddings.errors import UserError  # noqa: E402
from vmf_embeddings.main import run  # noqa: E402

TINY = ["mode.epochs=1", "sampler.n_episodes=2", "mode.evaluate_at_end=false", "mode.extract_at_end=false"]

#: (overrides, regex the one-line message must match); {tmp} is the test's scratch dir
CATALOGUE = [
    (["mode.epochs=abc"], r"^mode\.epochs='abc' must be an integer >= 1$"),
    (["arch=inception3"], r"^arch=inception3 needs images of at least 75 x 75 px, but dataset=digits has "
                          r"dataset\.image_size=28; use a dataset with larger images"),
    (["mode.epochs=0"], r"^mode\.epochs=0 must be an integer >= 1$"),
    (["mode.patience=-1"], r"^mode\.patience=-1 must be an integer >= 0$"),
    (["mode.max_steps_per_epoch=0"], r"^mode\.max_steps_per_epoch=0 must be an integer >= 1$"),
    (["mode.learning_rate=-1"], r"^mode\.learning_rate=-1 must be a finite number >= 0$"),
    (["mode.learning_rate=nan"], r"^mode\.learning_rate=nan must be a finite number >= 0$"),
    (["mode.momentum=abc"], r"^mode\.momentum='abc' must be a finite number >= 0$"),
    (["mode.temp_learning_rate=inf"], r"^mode\.temp_learning_rate=inf must be a finite number >= 0$"),
    (["mode.weight_decay=-0.1"], r"^mode\.weight_decay=-0\.1 must be a finite number >= 0$"),
    (["mode.checkpoint=foo"], r"^mode\.checkpoint='foo' must be best or last$"),
    (["mode.splits=[train,bogus]"], r"^mode\.splits names 'bogus'; choose from train, val, test$"),
    (["mode.batch_size=0"], r"^mode\.batch_size=0 must be an integer >= 1$"),
    (["+mode.epochz=3"], r"^mode\.epochz is not a mode key \(a typo\?\); the mode keys are "),
    (["sampler.n_episodes=0"], r"^sampler\.n_episodes=0 must be an integer >= 1$"),
    (["sampler.n_classes=0"], r"^sampler\.n_classes=0 must be an integer >= 1$"),
    (["sampler.n_samples=-1"], r"^sampler\.n_samples=-1 must be an integer >= 1$"),
    (["sampler=random", "sampler.batch_size=0"], r"^sampler\.batch_size=0 must be an integer >= 1$"),
    (["sampler.n_classes=12"], r"^sampler\.n_classes=12 but the training split of digits has 10 classes"),
    (["arch.params.embedding_dim=0"], r"^arch\.params\.embedding_dim=0 must be an integer >= 1$"),
    (["method=vmf_softmax", "arch.params.embedding_dim=1"], r"^arch\.params\.embedding_dim=1: vmf_softmax needs"),
    (["arch.params.n_classes=7"], r"^arch\.params\.n_classes=7 but dataset=digits trains on 10 classes"),
    (["method=vmf_softmax", "arch.params.use_vmf=false"], r"^arch\.params\.use_vmf=False does not match method=vmf"),
    (["arch.params.learn_temp=true"], r"^arch\.params\.learn_temp=True but method=unnormalized_sce has no"),
    (["arch.params.init_temp=-1"], r"^arch\.params\.init_temp=-1 but method=unnormalized_sce has no"),
    (["method=vmf_softmax", "method.params.kappa_confidence=1.5"], r"kappa_confidence=1\.5 must lie in \(0, 1\)"),
    (["method=arcface", "method.params.m=abc"], r"^building vmf_embeddings\.methods\.arcface\.ArcFace: "),
    (["optimizer=adam", "optimizer.betas=[0.9]"], r"^optimizer=adam rejects its settings \(.*\); check the optimizer"),
    (["seed=-1"], r"^seed=-1 must be an integer >= 0$"),
    (["threads=0"], r"^threads=0 must be auto or a positive integer$"),
    (["device=cuda:3"] if not torch.cuda.is_available() else ["device=nonsense"], r"^device="),
    (["resume=true", "overwrite=true"], r"^resume=true and overwrite=true contradict each other"),
    (["resume=true"], r"^resume=true but there is no checkpoint at .*last\.pt; drop resume=true"),
    (["resume_from=middle"], r"^resume_from='middle' must be last or best$"),
    (["name=../../.."], r"^name='\.\./\.\./\.\.' must be a plain relative name"),
    (["run_dir=elsewhere/run"], r"^run_dir=elsewhere/run lies outside runs_root="),
    (["runs_root={tmp}/a_file/runs"], r"a_file is not a directory, so no run dir can be created"),
    (["method.head._target_=os.system"], r"^method\.head\._target_=os\.system is not an allowed _target_"),
    (["dataset=cifar10", "dataset.dataset_path={tmp}/none", "dataset.loader.download=false"],
     r"^dataset 'cifar10' not found under dataset\.dataset_path="),
    (["method=hpn_regression"], r"needs regression targets, but the training split has none"),
    (["mode.learning_rate=1e30", "mode.epochs=1", "sampler.n_episodes=20"],
     r"^loss became NaN/inf at epoch 0, step \d+; the last good checkpoint is kept at "),
    (["mode=get_embeddings"], r"^no saved training config at .*config\.yaml: train this run first"),
]


def _ids():
    return [" ".join(o).replace("{tmp}/", "") for o, _ in CATALOGUE]


def refusal(overrides, tmp_path: Path) -> str:
    """Run the overrides; return the one-line message of the UserError they raise."""
    (tmp_path / "a_file").write_text("")
    overrides = [o.replace("{tmp}", str(tmp_path)) for o in overrides]
    tiny = [o for o in TINY if "sampler=random" not in overrides or not o.startswith("sampler.")]
    root = [] if any(o.startswith("runs_root=") for o in overrides) else [f"runs_root={tmp_path}/runs"]
    cfg = compose_config(FAST + tiny + root + overrides)
    with pytest.raises(UserError) as info:
        run(cfg, tmp_path / "runs" / "run", overrides=overrides)
    return str(info.value)


@pytest.mark.parametrize("overrides, pattern", CATALOGUE, ids=_ids())
def test_bad_input_is_refused_in_one_line(tmp_path, overrides, pattern):
    message = refusal(overrides, tmp_path)
    assert "\n" not in message and re.search(pattern, message), message
    checkpoints = tmp_path / "runs" / "run" / "checkpoints"
    if "NaN" not in pattern:
        assert not checkpoints.exists()  # refused before anything was trained or written


def test_a_too_small_image_for_the_arch_is_refused_before_the_run_records(tmp_path):
    refusal(["arch=inception3"], tmp_path)
    assert not (tmp_path / "runs" / "run" / "config.yaml").exists()


def test_the_catalogue_is_large_enough():
    assert len(CATALOGUE) >= 40


if __name__ == "__main__":  # print the README rows: `python tests/test_bad_inputs.py`
    import tempfile

    class _Raises:
        def __init__(self, *a, **k):
            self.value = None

        def __enter__(self):
            return self

        def __exit__(self, kind, value, tb):
            self.value = value
            return True

    pytest.raises = _Raises  # type: ignore[assignment]
    for overrides, _ in CATALOGUE:
        with tempfile.TemporaryDirectory() as tmp:
            message = refusal(overrides, Path(tmp)).replace(tmp, "<tmp>")
        print(f"| `{' '.join(overrides).replace('{tmp}', '<tmp>')}` | {message.replace('|', '/')} |")
