"""GraphCL's edge perturbation (:class:`EdgePerturb`): remove a fraction of the edges, add as many random
ones."""
from __future__ import annotations

from typing import Optional

import torch
from torch_geometric.data import Data
from torch_geometric.utils import is_undirected

from graphneg.data.graph_augment.base import GraphAugmentation
from graphneg.validation import check_hyperparameter, check_single_graph

__all__ = ["EdgePerturb"]


class EdgePerturb(GraphAugmentation):
    r"""Remove a fraction ``p`` of the edges and add as many random new ones (GraphCL "edge
    perturbation").

    Source: GraphCL (You et al., NeurIPS 2020) Sec. 3.1 ("randomly adding or dropping a certain
    ratio of edges") and the official code (Shen-Lab/GraphCL,
    ``semisupervised_TU/pre-training/tu_dataset.py`` ``permute_edges``: drop ``floor(p E)`` edges,
    add ``floor(p E)`` uniformly random node pairs).

    Differences from the official code (documented choices):

    * undirected graphs stay undirected: when the input is undirected (``is_undirected`` with its
      ``edge_attr``), the ``E_u`` undirected edges (pairs ``i <= j``) are perturbed and mirrored back,
      so ``floor(p E_u)`` undirected edges are removed and up to as many added;
    * added edges join two distinct nodes (no self-loops) and duplicates of kept edges or of each
      other are discarded, so the edge count can end slightly below the input's;
    * edge-level attributes (``edge_attr``, ``edge_weight``, ...) of kept edges are kept; added edges
      get zeros (``fill_value``); the output is sorted by (source, target).

    Args:
        p (float): fraction of edges to perturb, in ``[0, 1]``.
        fill_value (float): value of the edge-level attributes of added edges (default ``0``).
        generator (torch.Generator, optional), seed (int, optional): random stream.

    Shapes:
        ``edge_index=[2, E]`` -> ``[2, E']`` with ``E' <= E``; node attributes unchanged.
    """

    def __init__(self, p: float = 0.2, fill_value: float = 0.0,
                 generator: Optional[torch.Generator] = None, seed: Optional[int] = None):
        super().__init__(generator, seed)
        self.p = check_hyperparameter(p, "p", 0.0, 1.0, owner="EdgePerturb")
        self.fill_value = float(fill_value)

    def forward(self, data: Data) -> Data:
        check_single_graph(data, "EdgePerturb")
        n = data.num_nodes
        edge_index = data.edge_index
        device = edge_index.device
        edge_keys = [k for k in data.edge_attrs() if k != "edge_index"]
        undirected = is_undirected(edge_index, data.edge_attr if "edge_attr" in data else None,
                                   num_nodes=n)
        row, col = edge_index
        if undirected:
            cand = (row <= col).nonzero().view(-1)  # one entry per undirected edge (self-loops once)
        else:
            cand = torch.arange(row.numel(), device=device)
        m = cand.numel()
        k = int(self.p * m)
        if k == 0:
            return data
        kept = cand[self._randperm(m, device)[k:]].sort().values
        r_keep, c_keep = row[kept], col[kept]

        # k random pairs of distinct nodes (none when the graph has a single node)
        if n > 1:
            i = self._randint(0, n, (k,), device)
            j = (i + self._randint(1, n, (k,), device)) % n
            if undirected:
                i, j = torch.minimum(i, j), torch.maximum(i, j)
            new_key = torch.unique(i * n + j)
            new_key = new_key[~torch.isin(new_key, r_keep * n + c_keep)]
            r_new, c_new = new_key // n, new_key % n
        else:
            r_new = c_new = row.new_empty(0)
        num_new = r_new.numel()

        r_all = torch.cat([r_keep, r_new])
        c_all = torch.cat([c_keep, c_new])
        attrs = {}
        for key in edge_keys:
            value = data[key]
            fill = value.new_full((num_new,) + tuple(value.shape[1:]), self.fill_value)
            attrs[key] = torch.cat([value[kept], fill], dim=0)
        if undirected:  # mirror every non-loop edge
            off = r_all != c_all
            r_all, c_all = torch.cat([r_all, c_all[off]]), torch.cat([c_all, r_all[off]])
            attrs = {key: torch.cat([v, v[off]], dim=0) for key, v in attrs.items()}
        order = torch.argsort(r_all * n + c_all)
        data.edge_index = torch.stack([r_all[order], c_all[order]], dim=0)
        for key, value in attrs.items():
            data[key] = value[order]
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(p={self.p})"
