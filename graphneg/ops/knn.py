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

__all__ = [
    "chunked_topk", "knn_index", "nearest_neighbours", "faiss_available", "prepare_features",
    "PREFILTER_DEVICE_TYPES",
]


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


#: Device types on which ``selection="auto"`` uses the host-side prefilter selection (it reads a count
#: back to the host and uses ``nonzero``, free on the CPU, a synchronisation on CUDA). Other devices get
#: the sync-free two-pass selection. Tests of the CUDA code path empty it to run that path on the CPU.
PREFILTER_DEVICE_TYPES = {"cpu"}

#: The prefilter falls back to the two-pass selection on a block whose candidate groups (times the
#: group size) exceed this many times ``k`` per query on average (only with massive ties: random or
#: trained embeddings give ~k groups of ``T = ceil(N_ref / w)`` entries, e.g. 15 k at SOP size).
_PREFILTER_MAX_CANDIDATES = 32


def _select_twopass(s: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """Top ``k`` of each row of ``s`` (descending, ties lowest index first), sync-free on any device.

    ``topk`` gives each row's ``k``-th value ``v_k``; a second ``topk`` over an int32 key (every
    score ``> v_k`` ranks first, then the scores ``== v_k`` by ascending index, the rest last) picks
    the ``k`` references, which are then stably sorted by descending score.
    """
    n = s.size(1)
    rev = (n - torch.arange(n, device=s.device)).to(torch.int32)  # n - index: larger = lower index
    kth = s.topk(k, dim=1).values[:, -1:]
    key = torch.where(s >= kth, rev, -1)
    key.masked_fill_(s > kth, n + 1)
    idx = key.topk(k, dim=1).indices
    del key
    idx = idx.sort(dim=1).values  # ascending index, so the stable sort below keeps ties in that order
    val = s.gather(1, idx)
    order = val.sort(dim=1, descending=True, stable=True).indices
    return val.gather(1, order), idx.gather(1, order)


#: column-tile width of the prefilter's score block (at least ``4 k``): a ``[c, 4096]`` GEMM output
#: stays in cache, which made the CPU GEMM ~1.45x faster than one ``[c, N_ref]`` product (measured,
#: 1 thread: ~70 vs ~48 GFLOPS at 277 x 512 x 60,502)
_TILE = 4096


def _tiled_scores(q: Tensor, refs: Tensor, score: str, r_sq: Optional[Tensor], w: int,
                  store: Optional[Tensor] = None) -> Tensor:
    """Scores of ``q`` against ``refs`` as ``[T, c, w]`` column tiles (tile ``t`` holds references
    ``t w ... t w + w - 1``); the last tile's columns past ``N_ref`` are ``-inf``. Written into
    ``store`` (a flat buffer of at least ``T c w`` elements, reused across blocks: a fresh block of
    this size costs its page faults every time) when given."""
    c, n = q.size(0), refs.size(0)
    n_tiles = -(-n // w)
    if store is None:
        store = torch.empty(n_tiles * c * w, device=q.device, dtype=q.dtype)
    buf = store[: n_tiles * c * w].view(n_tiles, c, w)
    q_sq = (q * q).sum(-1, keepdim=True) if score == "neg_sqeuclidean" else None
    for t in range(n_tiles):
        r = refs[t * w:(t + 1) * w]
        out = buf[t, :, : r.size(0)]
        if r.size(0) == w:
            torch.mm(q, r.t(), out=buf[t])
        else:
            out.copy_(q @ r.t())
            buf[t, :, r.size(0):] = float("-inf")
        if q_sq is not None:
            out.mul_(2).sub_(r_sq[t * w:t * w + r.size(0)][None, :]).sub_(q_sq)
    return buf


def _select_prefilter(buf: Tensor, k: int, n: int,
                      mask_store: Optional[Tensor] = None) -> Optional[Tuple[Tensor, Tensor]]:
    """:func:`_select_twopass`'s result from the tiled scores ``buf [T, c, w]`` (``w >= 4 k``) through a
    small candidate set (host-side; ``None`` when the candidates are too many, the caller then runs
    :func:`_select_twopass`).

    The references of a row form ``w`` groups (one column of every tile, ``{j, j + w, ...}``); the
    ``k``-th largest group maximum ``t`` is a lower bound of the row's ``k``-th largest value (the ``k``
    largest group maxima are ``k`` entries ``>= t``), so every entry of the top ``k``, and every entry
    tied with its ``k``-th value, is ``>= t``. The entries ``>= t`` (about ``1.2 k`` a row for
    continuous scores with ``w = 4 k``) are gathered in ascending index order and stably sorted by
    descending score: the first ``k`` are exactly the two-pass result (reconstructed: the bound of
    blocked top-k selection, as faiss's result handlers keep a running threshold; not from a paper).
    """
    n_tiles, c, w = buf.shape
    gmax = buf.amax(0)  # [c, w]: elementwise maxima of the tiles, a contiguous reduction
    t = gmax.topk(k, dim=1, sorted=False).values.amin(1)
    # the comparison written in [c, T, w] order: row-major = ascending reference index within a row
    if mask_store is None:
        mask_store = torch.empty(c * n_tiles * w, device=buf.device, dtype=torch.bool)
    mask = mask_store[: c * n_tiles * w].view(c, n_tiles, w)
    torch.ge(buf.permute(1, 0, 2), t[:, None, None], out=mask)
    # candidates lie in the groups whose maximum is >= t (k of them a row without ties): their count
    # times T bounds the candidates (and the nonzero output) without a pass over the block
    if int(torch.count_nonzero(gmax >= t[:, None])) * n_tiles > _PREFILTER_MAX_CANDIDATES * k * c:
        return None
    flat = mask.view(-1).nonzero().squeeze(1)
    del mask
    row = flat // (n_tiles * w)
    ref = flat - row * (n_tiles * w)  # = tile * w + column: the reference index
    tile = ref // w
    counts = torch.bincount(row, minlength=c)
    width = int(counts.max())
    pos = torch.arange(row.numel(), device=buf.device) - (counts.cumsum(0) - counts).index_select(0, row)
    flat = row * width + pos
    vals = torch.full((c * width,), float("-inf"), device=buf.device, dtype=buf.dtype)
    idx = torch.full((c * width,), n, device=buf.device, dtype=torch.long)
    vals.index_copy_(0, flat, buf[tile, row, ref - tile * w])
    idx.index_copy_(0, flat, ref)
    vals, idx = vals.view(c, width), idx.view(c, width)
    order = vals.sort(dim=1, descending=True, stable=True).indices[:, :k]
    return vals.gather(1, order), idx.gather(1, order)


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
    selection: str = "auto",
) -> Iterator[Tuple[int, Tensor, Tensor]]:
    """The one chunked top-k kernel of graphneg: yields ``(start, values [c, k], indices [c, k])``.

    Shared by :func:`nearest_neighbours` (retrieval evaluation, probes) and :func:`knn_index`
    (kNN batch graphs, UnReMix). Queries are processed ``c`` rows at a time, ``c = min(chunk_size,
    max_block_elements // N_ref)``, so at most one ``[c, N_ref]`` float32 score block exists at a time
    (64 MiB at the default ``max_block_elements``), plus the selection's work space: about 6 more bytes
    an element for ``"twopass"`` (an int32 key, boolean masks), about 1 for ``"prefilter"`` (one
    boolean mask; candidates ~ ``1.2 k`` a row; its block is laid out as ``[T, c, w]`` column tiles of
    ``w = max(4096, 4 k)`` references, each tile one cache-friendly GEMM, padded by fewer than ``w``
    columns).

    Scores (larger = closer): ``score="dot"``: ``<q, r>`` (pass L2-normalised rows for cosine);
    ``score="neg_sqeuclidean"``: ``-||q - r||^2``. Excluded pairs get ``-inf``: the query itself
    when ``exclude_self`` (queries are the references, row ``i`` <-> reference ``i``) and references
    of the query's class when ``exclude_same_label``. Rows with fewer than ``k`` allowed references
    return ``-inf`` values in their last columns (callers drop them).

    Ties are broken deterministically, lowest reference index first (the order of a stable sort of
    ``-score``), on every device and by both selections (``torch.topk`` alone leaves the order of equal
    values unspecified). ``selection``: ``"twopass"`` (two ``topk`` and an integer key; no host
    synchronisation, the CUDA path), ``"prefilter"`` (a lower bound of the ``k``-th value from
    group maxima across the tiles, then a stable sort of the few entries above it; reads a count back
    to the host; ~2.5x faster than ``"twopass"`` on the CPU at SOP size), or ``"auto"``: ``"prefilter"``
    on :data:`PREFILTER_DEVICE_TYPES` when ``N_ref >= max(8 k, 4096)`` (where it pays: evaluation-size
    galleries; a training batch's kNN graph stays sync-free), else ``"twopass"``. Both give identical results.
    """
    if score not in ("dot", "neg_sqeuclidean"):
        raise ValueError(f"score must be 'dot' or 'neg_sqeuclidean', got {score!r}")
    if selection not in ("auto", "twopass", "prefilter"):
        raise ValueError(f"selection must be 'auto', 'twopass' or 'prefilter', got {selection!r}")
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
    if selection == "auto":
        prefilter = device.type in PREFILTER_DEVICE_TYPES and n_ref >= max(8 * k, _TILE)
        selection = "prefilter" if prefilter else "twopass"
    r_sq = (refs * refs).sum(-1) if score == "neg_sqeuclidean" else None
    w = min(max(_TILE, 4 * k), n_ref)  # tile width: >= 4 k groups per row
    store = mask_store = None
    if selection == "prefilter":  # one score and one mask buffer for all blocks
        size = -(-n_ref // w) * w * min(rows_per, n_q)
        store = torch.empty(size, device=device, dtype=queries.dtype)
        mask_store = torch.empty(size, device=device, dtype=torch.bool)
    for start in range(0, n_q, rows_per):
        q = queries[start:start + rows_per]
        c = q.size(0)
        if selection == "prefilter":  # [T, c, w] column tiles
            s = _tiled_scores(q, refs, score, r_sq, w, store)
            if exclude_self:
                own = torch.arange(start, start + c, device=device)
                s[own // w, own - start, own % w] = float("-inf")
            if exclude_same_label:
                for t in range(s.size(0)):
                    rl = ref_labels[t * w:(t + 1) * w]
                    s[t, :, : rl.numel()].masked_fill_(query_labels[start:start + c, None] == rl[None, :],
                                                      float("-inf"))
            out = _select_prefilter(s, k, n_ref, mask_store)
            if out is None:  # massive ties: the two-pass selection on the [c, N_ref] layout
                s = s.permute(1, 0, 2).reshape(c, -1)[:, :n_ref]
                out = _select_twopass(s, k)
        else:
            s = q @ refs.t()
            if r_sq is not None:
                s.mul_(2).sub_(r_sq[None, :]).sub_((q * q).sum(-1, keepdim=True))
            if exclude_self:
                local = torch.arange(c, device=device)
                s[local, local + start] = float("-inf")
            if exclude_same_label:
                s.masked_fill_(query_labels[start:start + c, None] == ref_labels[None, :], float("-inf"))
            out = _select_twopass(s, k)
        del s
        yield start, out[0], out[1]


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
    q = prepare_features(queries, metric)
    r = q if refs is queries else prepare_features(refs, metric)  # one normalised copy in the same-set case
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
    vals, idxs = [], []
    for _, val, idx in chunked_topk(
        feats, feats, k_eff, score="dot", exclude_self=not loop, query_labels=labels, ref_labels=labels,
        exclude_same_label=negatives_only, chunk_size=chunk_size,
    ):
        vals.append(val)
        idxs.append(idx)
    src = torch.cat(idxs)  # [n, k_eff]: row i holds node i's neighbours
    tgt = torch.arange(n, device=x.device)[:, None].expand_as(src)
    if negatives_only:
        # rows with fewer than k other-class nodes end in -inf columns: a data-dependent edge count
        # (one host synchronisation); without label exclusion every column is a real neighbour
        keep = torch.isfinite(torch.cat(vals))
        src, tgt = src[keep], tgt[keep]
        order = torch.argsort(tgt * n + src)
        src, tgt = src[order], tgt[order]
    else:  # sorted by target already (row order); sort the sources within each row, no sync
        src = src.sort(dim=1).values
    return torch.stack([src.reshape(-1), tgt.reshape(-1)])
