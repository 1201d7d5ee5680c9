"""The one k-nearest-neighbour kernel of graphneg (ground floor: imports only torch and validation).

:func:`chunked_topk` is the chunked, device-agnostic top-k by dot product or negative squared
Euclidean distance, excluding self and optionally same-label references; :func:`knn_index` turns it into a
PyG ``edge_index`` (kNN batch graphs, UnReMix representativeness); :func:`nearest_neighbours` serves the
retrieval evaluation, with faiss as an optional exact backend.
"""
from __future__ import annotations

from typing import Iterator, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from graphneg.validation import check_k

__all__ = ["chunked_topk", "knn_index", "nearest_neighbours", "faiss_available", "prepare_features"]


def prepare_features(x: Tensor, metric: str) -> Tensor:
    x = x.detach().float()
    if metric == "cosine":
        return torch.nn.functional.normalize(x, dim=-1)
    if metric == "euclidean":
        return x
    raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _rows_per_block(chunk_size: int, n_ref: int, max_block_elements: int) -> int:
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return max(1, min(int(chunk_size), int(max_block_elements) // max(int(n_ref), 1)))


def chunked_topk(
    queries: Tensor,
    refs: Tensor,
    k: int,
    score: str = "dot",
    exclude_self: bool = False,
    query_labels: Optional[Tensor] = None,
    ref_labels: Optional[Tensor] = None,
    exclude_same_label: bool = False,
    chunk_size: int = 1024,
    max_block_elements: int = 1 << 24,
) -> Iterator[Tuple[int, Tensor, Tensor]]:
    """The one chunked top-k kernel of graphneg: yields ``(start, values [c, k], indices [c, k])``.

    Shared by :func:`nearest_neighbours` (retrieval evaluation) and :func:`knn_index`
    (kNN batch graphs). Queries are processed ``c`` rows at a time, ``c = min(chunk_size,
    max_block_elements // N_ref)``, so at most one ``[c, N_ref]`` score block (plus a same-sized
    int32 key and two boolean masks, about 10 bytes an element: 160 MiB at the default
    ``max_block_elements``) exists at a time, whatever the number of queries.

    Scores (larger = closer): ``score="dot"``: ``<q, r>`` (pass L2-normalised rows for cosine);
    ``score="neg_sqeuclidean"``: ``-||q - r||^2``. Excluded pairs get ``-inf``: the query itself
    when ``exclude_self`` (queries are the references, row ``i`` <-> reference ``i``) and references
    of the query's class when ``exclude_same_label``. Rows with fewer than ``k`` allowed references
    return ``-inf`` values in their last columns (callers drop them).

    Ties are broken deterministically, lowest reference index first (the order of a stable sort of
    ``-score``), on every device: ``torch.topk`` alone leaves the order of equal values unspecified.
    After ``topk`` gives each row's ``k``-th value ``v_k``, a second ``topk`` over an integer key
    (every score ``> v_k`` ranks first, then the scores ``== v_k`` by ascending index) picks the
    ``k`` references, which are then stably sorted by descending score. No host synchronisation.
    """
    if score not in ("dot", "neg_sqeuclidean"):
        raise ValueError(f"score must be 'dot' or 'neg_sqeuclidean', got {score!r}")
    if exclude_same_label and (query_labels is None or ref_labels is None):
        raise ValueError("exclude_same_label needs query_labels and ref_labels")
    n_q, n_ref = queries.size(0), refs.size(0)
    k = int(k)
    if not 1 <= k <= n_ref:
        raise ValueError(f"k must be in [1, {n_ref}] (the number of references), got {k}")
    if exclude_self and n_q != n_ref:
        raise ValueError(f"exclude_self needs queries to be the references, got {n_q} and {n_ref} rows")
    rows_per = _rows_per_block(chunk_size, n_ref, max_block_elements)
    device = queries.device
    # key of a tied reference: n_ref - index (1..n_ref, larger = lower index); any score above the
    # k-th value gets n_ref + 1 (all of those are kept); excluded/below: -1. int32: n_ref < 2**31.
    rev = (n_ref - torch.arange(n_ref, device=device)).to(torch.int32)
    r_sq = (refs * refs).sum(-1) if score == "neg_sqeuclidean" else None
    for start in range(0, n_q, rows_per):
        q = queries[start:start + rows_per]
        s = q @ refs.t()
        if r_sq is not None:
            s.mul_(2).sub_(r_sq[None, :]).sub_((q * q).sum(-1, keepdim=True))
        c = s.size(0)
        if exclude_self:
            local = torch.arange(c, device=device)
            s[local, local + start] = float("-inf")
        if exclude_same_label:
            s.masked_fill_(query_labels[start:start + c, None] == ref_labels[None, :], float("-inf"))
        kth = s.topk(k, dim=1).values[:, -1:]
        key = torch.where(s >= kth, rev, -1)
        key.masked_fill_(s > kth, n_ref + 1)
        idx = key.topk(k, dim=1).indices
        del key
        idx = idx.sort(dim=1).values  # ascending index, so the stable sort below keeps ties in that order
        val = s.gather(1, idx)
        order = val.sort(dim=1, descending=True, stable=True).indices
        yield start, val.gather(1, order), idx.gather(1, order)


def nearest_neighbours(
    queries: Tensor,
    refs: Tensor,
    k: int,
    same_set: bool,
    metric: str = "cosine",
    chunk_size: int = 1024,
    backend: str = "torch",
    max_block_elements: int = 1 << 24,
):
    """Yield ``(start, indices [c, k])`` chunk by chunk: the ``k`` nearest references of each query.

    When ``same_set`` the query itself is excluded. ``backend="torch"`` runs :func:`chunked_topk`
    (ties: lowest reference index first); ``backend="faiss"`` (the ``faiss`` extra) an exact
    ``IndexFlatIP`` / ``IndexFlatL2`` search, equal up to the order of tied neighbours.
    """
    k = check_k(k, "k")
    q, r = prepare_features(queries, metric), prepare_features(refs, metric)
    if backend == "auto":
        backend = "faiss" if faiss_available() else "torch"
    if backend == "faiss":
        if not faiss_available():
            raise ValueError("backend='faiss' needs the faiss extra: pip install 'graphneg[faiss]'")
        import faiss

        rn = np.ascontiguousarray(r.cpu().numpy(), dtype=np.float32)
        index = faiss.IndexFlatIP(rn.shape[1]) if metric == "cosine" else faiss.IndexFlatL2(rn.shape[1])
        index.add(rn)
        extra = 1 if same_set else 0
        for start in range(0, q.size(0), chunk_size):
            qn = np.ascontiguousarray(q[start:start + chunk_size].cpu().numpy(), dtype=np.float32)
            _, idx = index.search(qn, k + extra)
            idx = torch.from_numpy(idx).to(queries.device)
            if same_set:
                rows = torch.arange(start, start + idx.size(0), device=idx.device)[:, None]
                is_self = idx == rows
                # drop the query itself (or the last column when it was not returned)
                drop = torch.where(is_self.any(1), is_self.float().argmax(1), torch.full_like(rows[:, 0], k))
                keep = torch.ones_like(idx, dtype=torch.bool)
                keep[torch.arange(idx.size(0)), drop] = False
                idx = idx[keep].view(idx.size(0), k)
            yield start, idx
        return
    if backend != "torch":
        raise ValueError(f"backend must be 'torch', 'faiss' or 'auto', got {backend!r}")
    score = "dot" if metric == "cosine" else "neg_sqeuclidean"
    for start, _, idx in chunked_topk(
        q, r, k, score=score, exclude_self=same_set, chunk_size=chunk_size,
        max_block_elements=max_block_elements,
    ):
        yield start, idx


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

    Computed by :func:`chunked_topk`, the chunked top-k kernel the retrieval
    evaluation uses too: a ``[chunk_size, B]`` similarity block is built, masked (self, and same-class
    nodes when ``negatives_only``), and reduced with ``topk``; memory is ``O(chunk_size * B + B * k)``.
    Nodes with fewer than ``k`` valid candidates keep all of them. Ties are broken deterministically,
    lowest node index first, on every device.
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
    for start, val, idx in chunked_topk(
        feats, feats, k_eff, score="dot", exclude_self=not loop, query_labels=labels, ref_labels=labels,
        exclude_same_label=negatives_only, chunk_size=chunk_size,
    ):
        rows = torch.arange(start, start + idx.size(0), device=x.device)
        keep = torch.isfinite(val)
        sources.append(idx[keep])
        targets.append(rows[:, None].expand_as(idx)[keep])
    src, tgt = torch.cat(sources), torch.cat(targets)
    order = torch.argsort(tgt * n + src)
    return torch.stack([src[order], tgt[order]])
