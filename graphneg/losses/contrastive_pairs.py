r"""Anchors, candidates and negative masks of the contrastive losses, in two call forms.

* **Two views** (:func:`contrastive_pairs`): ``z1, z2`` ``[B, D]`` stacked into ``N = 2B`` anchors
  ``[z1; z2]``; anchor ``i``'s positive is its other view, its negatives the other ``2B - 2``
  embeddings (minus same-class ones with ``labels``) and optional extra negatives ``neg`` ``[M, D]``.
  With ``gather_distributed`` the candidates span all processes; whether they do is decided by
  :func:`graphneg.distributed.gather_layout` and recorded in ``ContrastivePairs.layout``.
* **PyGCL keyword form** (:func:`masked_pairs`): ``anchor`` ``[M, D]``, ``sample`` ``[N, D]`` and
  ``pos_mask`` / ``neg_mask`` ``[M, N]``, as PyGCL's ``DualBranchContrast`` calls a loss
  (``loss(anchor=, sample=, pos_mask=, neg_mask=)``, PyGCL ``GCL/models/contrast_model.py``).

Both return a :class:`ContrastivePairs`, which the losses of :mod:`graphneg.losses.contrastive` consume.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from graphneg.distributed import GatherLayout, gather_layout, gather_rows
from graphneg.validation import check_embeddings, check_labels, check_same_width, value_checks_enabled

__all__ = ["ContrastivePairs", "contrastive_pairs", "masked_pairs", "negative_pair_mask", "view_partner"]


class ContrastivePairs(NamedTuple):
    """Anchors, candidates and masks of a batch (see :func:`contrastive_pairs`, :func:`masked_pairs`).

    Nothing is signalled by ``None``: ``layout`` says where this process's rows sit among the
    gathered rows (:class:`graphneg.distributed.GatherLayout`; ``layout.gathered`` is ``False`` on one
    process), ``anchors_first`` whether the candidates' first ``N`` rows are the anchors themselves,
    and ``partner`` names each candidate's own positive view (or ``-1``).
    """

    sim: Tensor  # [N, C] cosine similarities (N = 2B anchors; C = 2B + M locally, 2 B_tot + M_tot gathered)
    pos_index: Tensor  # [N] column of each anchor's positive
    neg_mask: Tensor  # [N, C] bool, True for negatives
    anchors: Tensor  # [N, D] normalised
    candidates: Tensor  # [C, D] normalised
    num_neg: Tensor  # [N] number of negatives per anchor (float, dtype of sim)
    labelled: bool  # True when labels (or a caller's mask) may leave anchors with different numbers of negatives
    self_index: Tensor  # [N] column of each anchor itself among the candidates, -1 where it is not one
    partner: Tensor  # [C] column of each candidate's own positive view, -1 for none (extra negatives)
    layout: GatherLayout  # rows of the two views among all processes (GatherLayout.single(B) when local)
    anchors_first: bool  # the candidates' first N rows are the anchors ([z1; z2] local, not gathered)


def view_partner(num_candidates: int, global_batch_size: int, device=None) -> Tensor:
    """``[C]`` own positive view of every column of ``[z1_all; z2_all; neg]``: ``(j + B_tot) mod 2 B_tot``
    for the ``2 B_tot`` views, ``-1`` for the extra negatives after them."""
    cols = torch.arange(num_candidates, device=device)
    two = 2 * int(global_batch_size)
    return torch.where(cols < two, (cols + global_batch_size) % two, torch.full_like(cols, -1))


def _self_and_positive(batch_size: int, offset: int, global_batch_size: int, device) -> Tuple[Tensor, Tensor]:
    """Columns of each anchor itself and of its positive among ``[z1_all; z2_all; ...]`` (``[2B]`` each).

    Anchor ``i < B`` (view 1) is row ``offset + i`` of ``z1_all``, its positive the same row of
    ``z2_all`` (column ``B_tot + offset + i``), and the other way round for view 2; with one process
    (``offset = 0``, ``B_tot = B``) that is ``i`` and ``(i + B) mod 2B``.
    """
    rows = torch.arange(2 * batch_size, device=device)
    first = rows < batch_size
    own = offset + rows - torch.where(first, 0, batch_size)  # row in z*_all
    return (torch.where(first, own, global_batch_size + own),
            torch.where(first, global_batch_size + own, own))


def negative_pair_mask(
    batch_size: int,
    labels: Optional[Tensor] = None,
    device: Optional[torch.device] = None,
    num_extra: int = 0,
    neg_labels: Optional[Tensor] = None,
    *,
    offset: int = 0,
    global_batch_size: Optional[int] = None,
    global_labels: Optional[Tensor] = None,
) -> Tensor:
    """``[2B, 2B + M]`` bool mask of the negatives of a two-view batch (the mask of :func:`contrastive_pairs`).

    Rows are the anchors ``[z1; z2]``, columns the candidates ``[z1; z2; neg]``. Anchor ``i``'s
    negatives are every candidate except itself and its positive ``(i + B) mod 2B``; with ``labels``
    (``[B]``) the candidates of the anchor's class are excluded too, the ``M = num_extra`` extra
    negatives by ``neg_labels`` (``[M]``, required when ``labels`` and extras are both given).

    Gathered candidates (``gather_distributed``): with ``global_batch_size = B_tot`` the columns are
    ``[z1_all; z2_all; neg]`` (``[2 B_tot + M]``), this process's anchors sit at rows
    ``offset .. offset + B`` of ``z*_all``, and ``global_labels`` (``[B_tot]``) label the gathered
    rows (required with ``labels``). The result is then ``[2B, 2 B_tot + M]``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(num_extra, bool) or not isinstance(num_extra, int) or num_extra < 0:
        raise ValueError(f"num_extra must be an int >= 0 (number of extra negatives), got {num_extra!r}")
    b_tot = batch_size if global_batch_size is None else int(global_batch_size)
    if not (0 <= offset and offset + batch_size <= b_tot):
        raise ValueError(
            f"offset={offset} and batch_size={batch_size} must fit in global_batch_size={b_tot} "
            "(this process's rows among the gathered batch)"
        )
    if device is None and labels is not None:
        device = labels.device
    self_index, pos_index = _self_and_positive(batch_size, offset, b_tot, device)
    cols = torch.arange(2 * b_tot + num_extra, device=device)
    mask = (cols[None, :] != self_index[:, None]) & (cols[None, :] != pos_index[:, None])
    if labels is not None:
        if global_labels is None:
            if b_tot != batch_size:
                raise ValueError("global_batch_size differs from batch_size: pass global_labels [B_tot] too")
            global_labels = labels
        row_labels = torch.cat([labels, labels]).to(mask.device)
        col_labels = torch.cat([global_labels, global_labels]).to(mask.device)
        if num_extra > 0:
            if neg_labels is None or neg_labels.numel() != num_extra:
                raise ValueError(
                    f"labels and {num_extra} extra negatives need neg_labels with {num_extra} class ids, got "
                    f"{None if neg_labels is None else tuple(neg_labels.shape)}"
                )
            col_labels = torch.cat([col_labels, neg_labels.reshape(-1).to(mask.device)])
        mask &= row_labels[:, None] != col_labels[None, :]
    return mask


