"""Class cost matrices: tree / LCA from a hierarchy, ordinal, CSV; one-line refusals; written into the run dir."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import FAST, compose_config
from vmf_embeddings.costs import check_cost_matrix, csv_cost, lca_cost, ordinal_cost, tree_cost
from vmf_embeddings.errors import ConfigError

D_VIS = [[[1, 7], [4]], [[0, 6, 9], [3, 8]], [[2, 5]]]


def test_tree_cost_of_the_visual_digit_hierarchy():
    d = tree_cost(10, D_VIS)
    for a, b in [(1, 7), (0, 6), (0, 9), (6, 9), (3, 8), (2, 5)]:
        assert d[a, b] == d[b, a] == 2  # siblings
    assert d[1, 4] == 4 and d[0, 3] == 4  # cousins
    assert d[1, 0] == 6 and d[4, 5] == 6 and d[3, 2] == 6  # across the top groups
    assert (np.diag(d) == 0).all()
    np.testing.assert_array_equal(lca_cost(10, D_VIS), d / 2)  # equal-depth leaves: LCA height = path / 2


def test_parent_list_gives_the_same_matrix_as_nested_lists():
    # nodes 0..3 are classes; 4 = {0, 1}, 5 = {2, 3}, 6 = root
    parents = [4, 4, 5, 5, 6, 6, None]
    np.testing.assert_array_equal(tree_cost(4, parents), tree_cost(4, [[0, 1], [2, 3]]))
    unbalanced = tree_cost(3, [[0, [1]], 2])  # leaves at depths 2, 3, 1
    assert unbalanced[0, 1] == 3 and unbalanced[0, 2] == 3 and unbalanced[1, 2] == 4
    assert lca_cost(3, [[0, [1]], 2])[1, 2] == 3  # max of the two climbs


def test_ordinal_and_csv(tmp_path):
    np.testing.assert_array_equal(ordinal_cost(4)[0], [0, 1, 2, 3])
    path = tmp_path / "c.csv"
    np.savetxt(path, ordinal_cost(3), delimiter=",")
    np.testing.assert_array_equal(csv_cost(3, str(path)), ordinal_cost(3))


@pytest.mark.parametrize("matrix, message", [
    (np.ones((3, 3)) - np.eye(3) + np.diag([0, 0, 1.0]), r"diagonal entry \[2, 2\] = 1"),
    (np.array([[0, 1, 2], [1, 0, 3], [2, 4, 0.0]]), r"entry \[1, 2\] = 3 but \[2, 1\] = 4"),
    (np.array([[0, -1], [-1, 0.0]]), r"entry \[0, 1\] = -1 is negative"),
    (np.array([[0, np.nan], [np.nan, 0]]), r"entry \[0, 1\] is nan"),
    (np.zeros((2, 3)), r"shape \(2, 3\), but the dataset has 2 classes"),
])
def test_bad_matrices_are_refused_in_one_line(matrix, message):
    with pytest.raises(ConfigError, match=message) as info:
        check_cost_matrix(matrix, 2 if matrix.shape[0] == 2 else 3)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("hierarchy, message", [
    ([[0, 1], [2]], r"classes \[3\] are missing"),
    ([[0, 1], [2, 2, 3]], "class 2 appears twice"),
    ([[0, 1], [2, 7]], "leaf 7 is outside"),
    ([[0, 1], [2, "x"]], "leaf 'x' is not a class id"),
    ([4, 4, 5, 5, None, None], "exactly one root"),
    (None, "needs a hierarchy"),
])
def test_bad_hierarchies_are_refused_in_one_line(hierarchy, message):
    with pytest.raises(ConfigError, match=message):
        tree_cost(4, hierarchy)


def test_training_with_a_cost_writes_it_and_evaluation_reports_costs(tmp_path):
    from vmf_embeddings.main import run

    run(compose_config(FAST + ["cost=tree", "mode.epochs=2", "sampler.n_episodes=5", "mode.projector=false"]),
        tmp_path / "run")
    np.testing.assert_array_equal(np.load(tmp_path / "run" / "cost_matrix.npy"), tree_cost(10, D_VIS))
    test = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert test["error_rate"] == pytest.approx(1 - test["accuracy"])
    assert test["avg_cost"] == pytest.approx(test["error_rate"] * test["mean_mistake_cost"])
    assert 2 <= test["mean_mistake_cost"] <= 6


def test_a_bad_cost_is_refused_before_training(tmp_path):
    from vmf_embeddings.main import run

    with pytest.raises(ConfigError, match="cost.path=/nope.csv: no such file"):
        run(compose_config(FAST + ["cost=csv", "cost.path=/nope.csv"]), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "config.yaml").exists()
