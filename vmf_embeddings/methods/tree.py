"""Classification along a class hierarchy (the dataset's `hierarchy`, see `vmf_embeddings.costs`):

- `HierarchicalSoftmax` (`yolo_tree`): YOLO9000's tree softmax (Redmon & Farhadi, CVPR 2017). One logit per
  non-root node; log p(v | parent) = z_v - logsumexp over v's siblings; log p(leaf) = sum of the conditionals on
  its path. Trained with the NLL of the true leaf (= the sum of the conditional cross-entropies on its path).
- `HierarchicalCrossEntropy` (`hxe`): HXE of Bertinetto et al. ("Making Better Mistakes", CVPR 2020) on flat
  leaf logits: p = softmax(z), node mass = sum of its leaves' p, loss = -sum over the true path of
  exp(-alpha h(v)) log(mass(v) / mass(parent(v))), h(v) the height of node v (0 for a leaf).

Both follow the metric-guided prototypes code (Garnot & Landrieu, BMVC 2021,
github.com/VSainteuf/metric-guided-prototypes-pytorch, `hierarchical_inference.py`) without torch_scatter,
and without its HXE bug: node masses start from 0, not 1, so every conditional is a probability
(docs/departures.md). Everything is vectorised over nodes; the only Python loop runs over the tree's depth.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from vmf_embeddings.costs import parse_hierarchy
from vmf_embeddings.errors import ConfigError
from vmf_embeddings.methods.softmax import UnnormalizedSoftmax


def group_logsumexp(values: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """B x n_groups logsumexp of the columns of `values` (B x n) sharing a group id (groups: n ids)."""
    index = groups.expand_as(values)
    peak = values.new_full((values.shape[0], n_groups), float("-inf"))
    peak = peak.scatter_reduce(1, index, values.detach(), "amax", include_self=True)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    total = values.new_zeros(values.shape[0], n_groups).scatter_add(1, index, torch.exp(values - peak.gather(1, index)))
    return peak + total.log()


class ClassTree:
    """Index tables of a class hierarchy whose leaves are exactly the classes 0..C-1."""

    def __init__(self, hierarchy: Any, n_classes: int, user: str) -> None:
        parents, depth = parse_hierarchy(hierarchy, int(n_classes), user)
        n_nodes, c = len(parents), int(n_classes)
        children: Dict[int, List[int]] = {n: [] for n in range(n_nodes)}
        for node, parent in enumerate(parents):
            if parent >= 0:
                children[parent].append(node)
        for node in range(n_nodes):
            if node < c and children[node]:
                raise ConfigError(f"{user}: class {node} has children in the hierarchy; classes must be its leaves")
            if node >= c and not children[node]:
                raise ConfigError(f"{user}: inner node {node} has no children; every leaf must be a class 0..{c - 1}")
        self.n_classes, self.n_nodes = c, n_nodes
        self.root = next(n for n, p in enumerate(parents) if p < 0)
        self.parents = torch.tensor(parents, dtype=torch.long)
        self.depth = torch.tensor([depth[n] for n in range(n_nodes)], dtype=torch.long)
        height = [0] * n_nodes
        for node in sorted(range(n_nodes), key=lambda n: -depth[n]):  # children before parents
            if parents[node] >= 0:
                height[parents[node]] = max(height[parents[node]], height[node] + 1)
        self.height = torch.tensor(height, dtype=torch.long)
        # ancestry[v, u] = 1 when node u (not the root) is v or one of v's ancestors; its first C rows are the
        # classes' paths
        ancestry = np.zeros((n_nodes, n_nodes))
        for start in range(n_nodes):
            node = start
            while parents[node] >= 0:
                ancestry[start, node] = 1.0
                node = parents[node]
        self.ancestry = torch.from_numpy(ancestry)
        self.on_path = self.ancestry[:c]

    def levels(self) -> List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Bottom-up (nodes at depth d, the distinct parents of those nodes, each node's slot among them)."""
        out = []
        for level in range(int(self.depth.max()), 0, -1):
            nodes = torch.nonzero(self.depth == level).flatten()
            inner, slot = torch.unique(self.parents[nodes], return_inverse=True)
            out.append((nodes, inner, slot))
        return out


