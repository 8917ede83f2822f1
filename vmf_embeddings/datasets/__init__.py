"""Dataset loaders, samplers and batch augmentation.

Every loader is `load_<name>(dataset_path, seed=1234, **options) -> DataSplits`, named by `_target_`
in `conf/dataset/<name>.yaml` (no registry):

- `digits.load_digits` (default; bundled with scikit-learn, no download), `synthetic.load_synthetic`;
- `torchvision_sets.load_{mnist,fashion_mnist,cifar10,cifar100}` (in memory, uint8);
- `image_lists.load_{cars196,cub200,sop}` (on disk, class-disjoint retrieval protocol);
- `imagenet200.load_imagenet200`, `omniart.load_omniart` (on disk, HPN experiments).

In-memory splits are augmented on the device by `augment.DeviceAugment`; on-disk splits are read
through `files.FileSplitDataset`. Batches come from `samplers.EpisodicSampler` / `RandomSampler`.
`DataSplits.extras` may hold `original_labels` ({split: LongTensor} of the dataset's own class ids,
for open-set datasets) and dataset-specific facts (e.g. OmniArt `year_range`).

Bad data is refused while the splits are built, in one line naming the file (`DatasetInvalidError`,
`DatasetMissingError`): `base.check_split` on every split, `files.check_image_files` for on-disk images
(loader option `verify_files`, default true), and `FileSplitDataset` when an image fails to decode.

Nothing heavy is imported here (the base names are resolved lazily), so `scripts/prepare_*.py
--help` and `import vmf_embeddings.datasets` stay fast: torch/torchvision/sklearn load only when a
loader or the base containers are used.
"""

from typing import Any

__all__ = ["DataSplits", "DatasetInvalidError", "DatasetMissingError", "FileSplit", "Split", "TensorSplit",
           "check_labels", "check_split", "missing_dataset"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