def contrastive_pairs(
    z1: Tensor,
    z2: Tensor,
    labels: Optional[Tensor] = None,
    neg: Optional[Tensor] = None,
    neg_labels: Optional[Tensor] = None,
    gather_distributed: bool = False,
) -> ContrastivePairs:
    """Build the cosine logits and the negative mask of a two-view batch.

    Args:
        z1, z2: the two views ``[B, D]`` (normalised here).
        labels: optional class ids ``[B]``; negatives of the same class are excluded.
        neg: optional extra negatives ``[M, D]`` appended to every anchor's candidates.
        neg_labels: class ids ``[M]`` of ``neg``, required when both ``labels`` and ``neg`` are given.
        gather_distributed: inside a ``torch.distributed`` process group (Lightning DDP), take the
            candidates from *all* processes: :func:`graphneg.distributed.gather_layout` decides and
            describes the layout, :func:`graphneg.distributed.gather_rows` gathers (differentiable,
            any per-process ``B_r``). Anchors stay this process's ``2B`` views, candidates are
            ``[z1_all; z2_all; neg_all]`` with ``z*_all`` ``[B_tot, D]`` in rank order (``neg`` and
            ``neg_labels`` are gathered too, so every process must pass them or none); each anchor's
            own column and positive are its row shifted by ``layout.offset``. Ignored outside a
            process group (one process: the candidates are the batch).

    Returns:
        :class:`ContrastivePairs` with ``sim`` ``[2B, C]``, ``pos_index`` ``[2B]``, ``neg_mask``
        ``[2B, C]``, ``self_index`` ``[2B]``, ``partner`` ``[C]`` (:func:`view_partner`) and
        ``layout``; ``C = 2B + M`` locally, ``C = 2 B_tot + M_tot`` when gathered.

    Raises:
        ValueError: on mismatched shapes, non-finite values (value checks), or an anchor without
        any negative (value checks, with labels).
    """
    check_embeddings(z1, "z1")
    check_embeddings(z2, "z2")
    if z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must be two views of the same batch with equal shape [B, D], got "
            f"{tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    b, d = z1.shape
    if b == 0:
        raise ValueError("the batch is empty: z1 and z2 need at least one row")
    if neg is not None:
        check_same_width(neg, z1, "neg (extra negatives)", "z1/z2")
    if neg_labels is not None and labels is None:
        raise ValueError("neg_labels were given without labels: pass labels for z1/z2 as well, or neither")
    if labels is not None and neg is not None and neg.size(0) > 0 and neg_labels is None:
        raise ValueError(
            "labels were given together with extra negatives neg but without neg_labels: pass the class "
            "ids of neg (shape [M]) so same-class extras can be excluded"
        )
    if neg_labels is not None and neg is None:
        raise ValueError("neg_labels were given without neg (the extra negative embeddings)")
    if not isinstance(gather_distributed, bool):
        raise TypeError(f"gather_distributed must be True or False, got {gather_distributed!r}")

    device = z1.device
    anchors = F.normalize(torch.cat([z1, z2], dim=0), dim=-1)
    if labels is not None:
        labels = check_labels(labels, b).to(device)
    if neg is not None:
        neg = F.normalize(neg.to(z1.dtype), dim=-1)
        if neg_labels is not None:
            neg_labels = check_labels(neg_labels, neg.size(0), "neg_labels").to(device)
        elif labels is not None:  # no extra rows (checked above): no labels needed
            neg_labels = labels.new_empty(0)
    layout = gather_layout(b, gather_distributed, device)  # the one decision (and size exchange)
    labels_all = labels
    if layout.gathered:
        # the two views side by side: one gather of B_r rows (labels alongside)
        views = torch.cat([anchors[:b], anchors[b:]], dim=1)
        if labels is None:
            views = gather_rows(layout, views)
        else:
            views, labels_all = gather_rows(layout, views, labels)
        own = torch.cat([views[:, :d], views[:, d:]])
        if neg is not None:
            neg_layout = gather_layout(neg.size(0), True, device)
            if neg_labels is None:
                neg = gather_rows(neg_layout, neg)
            else:
                neg, neg_labels = gather_rows(neg_layout, neg, neg_labels)
    else:
        own = anchors
    b_tot = layout.global_rows
    candidates = own if neg is None else torch.cat([own, neg])
    n, c = 2 * b, candidates.size(0)
    sim = anchors @ candidates.t()

    self_index, pos_index = _self_and_positive(b, layout.offset, b_tot, device)
    neg_mask = negative_pair_mask(
        b, labels, device, c - 2 * b_tot, neg_labels if labels is not None else None,
        offset=layout.offset, global_batch_size=b_tot, global_labels=labels_all,
    )
    if labels is not None:
        num_neg = neg_mask.sum(dim=1)
        if value_checks_enabled():
            empty = num_neg == 0
            if bool(empty.any()):
                raise ValueError(
                    f"{int(empty.sum())} of {n} anchors have no valid negative (every other sample shares "
                    "their label); build batches with at least two classes (e.g. "
                    "graphneg.data.MPerClassSampler) or pass extra negatives of other classes"
                )
        num_neg = num_neg.to(sim.dtype)
    else:
        if c - 2 < 1:
            raise ValueError(
                "a batch of one sample has no negative (the other 2B-2 = 0 embeddings): use B >= 2 "
                "or pass extra negatives neg"
            )
        num_neg = torch.full((n,), float(c - 2), dtype=sim.dtype, device=device)
    return ContrastivePairs(
        sim, pos_index, neg_mask, anchors, candidates, num_neg, labels is not None, self_index,
        view_partner(c, b_tot, device), layout, not layout.gathered,
    )


