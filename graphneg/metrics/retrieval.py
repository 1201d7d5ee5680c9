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

Recall@K needs ``K <= N_ref`` references a query (``N - 1`` in the same-set protocol, the gallery size
otherwise): a larger K would count every reference and report 1.0 whatever the embeddings are (e.g.
``ks=(1, 100)`` on 12 samples). Such a K is reported as ``nan`` with an :class:`UndefinedRecallWarning`
naming the limit (as scikit-learn reports an ill-defined metric); the other metrics are unaffected.

Queries with ``R = 0`` (their class has no other member among the references) have no defined
R-Precision/MAP@R; they are left out of every metric, and the number left out is reported.

Neighbours are searched in chunks of queries by :func:`chunked_topk` (the kernel
:func:`graphneg.graph.knn_index` uses too): at most a ``[c, N_ref]`` similarity block exists at a time
(``c * N_ref <= max_block_elements``), plus ``[c, K_max]`` indices with ``K_max = max(max(ks), max R)``;
tied neighbours are ranked lowest reference index first. With the ``faiss`` extra installed,
``backend="faiss"`` (or ``"auto"``) uses an exact ``IndexFlatIP`` search instead; the results are the
same up to the order of tied neighbours.

Protocols (:data:`RECALL_KS`, the K of the official GCA-HNG ``train.py`` / ``scripts/evaluate.py``):
CUB-200-2011 and Cars196 ``(1, 2, 4, 8)``, Stanford Online Products ``(1, 10, 100, 1000)`` (queries are
their own gallery, each query excluded), In-Shop ``(1, 10, 20, 30, 40, 50)`` with the query split
searched against the gallery split (``ref_embeddings`` / ``ref_labels``).
"""
from __future__ import annotations

import warnings
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from graphneg.progress import ProgressBar, progress_enabled
from graphneg.ops.knn import chunked_topk, faiss_available, nearest_neighbours, prepare_features  # noqa: F401
from graphneg.validation import check_embeddings, check_ks, check_labels

class UndefinedRecallWarning(UserWarning):
    """Recall@K asked for a K larger than the number of references of a query (reported as nan)."""


#: Recall@K values of each benchmark's published protocol (official GCA-HNG ``train.py``).
RECALL_KS: Dict[str, Tuple[int, ...]] = {
    "cub200": (1, 2, 4, 8),
    "cars196": (1, 2, 4, 8),
    "sop": (1, 10, 100, 1000),
    "inshop": (1, 10, 20, 30, 40, 50),
}


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
    max_block_elements: int = 1 << 24,
    progress: Optional[bool] = None,
) -> Dict[str, float]:
    """Recall@K, MAP@R, R-Precision and NMI of a retrieval set (see the module docstring).

    Args:
        embeddings: queries ``[N, D]``.
        labels: query classes ``[N]``.
        ks: the K of Recall@K; a K above the number of references a query has (``N - 1``, or the
            gallery size) is reported as ``nan`` with an :class:`UndefinedRecallWarning`.
        ref_embeddings / ref_labels: the gallery; when omitted the queries are their own gallery and each
            query is excluded from its own neighbours (CUB/Cars/SOP protocol). In-Shop passes a gallery.
        metric: ``"cosine"`` (default) or ``"euclidean"``.
        chunk_size: at most this many queries per similarity block.
        max_block_elements: at most this many entries in a similarity block (``chunk_size`` shrinks to
            ``max_block_elements // N_ref`` rows for large galleries; bounds the peak memory).
        nmi: also compute NMI (k-means, scikit-learn).
        backend: ``"torch"``, ``"faiss"`` or ``"auto"``.
        progress: a console bar over the query chunks (:mod:`graphneg.progress`): ``None`` (default)
            shows one only for more than ``graphneg.progress.PROGRESS_THRESHOLD`` (20,000) queries on a
            terminal, ``True`` always, ``False`` never. The results do not depend on it.

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
    too_large = [k for k in ks if k > n_ref_avail]
    if too_large:
        where = (f"{ref_embeddings.size(0)} samples, the query itself excluded" if same_set
                 else f"a gallery of {ref_embeddings.size(0)}")
        warnings.warn(
            f"ks: Recall@K is undefined for K = {too_large}: each query has only {n_ref_avail} references "
            f"({where}), fewer than K to rank; reported as nan. Use "
            f"ks <= {n_ref_avail} or a larger evaluation set",
            UndefinedRecallWarning, stacklevel=2,
        )
    k_max = min(max(ks[-1], int(r_per_query.max())), n_ref_avail)

    recall_hits = torch.zeros(len(ks), dtype=torch.float64, device=embeddings.device)
    ap_sum = torch.zeros((), dtype=torch.float64, device=embeddings.device)
    rp_sum = torch.zeros((), dtype=torch.float64, device=embeddings.device)
    ranks = torch.arange(1, k_max + 1, device=embeddings.device, dtype=torch.float64)
    n_q = embeddings.size(0)
    with ProgressBar("retrieval", total=n_q, enabled=progress_enabled(progress, n_q)) as bar:
        for start, idx in nearest_neighbours(
            embeddings, ref_embeddings, k_max, same_set, metric, chunk_size, backend, max_block_elements
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
            bar.advance(idx.size(0))

    n_valid = valid.sum().to(torch.float64)
    out: Dict[str, float] = {
        f"recall@{k}": float(recall_hits[j] / n_valid) if k <= n_ref_avail else float("nan")
        for j, k in enumerate(ks)
    }
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

    x = prepare_features(embeddings, metric).cpu().numpy().astype(np.float64)
    y = labels.detach().cpu().numpy()
    n_clusters = len(np.unique(y))
    if n_clusters < 2:
        return 0.0
    pred = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit_predict(x)
    return float(normalized_mutual_info_score(y, pred))


__all__ = [
    "retrieval_metrics", "nmi_score", "nearest_neighbours", "chunked_topk", "RECALL_KS", "UndefinedRecallWarning",
]