class HierarchicalSoftmax(UnnormalizedSoftmax):
    """YOLO9000 tree softmax: a linear map to one logit per node, marginal leaf log-probabilities as logits."""

    def __init__(self, embedding_dim: int, n_classes: int, hierarchy: Any = None) -> None:
        tree = ClassTree(hierarchy, n_classes, "method=yolo_tree")
        super().__init__(int(embedding_dim), tree.n_nodes)  # the root's column is ignored (it has no siblings)
        self.n_classes = tree.n_classes
        groups = tree.parents.clamp_min(0)  # the root gets group 0: its column never reaches a leaf
        self.register_buffer("sibling_group", groups, persistent=False)
        self.register_buffer("ancestry", tree.ancestry.float(), persistent=False)
        self.n_groups = tree.n_nodes

    def node_log_conditionals(self, embeddings: torch.Tensor) -> torch.Tensor:
        """B x n_nodes log p(v | parent(v))."""
        z = self.classifier(embeddings).float()
        return z - group_logsumexp(z, self.sibling_group, self.n_groups)[:, self.sibling_group]

    def node_log_probs(self, embeddings: torch.Tensor) -> torch.Tensor:
        """B x n_nodes marginal log p(v): the sum of the conditionals from the root down to v."""
        return self.node_log_conditionals(embeddings) @ self.ancestry.t()

    def logits(self, embeddings, n_samples=None, generator=None):
        return self.node_log_conditionals(embeddings) @ self.ancestry[: self.n_classes].t()

    def loss(self, embeddings, labels, targets=None):
        return F.nll_loss(self.logits(embeddings), labels)

    def export(self) -> Dict[str, np.ndarray]:
        return {"node_weights": self.classifier.weight.detach().float().cpu().numpy()}


class HierarchicalCrossEntropy(UnnormalizedSoftmax):
    """HXE on a linear head: per-level conditional cross-entropies on the true path, weighted exp(-alpha h)."""

    def __init__(self, embedding_dim: int, n_classes: int, hierarchy: Any = None, alpha: float = 0.1) -> None:
        super().__init__(int(embedding_dim), int(n_classes))
        tree = ClassTree(hierarchy, n_classes, "method=hxe")
        self.alpha, self.root, self.n_nodes = float(alpha), tree.root, tree.n_nodes
        self.register_buffer("parents", tree.parents.clamp_min(0), persistent=False)
        weights = tree.on_path * torch.exp(-self.alpha * tree.height.double())[None, :]
        self.register_buffer("path_weights", weights.float(), persistent=False)
        levels = tree.levels()
        self.n_levels = len(levels)
        for i, tensors in enumerate(levels):  # buffers, so they follow the module to its device
            for name, tensor in zip(("nodes", "inner", "slot"), tensors):
                self.register_buffer(f"level{i}_{name}", tensor, persistent=False)

    def node_log_mass(self, logits: torch.Tensor) -> torch.Tensor:
        """B x n_nodes log of the summed leaf probabilities below each node (the root's is ~0)."""
        leaves = F.log_softmax(logits.float(), dim=-1)
        mass = torch.cat([leaves, leaves.new_full((leaves.shape[0], self.n_nodes - leaves.shape[1]), float("-inf"))], 1)
        for i in range(self.n_levels):
            nodes, inner, slot = (getattr(self, f"level{i}_{name}") for name in ("nodes", "inner", "slot"))
            mass = mass.index_copy(1, inner, group_logsumexp(mass[:, nodes], slot, int(inner.numel())))
        return mass

    def log_conditionals(self, logits: torch.Tensor) -> torch.Tensor:
        """B x n_nodes log p(v | parent(v)) = log mass(v) - log mass(parent(v)); the root's column is 0."""
        mass = self.node_log_mass(logits)
        conditionals = mass - mass[:, self.parents]
        return conditionals.index_fill(1, torch.tensor([self.root], device=mass.device), 0.0)

    def loss(self, embeddings, labels, targets=None):
        conditionals = self.log_conditionals(self.logits(embeddings))
        return -(self.path_weights[labels] * conditionals).sum(-1).mean()
