"""Mini-batch -> PyG graph.

A mini-batch of embeddings ``x`` of shape ``[B, D]`` (with optional labels ``[B]``) becomes a
:class:`torch_geometric.data.Data` whose ``edge_index`` follows PyG's ``source_to_target`` flow:
``edge_index[0]`` holds the source (neighbour) ``j`` and ``edge_index[1]`` the target (centre) ``i``,
so a :class:`~torch_geometric.nn.MessagePassing` layer aggregates, at node ``i``, the messages of the
nodes listed as its neighbours. Edges are sorted by target, then source.

Edge modes
----------
``"complete"``      all ordered pairs ``(j, i)``, ``j != i`` (self-loops with ``loop=True``).
``"knn"``           each node ``i`` receives edges from its ``k`` most similar nodes (cosine, or
                    Pearson correlation with ``metric="pearson"``), computed in chunks of rows so
                    memory stays ``O(chunk * B + B * k)``; no torch-cluster / pyg-lib needed.
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

from graphneg.validation import check_embeddings, check_k, check_labels, check_multiclass  # re-exported

EDGE_MODES = ("complete", "knn", "negative", "positive", "knn_negative")


def _similarity_features(x: Tensor, metric: str) -> Tensor:
    if metric == "cosine":
        return torch.nn.functional.normalize(x, dim=-1)
    if metric == "pearson":
        xc = x - x.mean(dim=-1, keepdim=True)
        return torch.nn.functional.normalize(xc, dim=-1)
    raise ValueError(f"metric must be 'cosine' or 'pearson', got {metric!r}")


def knn_index(
    x: Tensor,
    k: int,
    labels: Optional[Tensor] = None,
    negatives_only: bool = False,
    loop: bool = False,
    metric: str = "cosine",
    chunk_size: int = 1024,
) -> Tensor:
    """Each node's ``k`` most similar nodes, as ``edge_index`` ``[2, E]`` (source=neighbour, target=node).

    Computed block by block: a ``[chunk_size, B]`` similarity block is built, masked (self, and
    same-class nodes when ``negatives_only``), and reduced with ``topk``; memory is
    ``O(chunk_size * B + B * k)``. Nodes with fewer than ``k`` valid candidates keep all of them.
    Ties are broken by ``torch.topk`` (lowest index first on CPU).
    """
    if k is None or int(k) < 1:
        raise ValueError(f"k must be a positive integer for kNN edges, got {k!r}")
    k = check_k(k, "k")  # 2.7 or True raise instead of becoming 2 or 1
    n = x.size(0)
    if negatives_only and labels is None:
        raise ValueError("edges='knn_negative' needs labels")
    feats = _similarity_features(x.detach(), metric)
    k_eff = min(int(k), n if loop else n - 1)
    if k_eff <= 0:
        return torch.empty(2, 0, dtype=torch.long, device=x.device)
    sources, targets = [], []
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        rows = torch.arange(start, stop, device=x.device)
        sim = feats[start:stop] @ feats.t()  # [c, B]
        invalid = torch.zeros_like(sim, dtype=torch.bool)
        if not loop:
            invalid[torch.arange(stop - start, device=x.device), rows] = True
        if negatives_only:
            invalid |= labels[start:stop, None] == labels[None, :]
        sim = sim.masked_fill(invalid, float("-inf"))
        val, idx = sim.topk(k_eff, dim=1)
        keep = torch.isfinite(val)
        sources.append(idx[keep])
        targets.append(rows[:, None].expand_as(idx)[keep])
    src, tgt = torch.cat(sources), torch.cat(targets)
    order = torch.argsort(tgt * n + src)
    return torch.stack([src[order], tgt[order]])


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


def batch_graph(
    x: Tensor,
    labels: Optional[Tensor] = None,
    edges: str = "complete",
    k: Optional[int] = None,
    loop: bool = False,
    metric: str = "cosine",
    chunk_size: int = 1024,
) -> Data:
    """Turn a mini-batch of embeddings into a PyG graph.

    Args:
        x: embeddings ``[B, D]`` (kept as given, gradients flow through ``data.x``).
        labels: optional class ids ``[B]``; required by ``"negative"``, ``"positive"``,
            ``"knn_negative"``.
        edges: one of ``"complete"``, ``"knn"``, ``"negative"``, ``"positive"``, ``"knn_negative"``.
        k: neighbours per node for the kNN modes.
        loop: add self-loops (``"negative"`` never has them: a node is not its own negative).
        metric: similarity for the kNN modes, ``"cosine"`` or ``"pearson"``.
        chunk_size: rows per similarity block in the kNN modes.

    Returns:
        ``Data(x=[B, D], y=[B] or None, edge_index=[2, E])`` with ``edge_index[0]`` the source.
    """
    check_embeddings(x)
    n = x.size(0)
    if labels is not None:
        labels = check_labels(labels, n).to(x.device)
    if edges not in EDGE_MODES:
        raise ValueError(f"edges must be one of {EDGE_MODES}, got {edges!r}")
    if edges == "negative" or edges == "knn_negative":
        if labels is None:
            raise ValueError(f"edges={edges!r} needs labels (one class id per sample)")
        check_multiclass(labels)
    if k is not None:
        k = check_k(k, "k")
    if edges in ("knn", "knn_negative"):
        edge_index = knn_index(
            x, k, labels=labels, negatives_only=edges == "knn_negative", loop=loop,
            metric=metric, chunk_size=chunk_size,
        )
    else:
        if k is not None:
            raise ValueError(f"k is only used by the kNN edge modes, not by edges={edges!r}")
        mask = dense_edge_mask(n, labels, edges, loop, device=x.device)
        tgt, src = mask.nonzero(as_tuple=True)
        edge_index = torch.stack([src, tgt])
    return Data(x=x, y=labels, edge_index=edge_index, num_nodes=n)


__all__ = [
    "EDGE_MODES", "batch_graph", "knn_index", "dense_edge_mask", "check_embeddings", "check_labels",
    "check_multiclass",
]