def masked_pairs(anchor: Tensor, sample: Tensor, pos_mask: Tensor, neg_mask: Tensor) -> ContrastivePairs:
    """The PyGCL call form: anchors, samples and masks as ``DualBranchContrast`` passes them to a loss.

    PyGCL (``GCL/models/contrast_model.py``) calls ``loss(anchor=, sample=, pos_mask=, neg_mask=)``
    with ``anchor`` ``[M, D]``, ``sample`` ``[N, D]`` and float masks ``[M, N]`` (1 = positive /
    negative pair); its samplers give one positive per row in the ``'L2L'`` and ``'G2G'`` modes
    (``pos_mask = eye``, ``neg_mask = 1 - pos_mask``; with ``intraview_negs=True`` the anchors are
    appended to the samples, with the anchor itself neither positive nor negative).

    Here every row must have exactly one positive (checked with value checks; PyGCL's ``'G2L'``
    mode, many node positives per graph, is not supported) and at least one negative; a column marked
    both positive and negative counts as the positive. ``partner`` (each sample's own positive view,
    which the UnReMix diversity leaves out of a sample's neighbourhood) is read off the masks: where
    a row excludes exactly one column (neither positive nor negative: the anchor itself among the
    samples, PyGCL's ``intraview_negs`` layout), that column and the row's positive are a pair.
    Nothing is gathered across processes (PyGCL's loop has no multi-GPU gathering). No host
    synchronisation without value checks.
    """
    check_embeddings(anchor, "anchor")
    check_same_width(sample, anchor, "sample", "anchor")
    m, c = anchor.size(0), sample.size(0)
    for name, mask in (("pos_mask", pos_mask), ("neg_mask", neg_mask)):
        if not isinstance(mask, Tensor) or tuple(mask.shape) != (m, c):
            got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(
                f"{name} must be a tensor of shape [M, N] = [{m}, {c}] (anchors x samples, 1 marks a "
                f"pair), got {got}"
            )
    if m == 0 or c == 0:
        raise ValueError(f"anchor and sample need at least one row each, got {m} and {c}")
    device = anchor.device
    pos = pos_mask.to(device) != 0
    neg = (neg_mask.to(device) != 0) & ~pos
    if value_checks_enabled():
        n_pos = pos.sum(dim=1)
        if bool((n_pos != 1).any()):
            raise ValueError(
                f"pos_mask must mark exactly one positive per anchor row, got rows with "
                f"{sorted(set(n_pos.tolist()) - {1})} positives; graphneg's contrastive losses are "
                "single-positive (PyGCL's 'L2L' / 'G2G' modes), not the multi-positive 'G2L' mode"
            )
        if bool((neg.sum(dim=1) == 0).any()):
            raise ValueError("neg_mask leaves an anchor row without any negative: every row needs one")
    anchors = F.normalize(anchor, dim=-1)
    candidates = F.normalize(sample.to(anchor.dtype), dim=-1)
    sim = anchors @ candidates.t()
    dtype = sim.dtype
    pos_index = pos.to(dtype).argmax(dim=1)
    num_neg = neg.sum(dim=1).to(dtype)
    excluded = ~pos & ~neg
    one = excluded.sum(dim=1) == 1
    self_col = excluded.to(dtype).argmax(dim=1)
    self_index = torch.where(one, self_col, torch.full_like(self_col, -1))
    # pair (positive, anchor itself) both ways; rows without a unique self write into a spare slot c
    partner = torch.full((c + 1,), -1, dtype=torch.long, device=device)
    spare = torch.full_like(self_col, c)
    partner.scatter_(0, torch.where(one, pos_index, spare), self_col)
    partner.scatter_(0, torch.where(one, self_col, spare), pos_index)
    return ContrastivePairs(
        sim, pos_index, neg, anchors, candidates, num_neg, True, self_index, partner[:c],
        GatherLayout.single(m), False,
    )
