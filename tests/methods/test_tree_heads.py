"""Hierarchical softmax (YOLO9000) and hierarchical cross-entropy (HXE): the tree oracles and digits training."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import FAST, compose_config
from vmf_embeddings.errors import ConfigError
from vmf_embeddings.methods.tree import ClassTree, HierarchicalCrossEntropy, HierarchicalSoftmax, group_logsumexp

D_VIS = [[[1, 7], [4]], [[0, 6, 9], [3, 8]], [[2, 5]]]
UNBALANCED = [[0, [1, 2]], 3, [[4]]]  # leaves at depths 2, 3, 3, 1, 3


def _x(n=6, d=5, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_group_logsumexp_matches_a_per_group_loop():
    values = torch.randn(4, 7, dtype=torch.float64) * 30  # large values: the max shift matters
    groups = torch.tensor([2, 0, 2, 1, 0, 2, 1])
    out = group_logsumexp(values, groups, 3)
    for g in range(3):
        torch.testing.assert_close(out[:, g], torch.logsumexp(values[:, groups == g], dim=1))


@pytest.mark.parametrize("hierarchy, n_classes", [(D_VIS, 10), (UNBALANCED, 5)])
def test_tree_softmax_is_a_distribution_whose_inner_nodes_sum_their_leaves(hierarchy, n_classes):
    head = HierarchicalSoftmax(5, n_classes, hierarchy)
    tree = ClassTree(hierarchy, n_classes, "test")
    x = _x()
    leaves = head.logits(x).exp()
    torch.testing.assert_close(leaves.sum(1), torch.ones(6))
    nodes = head.node_log_probs(x).exp()
    descendants = tree.ancestry.t().float()[:, :n_classes]  # [u, leaf] = u is the leaf or one of its ancestors
    for node in range(n_classes, tree.n_nodes):
        if node == tree.root:
            torch.testing.assert_close(nodes[:, node], torch.ones(6))
        else:
            torch.testing.assert_close(nodes[:, node], leaves @ descendants[node])
    torch.testing.assert_close(head.log_probs(x), head.logits(x), atol=1e-6, rtol=0)


def test_tree_softmax_on_a_flat_tree_is_the_ordinary_softmax():
    head = HierarchicalSoftmax(5, 4, [[0, 1, 2, 3]])
    x = _x()
    z = head.classifier(x)[:, :4]
    torch.testing.assert_close(head.logits(x), F.log_softmax(z, dim=1))


def test_tree_softmax_nll_is_the_sum_of_conditional_cross_entropies_on_the_path():
    head = HierarchicalSoftmax(5, 10, D_VIS)
    tree = ClassTree(D_VIS, 10, "test")
    x, y = _x(), torch.tensor([0, 1, 2, 3, 7, 9])
    conditionals = head.node_log_conditionals(x)
    by_path = -(tree.on_path[y].float() * conditionals).sum(1).mean()
    torch.testing.assert_close(head.loss(x, y), by_path)
    # and by hand for class 1, whose path is {1, 7} -> {{1, 7}, {4}} -> root
    z = head.classifier(x[:1])[0]
    parents = tree.parents.tolist()
    node, total = 1, 0.0
    while parents[node] >= 0:
        siblings = [n for n, p in enumerate(parents) if p == parents[node]]
        total = total - (z[node] - torch.logsumexp(z[siblings], 0))
        node = parents[node]
    torch.testing.assert_close(head.loss(x[:1], torch.tensor([1])), total)


def test_hxe_with_alpha_zero_is_cross_entropy_on_any_tree():
    for hierarchy, c in ((D_VIS, 10), ([[0, 1, 2, 3]], 4), (UNBALANCED, 5)):
        head = HierarchicalCrossEntropy(5, c, hierarchy, alpha=0.0)
        x, y = _x(), torch.arange(6) % c
        torch.testing.assert_close(head.loss(x, y), F.cross_entropy(head.logits(x), y))


def test_hxe_conditionals_are_probabilities_and_the_weights_follow_the_height():
    head = HierarchicalCrossEntropy(5, 10, D_VIS, alpha=0.5)
    x = _x() * 10
    conditionals = head.log_conditionals(head.logits(x)).exp()
    assert float(conditionals.detach().min()) > 0 and float(conditionals.detach().max()) <= 1 + 1e-6
    tree = ClassTree(D_VIS, 10, "test")
    mass = head.node_log_mass(head.logits(x)).exp()
    p = F.softmax(head.logits(x), dim=1)
    torch.testing.assert_close(mass[:, tree.root], torch.ones(6))
    torch.testing.assert_close(mass[:, 12], p[:, 1] + p[:, 7])  # the {1, 7} node
    # class 1's path: leaf (height 0), {1,7} (1), {{1,7},{4}} (2): weights 1, e^-0.5, e^-1
    weights = head.path_weights[1]
    assert sorted(round(float(w), 6) for w in weights[weights > 0]) == sorted(
        round(v, 6) for v in (1.0, float(torch.exp(torch.tensor(-0.5))), float(torch.exp(torch.tensor(-1.0)))))
    # Bertinetto's closed form for class 1: -sum w log p(v | parent)
    y = torch.tensor([1])
    q = p[:1]
    manual = -(torch.log(q[0, 1] / (q[0, 1] + q[0, 7]))
               + torch.exp(torch.tensor(-0.5)) * torch.log((q[0, 1] + q[0, 7]) / (q[0, 1] + q[0, 7] + q[0, 4]))
               + torch.exp(torch.tensor(-1.0)) * torch.log(q[0, 1] + q[0, 7] + q[0, 4]))
    torch.testing.assert_close(head.loss(x[:1], y), manual)


@pytest.mark.parametrize("hierarchy, message", [
    ([[0, 1], 2], "classes 0..3|missing"),
    ([3, 3, 3, None], "method.params.hierarchy.*|class 3 has children"),
])
def test_bad_trees_are_refused_in_one_line(hierarchy, message):
    with pytest.raises(ConfigError, match=message):
        HierarchicalSoftmax(5, 4, hierarchy)


def test_a_tree_method_without_a_hierarchy_is_refused():
    with pytest.raises(ConfigError, match="needs a class hierarchy"):
        HierarchicalCrossEntropy(5, 4, None)


def test_heads_move_with_the_module():
    head = HierarchicalCrossEntropy(5, 10, D_VIS).double()
    assert head.level0_nodes.dtype == torch.long  # index buffers keep their dtype
    head.loss(_x().double(), torch.arange(6))


@pytest.mark.parametrize("method", ["yolo_tree", "hxe"])
def test_each_tree_method_trains_on_digits(tmp_path, method):
    from vmf_embeddings.main import run

    run(compose_config(FAST + [f"method={method}", "cost=tree", "mode.projector=false"]), tmp_path / "run")
    test = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert test["accuracy"] >= 0.9 and "avg_cost" in test, test
