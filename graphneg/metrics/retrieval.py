"""Retrieval metrics for deep metric learning: Recall@K, MAP@R, R-Precision, NMI.

Definitions follow Musgrave, Belongie & Lim, "A Metric Learning Reality Check" (ECCV 2020), sec. 3.2,
the protocol pytorch-metric-learning's ``AccuracyCalculator`` implements:

* ``R`` for a query is the number of references that share its label (the query itself excluded when the
  query set is the reference set).
* Recall@K (Jegou et al. 2011 / Song et al. 2016 usage): 1 if at least one of the K nearest references
  has the query's label, averaged over queries.
* R-Precision: ``|{same-label among the R nearest}| / R``.
* MAP@R: ``(1/R) * sum_{i<=R} P(i) * rel(i)`` with ``P(i)`` the precision at rank ``i`` and ``rel(i)``
  whether the ``i``-th neighbour has the query's label.
* NMI: normalised mutual information between the labels and k-means clusters (``n_clusters`` = number of
  query classes) of the query embeddings.

Queries with ``R = 0`` (their class has no other member among the references) have no defined
R-Precision/MAP@R; they are left out of every metric, and the number left out is reported.

Neighbours are searched in chunks of queries: at most a ``[chunk_size, N_ref]`` similarity block exists
at a time, plus ``[chunk_size, K_max]`` indices with ``K_max = max(max(ks), max R)``. With the ``faiss``
extra installed, ``backend="faiss"`` (or ``"auto"``) uses an exact ``IndexFlatIP`` search instead; the
results are the same up to floating-point ties.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from graphneg.validation import check_embeddings, check_k, check_ks, check_labels


def _prepare(x: Tensor, metric: str) -> Tensor:
    x = x.detach().float()
    if metric == "cosine":
        return torch.nn.functional.normalize(x, dim=-1)
    if metric == "euclidean":
        return x
    raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")


def _scores(q: Tensor, r: Tensor, metric: str, r_sq: Optional[Tensor]) -> Tensor:
    """Similarity block: larger is closer (negative squared distance for euclidean)."""
    s = q @ r.t()
    if metric == "euclidean":
        s = 2 * s - r_sq[None, :] - (q * q).sum(-1, keepdim=True)
    return s


def _faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def nearest_neighbours(
    queries: Tensor,
    refs: Tensor,
    k: int,
    same_set: bool,
    metric: str = "cosine",
    chunk_size: int = 1024,
    backend: str = "torch",
):
    """Yield ``(start, indices [c, k])`` chunk by chunk: the ``k`` nearest references of each query.

    When ``same_set`` the query itself is excluded. ``backend="faiss"`` needs the ``faiss`` extra.
    """
    k = check_k(k, "k")
    q, r = _prepare(queries, metric), _prepare(refs, metric)
    if backend == "auto":
        backend = "faiss" if _faiss_available() else "torch"
    if backend == "faiss":
        if not _faiss_available():
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
    r_sq = (r * r).sum(-1) if metric == "euclidean" else None
    for start in range(0, q.size(0), chunk_size):
        s = _scores(q[start:start + chunk_size], r, metric, r_sq)
        if same_set:
            rows = torch.arange(s.size(0), device=s.device)
            s[rows, rows + start] = float("-inf")
        yield start, s.topk(k, dim=1).indices


def retrieval_metrics(
    embeddings: Tensor,
    labels: Tensor,
    ks: Sequence[int] = (1, 2, 4, 8),
    ref_embeddings: Optional[Tensor] = None,
    ref_labels: Optional[Tensor] = None,
    metric: str = "cosine",
    chunk_size: int = 1024,
    nmi: bool = True,
    backend: str = "torch",
    seed: int = 0,
) -> Dict[str, float]:
    """Recall@K, MAP@R, R-Precision and NMI of a retrieval set (see the module docstring).

    Args:
        embeddings: queries ``[N, D]``.
        labels: query classes ``[N]``.
        ks: the K of Recall@K.
        ref_embeddings / ref_labels: the gallery; when omitted the queries are their own gallery and each
            query is excluded from its own neighbours (CUB/Cars/SOP protocol). In-Shop passes a gallery.
        metric: ``"cosine"`` (default) or ``"euclidean"``.
        chunk_size: queries per similarity block.
        nmi: also compute NMI (k-means, scikit-learn).
        backend: ``"torch"``, ``"faiss"`` or ``"auto"``.

    Returns:
        ``{"recall@K": ..., "map@r": ..., "r_precision": ..., "nmi": ..., "num_queries": ...}`` as floats.
    """
    check_embeddings(embeddings, "embeddings")
    labels = check_labels(labels, embeddings.size(0)).to(embeddings.device)
    same_set = ref_embeddings is None
    if same_set:
        if ref_labels is not None:
            raise ValueError("ref_labels given without ref_embeddings: pass both or neither")
        ref_embeddings, ref_labels = embeddings, labels
    else:
        check_embeddings(ref_embeddings, "ref_embeddings")
        if ref_labels is None:
            raise ValueError("ref_embeddings given without ref_labels: pass both or neither")
        ref_labels = check_labels(ref_labels, ref_embeddings.size(0), "ref_labels").to(embeddings.device)
        if ref_embeddings.size(1) != embeddings.size(1):
            raise ValueError(
                f"embeddings have {embeddings.size(1)} dims but ref_embeddings have {ref_embeddings.size(1)}"
            )
    ks = list(check_ks(ks))

    # R per query: same-label references (minus the query itself in the same-set protocol)
    classes, ref_inv = torch.unique(ref_labels, return_inverse=True)
    counts = torch.bincount(ref_inv, minlength=classes.numel())
    pos = torch.searchsorted(classes, labels).clamp(max=classes.numel() - 1)
    r_per_query = torch.where(classes[pos] == labels, counts[pos], torch.zeros_like(pos))
    if same_set:
        r_per_query = r_per_query - 1
    valid = r_per_query > 0
    if not bool(valid.any()):
        raise ValueError(
            "no query has a same-label reference: every class has a single sample. Retrieval metrics need "
            "at least two samples of a class (or a gallery holding the query classes)"
        )
    n_ref_avail = ref_embeddings.size(0) - (1 if same_set else 0)
    k_max = min(max(ks[-1], int(r_per_query.max())), n_ref_avail)

    recall_hits = torch.zeros(len(ks), dtype=torch.float64, device=embeddings.device)
    ap_sum = torch.zeros((), dtype=torch.float64, device=embeddings.device)
    rp_sum = torch.zeros((), dtype=torch.float64, device=embeddings.device)
    ranks = torch.arange(1, k_max + 1, device=embeddings.device, dtype=torch.float64)
    for start, idx in nearest_neighbours(
        embeddings, ref_embeddings, k_max, same_set, metric, chunk_size, backend
    ):
        stop = start + idx.size(0)
        ok = valid[start:stop]
        match = (ref_labels[idx] == labels[start:stop, None])[ok]  # [c, k_max]
        r = r_per_query[start:stop][ok].to(torch.float64)
        for j, k in enumerate(ks):
            recall_hits[j] += match[:, : min(k, k_max)].any(dim=1).sum()
        in_r = ranks[None, :] <= r[:, None]
        rel = (match & in_r).to(torch.float64)
        precision_at_i = rel.cumsum(dim=1) / ranks[None, :]
        ap_sum += ((precision_at_i * rel).sum(dim=1) / r).sum()
        rp_sum += (rel.sum(dim=1) / r).sum()

    n_valid = valid.sum().to(torch.float64)
    out: Dict[str, float] = {f"recall@{k}": float(recall_hits[j] / n_valid) for j, k in enumerate(ks)}
    out["map@r"] = float(ap_sum / n_valid)
    out["r_precision"] = float(rp_sum / n_valid)
    out["num_queries"] = float(n_valid)
    out["num_excluded"] = float(labels.numel() - n_valid)
    if nmi:
        out["nmi"] = nmi_score(embeddings, labels, metric=metric, seed=seed)
    return out


def nmi_score(embeddings: Tensor, labels: Tensor, metric: str = "cosine", seed: int = 0) -> float:
    """NMI between ``labels`` and k-means (scikit-learn, ``n_init=10``) clusters of the embeddings.

    With ``metric="cosine"`` the embeddings are L2-normalised first (spherical-style k-means, the
    usual choice for normalised DML embeddings).
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    x = _prepare(embeddings, metric).cpu().numpy().astype(np.float64)
    y = labels.detach().cpu().numpy()
    n_clusters = len(np.unique(y))
    if n_clusters < 2:
        return 0.0
    pred = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit_predict(x)
    return float(normalized_mutual_info_score(y, pred))


__all__ = ["retrieval_metrics", "nmi_score", "nearest_neighbours"]
