"""Weisfeiler-Lehman subtree features: a fixed, untrained graph embedding, the reference point for GIN.

Source: Shervashidze et al., "Weisfeiler-Lehman Graph Kernels", JMLR 12 (2011), Sec. 3.1 (the WL
relabelling) and Sec. 3.2 / Eq. (3) (the subtree kernel is the dot product of the label counts returned
here). GIN is at most as expressive as this test (Xu et al., ICLR 2019, Lemma 2 / Theorem 3), so the
features under :func:`graphneg.metrics.graph_protocol.svc_protocol` are what an untrained, WL-like
readout can reach.

This is a combinatorial, host-side feature map (dictionary compression of label multisets); it runs
once on a dataset, never inside a training step.
"""
from __future__ import annotations

from typing import Dict, Hashable, Iterable, List, Sequence, Tuple

import numpy as np

__all__ = ["wl_features", "wl_graphs"]

Graph = Tuple[Sequence[Hashable], Iterable[Tuple[int, int]]]


def wl_features(graphs: Sequence[Graph], rounds: int) -> np.ndarray:
    """Explicit Weisfeiler-Lehman subtree feature map (Shervashidze et al., JMLR 2011, Sec. 3.1).

    Every node starts with its label; round ``r`` relabels a node by the pair (its label, the sorted
    multiset of its neighbours' labels), with one dictionary shared by all graphs (so equal labels mean
    equal subtrees across graphs); the feature vector of a graph counts every label of rounds
    ``0..rounds``. Self-loops are ignored, an edge given in both directions counts once.

    Args:
        graphs: ``(node_labels, edges)`` per graph: ``node_labels`` a sequence of hashables (one per node),
            ``edges`` ``(i, j)`` node-index pairs (either direction; used as undirected).
        rounds: refinement rounds ``h >= 0`` (``0``: the node-label histogram).

    Returns:
        ``[G, L]`` float array of label counts, ``L`` the number of distinct labels over all rounds (in
        order of first appearance); every row sums to ``(rounds + 1) * num_nodes``.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {rounds}")
    vocab: Dict = {}
    counts: List[Dict[int, int]] = [dict() for _ in graphs]
    labels = [list(nl) for nl, _ in graphs]
    nbrs = []
    for g, (nl, edges) in enumerate(graphs):
        adj = [set() for _ in nl]
        for i, j in edges:
            if not (0 <= i < len(nl) and 0 <= j < len(nl)):
                raise ValueError(f"graphs[{g}]: edge ({i}, {j}) refers to a node outside 0..{len(nl) - 1}; "
                                 "edges must index node_labels")
            if i != j:
                adj[i].add(j)
                adj[j].add(i)
        nbrs.append(adj)
    for r in range(rounds + 1):
        if r > 0:
            labels = [[(lab[v], tuple(sorted(lab[u] for u in adj[v]))) for v in range(len(lab))]
                      for lab, adj in zip(labels, nbrs)]
        new = []
        for g, lab in enumerate(labels):
            ids = [vocab.setdefault((r, lv), len(vocab)) for lv in lab]
            for i in ids:
                counts[g][i] = counts[g].get(i, 0) + 1
            new.append(ids)
        labels = new
    x = np.zeros((len(graphs), len(vocab)))
    for g, c in enumerate(counts):
        for i, n in c.items():
            x[g, i] = n
    return x


def wl_graphs(dataset) -> List[Graph]:
    """``(node_labels, edges)`` of every graph of a PyG dataset (an iterable of ``Data``) for
    :func:`wl_features`: the node label is the argmax of the one-hot ``x`` (TU node labels), the edges
    the columns of ``edge_index``."""
    out = []
    for i, g in enumerate(dataset):
        if g.x is None or g.x.dim() != 2:
            raise ValueError(f"wl_graphs: graph {i} has no [N, F] node features x; pass graphs with one-hot "
                             "node labels (TUDataModule without use_node_attr)")
        out.append((g.x.argmax(1).tolist(), g.edge_index.t().tolist()))
    return out
