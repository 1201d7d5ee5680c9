"""Augmentations that keep an induced subgraph: GraphCL's node dropping (:class:`NodeDrop`) and subgraph
sampling (:class:`SubgraphSample`)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch_geometric.data import Data

from graphneg.data.graph_augment.base import GraphAugmentation
from graphneg.validation import check_hyperparameter, check_single_graph

__all__ = ["NodeDrop", "SubgraphSample"]


def _subgraph_keep(data: Data, keep: Tensor) -> Data:
    """Induced subgraph on the boolean node mask ``keep`` (nodes relabelled, order preserved).

    Node- and edge-level attributes (``x``, ``edge_attr``, ...) follow the kept nodes / edges via
    :meth:`torch_geometric.data.Data.subgraph`; a graph-level ``y`` (first dimension different
    from the node count) is kept unchanged.
    """
    y = data.y if "y" in data else None
    graph_level_y = isinstance(y, Tensor) and (y.dim() == 0 or y.size(0) != data.num_nodes)
    if graph_level_y:
        del data.y
    out = data.subgraph(keep)
    if graph_level_y:
        out.y = y
        data.y = y
    return out


class NodeDrop(GraphAugmentation):
    r"""Drop a fraction ``p`` of the nodes and their edges (GraphCL "node dropping").

    Source: GraphCL (You et al., NeurIPS 2020) Sec. 3.1, and the official code
    (Shen-Lab/GraphCL, ``semisupervised_TU/pre-training/tu_dataset.py`` ``drop_nodes``):
    ``floor(p * N)`` nodes drawn uniformly without replacement are removed with every edge touching
    them; the others are relabelled in their original order. At least one node is always kept
    (the count is capped at ``N - 1``).

    Args:
        p (float): fraction of nodes to drop, in ``[0, 1]`` (GraphCL's default ``aug_ratio`` 0.2).
        generator (torch.Generator, optional): random stream.
        seed (int, optional): seed of a new CPU generator (instead of ``generator``).

    Shapes:
        input ``Data(x=[N, F], edge_index=[2, E], edge_attr=[E, *])`` ->
        ``Data(x=[N - floor(p N), F], edge_index=[2, E'], edge_attr=[E', *])``.
    """

    def __init__(self, p: float = 0.2, generator: Optional[torch.Generator] = None,
                 seed: Optional[int] = None):
        super().__init__(generator, seed)
        self.p = check_hyperparameter(p, "p", 0.0, 1.0, owner="NodeDrop")

    def forward(self, data: Data) -> Data:
        check_single_graph(data, "NodeDrop")
        n = data.num_nodes
        device = data.edge_index.device
        num_drop = min(int(self.p * n), n - 1)
        if num_drop == 0:
            return data
        drop = self._randperm(n, device)[:num_drop]
        keep = torch.ones(n, dtype=torch.bool, device=device)
        keep[drop] = False
        return _subgraph_keep(data, keep)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(p={self.p})"


class SubgraphSample(GraphAugmentation):
    r"""Keep a connected-as-possible subgraph of ``ratio * N`` nodes grown from a random node
    (GraphCL "subgraph").

    Source: GraphCL (You et al., NeurIPS 2020) Sec. 3.1 (subgraph sampled by random walk) and the
    official code (Shen-Lab/GraphCL ``unsupervised_TU`` ``subgraph``): start from a uniformly random
    node and repeatedly add random nodes of the current neighbourhood until ``floor(ratio N)`` nodes
    are selected; when the neighbourhood is exhausted (the component is smaller than the target),
    jump to a random unselected node, as the later official versions do.

    Vectorised form (one loop iteration per BFS hop, not per node): at each hop the frontier (the
    unselected neighbours of the selection, edges taken in both directions) is added whole if it
    fits, otherwise a uniformly random subset of the missing size is added. The result is the
    induced subgraph, nodes in their original order. At least one node is kept.

    Args:
        ratio (float): fraction of nodes kept, in ``(0, 1]`` (GraphCL keeps ``1 - aug_ratio``).
        generator (torch.Generator, optional), seed (int, optional): random stream.

    Shapes:
        ``x=[N, F]`` -> ``x=[max(1, floor(ratio N)), F]``, ``edge_index`` induced.
    """

    def __init__(self, ratio: float = 0.8, generator: Optional[torch.Generator] = None,
                 seed: Optional[int] = None):
        super().__init__(generator, seed)
        self.ratio = check_hyperparameter(ratio, "ratio", 0.0, 1.0, min_inclusive=False, owner="SubgraphSample")

    def forward(self, data: Data) -> Data:
        check_single_graph(data, "SubgraphSample")
        n = data.num_nodes
        device = data.edge_index.device
        target = max(1, int(self.ratio * n))
        if target >= n:
            return data
        row, col = data.edge_index
        selected = torch.zeros(n, dtype=torch.bool, device=device)
        selected[self._randint(0, n, (1,), device)] = True
        count = 1
        while count < target:
            frontier = torch.zeros(n, dtype=torch.bool, device=device)
            frontier[col[selected[row]]] = True
            frontier[row[selected[col]]] = True
            frontier &= ~selected
            cand = frontier.nonzero().view(-1)
            if cand.numel() == 0:  # component exhausted: restart from a random unselected node
                cand = (~selected).nonzero().view(-1)
                cand = cand[self._randint(0, cand.numel(), (1,), device)]
            need = target - count
            if cand.numel() > need:
                cand = cand[self._randperm(cand.numel(), device)[:need]]
            selected[cand] = True
            count += cand.numel()
        return _subgraph_keep(data, selected)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(ratio={self.ratio})"
