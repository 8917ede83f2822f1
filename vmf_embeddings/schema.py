"""The one schema of the config: the keys every group option must have, and the evaluation defaults.

- `REQUIRED_KEYS`: what a `method`, `dataset` or `arch` YAML must define. A YAML that lacks one is
  refused before anything runs, in one line naming the file and the key (`check_required_keys`).
- `EvalOptions`: every `eval.*` option with its default. It is registered with Hydra's ConfigStore as
  the `eval` node of conf/config.yaml, so each key is accepted on the command line (`eval.clustering=false`)
  and `scripts/evaluate.py --set KEY=VALUE` reads the same list.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from omegaconf import DictConfig, OmegaConf

from vmf_embeddings.errors import ConfigError

#: group -> keys its option YAML must define (dotted paths inside the group's node)
REQUIRED_KEYS: Dict[str, Tuple[str, ...]] = {
    "method": ("name", "optim.learning_rate", "optim.momentum", "optim.nesterov", "optim.temp_learning_rate",
               "head._target_"),
    "dataset": ("name", "dataset_path", "n_train_classes", "open_set", "channels", "image_size", "loader._target_"),
    "arch": ("name", "params.embedding_dim", "backbone._target_"),
}


#: `dataset.store` values (vmf_embeddings/datasets/store.py): read the image files | use (or build) the
#: decoded-image store | decode it again
STORE_MODES = ("none", "auto", "rebuild")

#: every key of the mode group (conf/mode/train.yaml); an unknown `+mode.<key>` is a typo, refused
MODE_KEYS = frozenset({
    "name", "learning_rate", "temp_learning_rate", "momentum", "nesterov", "weight_decay", "epochs", "patience",
    "max_steps_per_epoch", "extract_at_end", "evaluate_at_end", "checkpoint", "splits", "batch_size", "projector",
    "projector_max_points",
})


@dataclass
class EvalOptions:
    """Evaluation options: `eval.<key>=...` on the command line, `--set key=value` for scripts/evaluate.py."""

    vmf_samples: int = 10  # Monte-Carlo draws of sampled predictions (vMF), at validation and extraction
    vmf_retrieval_samples: Optional[int] = None  # draws of the sampled vMF retrieval; null = vmf_samples; 0 = skip
    seed: int = 1234  # seeds every sampled prediction and the k-means of NMI / AMI
    batch_size: int = 512  # batch size of the validation pass
    n_bins: int = 15  # calibration bins (ECE, MCE, reliability diagrams)
    recall_ks: Optional[List[int]] = None  # Recall@K list; null = dataset.recall_ks, else 1, 2, 4, 8
    clustering: bool = True  # NMI / AMI (k-means with one centroid per class)
    splits: List[str] = field(default_factory=lambda: ["train", "val", "test"])  # splits evaluate.py reads
    cost_matrix: Optional[str] = None  # tree / lca / ordinal, or a C x C .npy of mistake costs -> avg_cost, ...
    few_shot: Optional[Any] = None  # {n_way, k_shot, n_query, n_episodes} or a list of them (the first: validation)
    val_episodes: int = 100  # few-shot episodes per validation (eval.few_shot's way, shot and query)
    # {n_classes, n_samples, n_batches}: also report the mean accuracy of random class-balanced test batches (the
    # RepMet seed's "episodic" number: a sampled estimate of plain test accuracy, not a few-shot task)
    sampled_batches: Optional[Any] = None
    mc_on_train: bool = False  # sampled predictions on the training split too (costly on large sets)
    backend: str = "auto"  # kNN backend: auto | faiss | numpy | torch
    device: Optional[str] = None  # evaluation device; null = CUDA when present
    plots: bool = True  # reliability_<split>.png (and embeddings_test.png for 2-D runs) beside metrics.json
    # relative tolerance of the projection analysis (n_overlap, n_overlap_errors, overlap_error_ratio; a
    # reconstruction, vmf_embeddings/eval/overlap.py): outputs within tol * max norm are "the same point"
    overlap_tol: float = 1e-6
    # few-shot detection episodes on the dataset's novel classes after base training (method=repmet_det):
    # {n_way, k_shot, n_query, n_episodes}; null = none (vmf_embeddings/detection/fewshot.py)
    detection_episodes: Optional[Any] = None


EVAL_DEFAULTS: Dict[str, Any] = asdict(EvalOptions())


def register_schema() -> None:
    """Put the eval defaults into Hydra's ConfigStore (`- eval: default` in conf/config.yaml). Idempotent."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="eval", name="default", node=EvalOptions)


def _option_file(group: str, option: Optional[str]) -> str:
    return f"conf/{group}/{option}.yaml" if option else f"the {group} config"


def check_required_keys(cfg: DictConfig, choices: Optional[Dict[str, str]] = None) -> None:
    """Refuse a group option whose YAML lacks a required key, naming the file and the key in one line.

    `choices` maps each group to the chosen option name (Hydra's runtime choices), used to name the
    file; without it the option's own `name` key is used.
    """
    for group, keys in REQUIRED_KEYS.items():
        node = cfg.get(group)
        option = (choices or {}).get(group) or (OmegaConf.select(cfg, f"{group}.name") if node is not None else None)
        if node is None:
            raise ConfigError(f"the config has no '{group}' node; pick an option with {group}=<name>")
        for key in keys:
            if OmegaConf.select(node, key, default=None, throw_on_missing=False) is None:
                raise ConfigError(
                    f"{_option_file(group, option)} lacks the required key '{group}.{key}'; add it "
                    f"(the keys every {group} option needs are listed in vmf_embeddings/schema.py)"
                )
