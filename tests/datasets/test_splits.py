"""Split helpers: the vMF protocol's sizes and fixed validation class lists (google-research/vmf_embeddings)."""

import numpy as np
import pytest

from vmf_embeddings.datasets.splits import (reindex, reindex_to, stratified_split, subsample_per_class,
                                            validation_classes)

CARS_VAL = [29, 33, 36, 39, 40, 44, 54, 55, 57, 61, 62, 63, 78, 85, 92]
CUB_VAL = [27, 33, 35, 39, 40, 42, 56, 59, 61, 63, 68, 81, 85, 94, 98]


@pytest.mark.parametrize("n, n_val", [(60000, 9000), (50000, 7500)])
def test_stratified_85_15_sizes(n, n_val):
    labels = np.arange(n) % 10
    keep, val = stratified_split(labels, 0.15, 1234)
    assert (len(keep), len(val)) == (n - n_val, n_val)
    assert len(np.intersect1d(keep, val)) == 0 and len(np.union1d(keep, val)) == n
    assert (np.bincount(labels[val]) == n_val // 10).all()


def test_stratified_split_matches_sklearn_on_arrays():
    """Splitting indices gives the same partition and order as the original split of the arrays."""
    from sklearn.model_selection import train_test_split

    rng = np.random.RandomState(0)
    labels = rng.randint(0, 7, size=500)
    data = rng.rand(500)
    x_keep, x_val = train_test_split(data, test_size=0.15, stratify=labels, random_state=1234)
    keep, val = stratified_split(labels, 0.15, 1234)
    np.testing.assert_array_equal(data[keep], x_keep)
    np.testing.assert_array_equal(data[val], x_val)


def test_stratified_split_keeps_singleton_classes_in_train():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2])
    keep, val = stratified_split(labels, 0.25, 0)
    assert 8 in keep and 8 not in val
    assert len(keep) + len(val) == 9


def test_validation_class_lists_of_the_note():
    assert validation_classes(98, 15).tolist() == CARS_VAL
    assert validation_classes(100, 15).tolist() == CUB_VAL
    sop = validation_classes(11318, 1698)
    assert sop[:10].tolist() == [1, 2, 5, 6, 14, 18, 19, 25, 26, 43]
    assert len(np.unique(sop)) == 1698 and int(sop.sum()) == 9_654_213


def test_validation_classes_leave_global_numpy_state_alone():
    np.random.seed(7)
    before = np.random.get_state()[1].copy()
    validation_classes(98, 15)
    np.testing.assert_array_equal(np.random.get_state()[1], before)


def test_reindex_and_reindex_to():
    new, classes = reindex(np.array([10, 3, 10, 7]))
    assert new.tolist() == [2, 0, 2, 1] and classes.tolist() == [3, 7, 10]
    assert reindex_to(np.array([7, 3]), classes).tolist() == [1, 0]
    with pytest.raises(ValueError):
        reindex_to(np.array([5]), classes)


def test_subsample_per_class_is_seeded_and_capped():
    labels = np.repeat(np.arange(5), [1, 2, 3, 10, 4])
    idx = subsample_per_class(labels, 3, seed=0)
    assert np.bincount(labels[idx]).tolist() == [1, 2, 3, 3, 3]
    np.testing.assert_array_equal(idx, subsample_per_class(labels, 3, seed=0))
    assert any(not np.array_equal(idx, subsample_per_class(labels, 3, seed=s)) for s in range(1, 6))
