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


# CIFAR-100's standard fine -> coarse map (torchvision fine label index -> coarse_label index), as in the dataset's
# own `coarse_labels`: 0 aquatic_mammals, 1 fish, 2 flowers, 3 food_containers, 4 fruit_and_vegetables, ...
CIFAR100_COARSE = [4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
                   6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
                   5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
                   10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
                   16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13]


def test_the_packaged_cifar100_hierarchy_has_five_levels_over_the_standard_superclasses():
    from vmf_embeddings.costs import packaged_hierarchies, parse_hierarchy

    assert "cifar100" in packaged_hierarchies()
    parents, depth = parse_hierarchy("cifar100", 100, "method=hxe")
    assert all(depth[c] == 5 for c in range(100))
    children = {}
    for node, parent in enumerate(parents):
        children.setdefault(parent, []).append(node)
    by_depth = {d: [n for n in depth if depth[n] == d] for d in range(6)}
    assert [len(by_depth[d]) for d in range(6)] == [1, 2, 4, 8, 20, 100]
    assert all(len(children[s]) == 5 for s in by_depth[4])  # 20 superclasses of 5 classes
    superclasses = sorted(sorted(children[s]) for s in by_depth[4])
    assert superclasses == sorted(sorted(c for c in range(100) if CIFAR100_COARSE[c] == k) for k in range(20))
    assert sorted(len(children[g]) for g in by_depth[3]) == [1, 1, 2, 2, 3, 3, 3, 5]  # superclasses per group
    assert sorted(len(children[g]) for g in by_depth[2]) == [1, 1, 3, 3]  # level-3 groups per group
    assert [len(children[g]) for g in by_depth[1]] == [2, 2]


def test_tree_cost_of_the_cifar100_hierarchy():
    d = tree_cost(100, "cifar100")
    assert d.shape == (100, 100) and (d == d.T).all() and (np.diag(d) == 0).all()
    assert set(np.unique(d)) == {0, 2, 4, 6, 8, 10}
    same_superclass = np.equal.outer(CIFAR100_COARSE, CIFAR100_COARSE)
    assert ((d == 2) == (same_superclass & ~np.eye(100, dtype=bool))).all()
    assert d[0, 57] == 2  # apple, pear: fruit_and_vegetables
    assert d[4, 30] == 2  # beaver, dolphin: aquatic_mammals
    assert d[47, 70] == 4  # maple_tree (trees), rose (flowers): the plants' level-3 group
    assert d[8, 41] == 4  # bicycle (vehicles_1), lawn_mower (vehicles_2)
    assert d[3, 4] == 6  # bear (mammals), beaver (aquatic): both animals
    assert d[0, 3] == 8  # apple (plants), bear (animals): the same level-5 group
    assert d[12, 23] == 8  # bridge (man-made), cloud (natural scenes)
    assert d[0, 8] == 10  # apple, bicycle: across the root
    np.testing.assert_array_equal(lca_cost(100, "cifar100"), d / 2)


def test_a_hierarchy_can_be_a_yaml_or_json_file(tmp_path):
    yaml_file = tmp_path / "h.yaml"
    yaml_file.write_text("# two groups\n- [1, 7]   # ones\n- [0, [2, 3], 4, 5, 6, 8, 9]\n")
    json_file = tmp_path / "h.json"
    json_file.write_text(json.dumps([4, 4, 5, 5, 6, 6, None]))  # a parent list
    nested = [[1, 7], [0, [2, 3], 4, 5, 6, 8, 9]]
    np.testing.assert_array_equal(tree_cost(10, str(yaml_file)), tree_cost(10, nested))
    np.testing.assert_array_equal(tree_cost(4, str(json_file)), tree_cost(4, [[0, 1], [2, 3]]))


@pytest.mark.parametrize("value, message", [
    ("cifar1000", r"cost.hierarchy=cifar1000: not a packaged hierarchy .*use a packaged hierarchy \(cifar100\)"),
    ("/nope/h.yaml", r"cost.hierarchy=/nope/h.yaml: no such file; use a packaged hierarchy \(cifar100\)"),
    ("{tmp}/bad.json", r"bad.json: cannot read it as JSON"),
    ("{tmp}/map.yaml", r"map.yaml: the file holds dict, not a non-empty list"),
])
def test_unknown_or_bad_hierarchy_names_are_refused_in_one_line(tmp_path, value, message):
    (tmp_path / "bad.json").write_text("[[0, 1], [2,")
    (tmp_path / "map.yaml").write_text("a: [0, 1]\nb: [2, 3]\n")
    with pytest.raises(ConfigError, match=message) as info:
        tree_cost(4, value.format(tmp=tmp_path))
    assert "\n" not in str(info.value)


def test_cifar100_with_cost_tree_composes_to_the_packaged_matrix():
    from vmf_embeddings.costs import build_cost

    cfg = compose_config(["dataset=cifar100", "cost=tree"])
    assert cfg.dataset.hierarchy == "cifar100" and cfg.cost.hierarchy == "cifar100"
    np.testing.assert_array_equal(build_cost(cfg), tree_cost(100, "cifar100"))
