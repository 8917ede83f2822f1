"""Run dirs are derived from the model-shaping overrides; multirun jobs never share one."""

from __future__ import annotations

from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from tests.conftest import compose_config
from vmf_embeddings.rundir import derived_name, run_name


def _run_dir(overrides):
    cfg = compose_config(overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return OmegaConf.to_container(cfg.hydra.run, resolve=True)["dir"]


def test_train_and_get_embeddings_share_the_derived_dir():
    model = ["method=normalized_sce", "arch.params.init_temp=-1.0", "arch.params.embedding_dim=8"]
    train = _run_dir(model + ["mode.learning_rate=0.3", "sampler.n_episodes=5", "device=cpu"])
    extract = _run_dir(model + ["mode=get_embeddings", "mode.batch_size=64"])
    assert train == extract == "runs/digits/normalized_sce/8dim/arch.params.init_temp:-1.0"


def test_explicit_name_and_defaults():
    assert _run_dir(["name=mnist_vmf_softmax", "method=vmf_softmax"]) == "runs/digits/vmf_softmax/3dim/mnist_vmf_softmax"
    assert _run_dir([]) == "runs/digits/unnormalized_sce/3dim/default"
    assert _run_dir(["run_dir=/tmp/x"]) == "/tmp/x"


def test_derived_name_is_order_free_and_safe():
    a = derived_name(["arch.params.init_temp=-1", "seed=3", "mode.learning_rate=2"])
    b = derived_name(["seed=3", "arch.params.init_temp=-1"])
    assert a == b == "arch.params.init_temp:-1+seed:3"
    assert "/" not in derived_name(["dataset.loader.seed=1", "arch=a/b"])
    # pasteable into run_dir=... without quotes: Hydra's grammar accepts the whole path
    from hydra.core.override_parser.overrides_parser import OverridesParser

    name = derived_name(["arch.params.init_temp=-1.0", "seed=3", "scheduler.milestones=[1,2]"])
    assert OverridesParser.create().parse_override(f"run_dir=runs/x/{name}").value() == f"runs/x/{name}"
    assert len(derived_name([f"k{i}=v{i}" for i in range(100)])) <= 100


def test_multirun_jobs_get_distinct_names_even_with_a_name():
    jobs = [["mode.learning_rate=0.1"], ["mode.learning_rate=0.5"]]
    names = {run_name(None, job, multirun=True) for job in jobs}
    assert len(names) == 2
    named = {run_name("sweep", job, multirun=True) for job in jobs}
    assert len(named) == 2 and all(n.startswith("sweep/") for n in named)


def test_readme_sweep_example_job_names():
    """README: `-m method=normalized_sce,arcface mode.learning_rate=0.1,0.5` -> .../arcface/3dim/mode.learning_rate:0.1"""
    assert run_name(None, ["method=arcface", "mode.learning_rate=0.1"], multirun=True) == "mode.learning_rate:0.1"
