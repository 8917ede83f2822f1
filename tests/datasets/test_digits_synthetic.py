"""Bundled datasets: sklearn digits (the default) and the synthetic clusters."""

import time

import numpy as np
import torch

from vmf_embeddings.datasets.base import TensorSplit
from vmf_embeddings.datasets.digits import load_digits
from vmf_embeddings.datasets.synthetic import load_synthetic


def test_digits_shapes_sizes_and_stratification():
    load_digits()  # warm sklearn's file cache; the timing below is the loader itself
    start = time.perf_counter()
    data = load_digits(seed=1234)
    assert time.perf_counter() - start < 2.0  # ~0.2 s alone; generous for a loaded 2-core CI box
    assert isinstance(data.train, TensorSplit)
    assert (len(data.train), len(data.val), len(data.test)) == (1257, 270, 270)
    for split in (data.train, data.val, data.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (1, 28, 28)
        assert split.labels.dtype == torch.int64
        # stratified: each class holds its overall share of the split, +-1 image
        counts = torch.bincount(split.labels, minlength=10).numpy()
        overall = np.bincount(np.concatenate([s.labels.numpy() for s in (data.train, data.val, data.test)]))
        assert np.all(np.abs(counts - overall * len(split) / 1797) <= 1.0)
    assert int(data.train.images.max()) == 255 and int(data.train.images.min()) == 0
    assert data.n_train_classes == 10 and data.channels == 1 and data.image_size == 28 and not data.open_set


def test_digits_split_depends_on_seed_only():
    a, b, c = load_digits(seed=1), load_digits(seed=1), load_digits(seed=2)
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.test.labels, b.test.labels)
    assert not torch.equal(a.val.images, c.val.images)


def test_digits_splits_partition_the_dataset():
    """train + val + test equal all 1,797 images as a multiset (no image lost or duplicated)."""
    from sklearn.datasets import load_digits as sk

    from vmf_embeddings.datasets.digits import _upscale

    data = load_digits()
    rows = torch.cat([data.train.images, data.val.images, data.test.images]).flatten(1)
    every = _upscale(sk().data, 28).flatten(1)
    got, got_counts = torch.unique(rows, dim=0, return_counts=True)
    ref, ref_counts = torch.unique(every, dim=0, return_counts=True)
    assert torch.equal(got, ref) and torch.equal(got_counts, ref_counts)


def test_synthetic_closed_and_open_set():
    data = load_synthetic(n_classes=4, n_per_class=6, seed=3)
    assert data.train.images.shape == (24, 1, 28, 28) and data.train.images.dtype == torch.uint8
    assert data.n_train_classes == 4 and not data.open_set
    assert torch.equal(data.train.images, load_synthetic(n_classes=4, n_per_class=6, seed=3).train.images)
    # classes are separable: nearest class mean (cosine) recovers the test labels
    means = torch.stack([data.train.images[data.train.labels == k].float().mean(0).flatten() for k in range(4)])
    test = data.test.images.float().flatten(1)
    pred = torch.nn.functional.normalize(test, dim=1) @ torch.nn.functional.normalize(means, dim=1).T
    assert (pred.argmax(1) == data.test.labels).float().mean() > 0.9

    open_data = load_synthetic(n_classes=4, n_per_class=3, open_set=True, n_heldout_classes=2)
    assert open_data.open_set and open_data.n_train_classes == 4
    assert open_data.val.labels.unique().tolist() == [0, 1] and len(open_data.test) == 6
    # held-out patterns are new classes, not copies of training ones
    assert not torch.equal(open_data.val.images[:3], open_data.train.images[:3])
