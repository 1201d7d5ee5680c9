"""Mini-batch -> PyG graph.

A mini-batch of embeddings ``x`` of shape ``[B, D]`` (with optional labels ``[B]``) becomes a
:class:`torch_geometric.data.Data` whose ``edge_index`` follows PyG's ``source_to_target`` flow:
``edge_index[0]`` holds the source (neighbour) ``j`` and ``edge_index[1]`` the target (centre) ``i``,
so a :class:`~torch_geometric.nn.MessagePassing` layer aggregates, at node ``i``, the messages of the
nodes listed as its neighbours. Edges are sorted by target, then source.

Edge modes
----------
``"complete"``      all ordered pairs ``(j, i)`` including self-loops (the dense ``B x B`` graph of
                    GCA-HNG); ``loop=False`` drops the self-loops.
``"knn"``           without labels: each node ``i`` receives edges from its ``k`` most similar nodes
                    (cosine, or Pearson correlation with ``metric="pearson"``), computed in chunks of
                    rows so memory stays ``O(chunk * B + B * k)``; no torch-cluster / pyg-lib needed.
                    With labels (class-aware, the sparse graph of GCA-HNG): each node's ``k`` most
                    similar nodes *of another class*, symmetrised, plus every same-class pair
                    including self-loops (``loop=False`` drops them), ``E <= 2 B k + sum_c m_c^2``.
``"negative"``      pairs with different labels.
``"positive"``      pairs with the same label (``j != i`` unless ``loop=True``).
``"knn_negative"``  each node's ``k`` most similar nodes *of another class* (the sparse candidate set
                    of hard negatives used by GCA-HNG's sparse mode).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch_geometric.data import Data

from graphneg.ops.knn import knn_index  # noqa: F401  (the graph builder's kNN)
from graphneg.validation import (  # noqa: F401  (EDGE_MODES, check_edge_mode: re-exported, public here too)
    EDGE_MODES, check_edge_mode, check_embeddings, check_k, check_labels, check_multiclass,
)


def dense_edge_mask(
    n: int,
    labels: Optional[Tensor] = None,
    edges: str = "complete",
    loop: bool = False,
    device=None,
) -> Tensor:
    """Boolean ``[B, B]`` adjacency with ``mask[i, j]`` = edge ``j -> i`` for the non-kNN modes."""
    if edges == "complete":
        mask = torch.ones(n, n, dtype=torch.bool, device=device)
    elif edges in ("negative", "positive"):
        if labels is None:
            raise ValueError(f"edges={edges!r} needs labels (one class id per sample)")
        same = labels[:, None] == labels[None, :]
        mask = ~same if edges == "negative" else same
    else:
        raise ValueError(f"edges must be one of {EDGE_MODES}, got {edges!r}")
    eye = torch.eye(n, dtype=torch.bool, device=device)
    # a node is never its own negative; other modes have self-loops exactly when `loop`
    return mask | eye if loop and edges != "negative" else mask & ~eye


def _sorted_unique_edges(src: Tensor, tgt: Tensor, n: int) -> Tensor:
    """``edge_index`` of the distinct edges ``(src, tgt)``, sorted by target, then source."""
    key = torch.unique(tgt * n + src)  # sorted
    return torch.stack([key % n, key // n])


def batch_graph(
    x: Tensor,
    labels: Optional[Tensor] = None,
    edges: str = "complete",
    k: Optional[int] = None,
    loop: Optional[bool] = None,
    metric: str = "cosine",
    chunk_size: int = 1024,
) -> Data:
    """Turn a mini-batch of embeddings into a PyG graph (the one graph builder of the package).

    ``batch_graph(x, labels, edges=gen.edges, k=gen.k)`` is exactly the graph a
    :class:`graphneg.nn.GCAHNG` builds for itself; any other graph can be passed to the generator
    as ``gen(x, labels, edge_index=...)``.

    Args:
        x: embeddings ``[B, D]`` (kept as given, gradients flow through ``data.x``).
        labels: optional class ids ``[B]``; required by ``"negative"``, ``"positive"``,
            ``"knn_negative"``; makes ``"knn"`` class-aware (see the module docstring).
        edges: one of ``"complete"``, ``"knn"``, ``"negative"``, ``"positive"``, ``"knn_negative"``.
        k: neighbours per node for the kNN modes.
        loop: self-loops. ``None`` (default) = the mode's convention: ``"complete"`` and labelled
            ``"knn"`` have them (GCA-HNG's graphs: the official dense ``[B, B, D]`` edge tensor
            includes the diagonal), the other modes do not. ``"negative"`` never has them (a
            node is not its own negative) and ``"knn_negative"`` never does.
        metric: similarity for the kNN modes, ``"cosine"`` or ``"pearson"``.
        chunk_size: rows per similarity block in the kNN modes.

    Returns:
        ``Data(x=[B, D], y=[B] or None, edge_index=[2, E])`` with ``edge_index[0]`` the source,
        edges sorted by target, then source.
    """
    check_embeddings(x)
    n = x.size(0)
    if labels is not None:
        labels = check_labels(labels, n).to(x.device)
    check_edge_mode(edges, k)
    if edges == "negative" or edges == "knn_negative":
        if labels is None:
            raise ValueError(f"edges={edges!r} needs labels (one class id per sample)")
        check_multiclass(labels)
    if k is not None:
        k = check_k(k, "k")
    if loop is None:
        loop = edges == "complete" or (edges == "knn" and labels is not None)
    if edges == "knn" and labels is not None:
        # class-aware kNN (GCA-HNG's sparse graph): k nearest other-class nodes, symmetrised so
        # that edge features stay symmetric and every node has >= k negatives, plus positives
        knn = knn_index(x, k, labels=labels, negatives_only=True, metric=metric, chunk_size=chunk_size)
        tgt, src = dense_edge_mask(n, labels, "positive", loop, device=x.device).nonzero(as_tuple=True)
        edge_index = _sorted_unique_edges(torch.cat([knn[0], knn[1], src]),
                                          torch.cat([knn[1], knn[0], tgt]), n)
    elif edges in ("knn", "knn_negative"):
        edge_index = knn_index(
            x, k, labels=labels, negatives_only=edges == "knn_negative", loop=loop,
            metric=metric, chunk_size=chunk_size,
        )
    else:
        mask = dense_edge_mask(n, labels, edges, loop, device=x.device)
        tgt, src = mask.nonzero(as_tuple=True)
        edge_index = torch.stack([src, tgt])
    return Data(x=x, y=labels, edge_index=edge_index, num_nodes=n)


__all__ = [
    "EDGE_MODES", "batch_graph", "knn_index", "dense_edge_mask", "check_edge_mode", "check_embeddings", "check_labels",
    "check_multiclass",
]
