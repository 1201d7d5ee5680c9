r"""The contract every graphneg metric loss follows (pytorch-metric-learning style).

.. code-block:: python

    loss = criterion(embeddings, labels)                          # all pairs / triplets of the batch
    loss = criterion(embeddings, labels, indices_tuple)           # a PML miner's output
    loss = criterion(embeddings, labels, ref_emb=r, ref_labels=t) # anchors vs a reference set
    loss = criterion(embeddings, labels, neg_embeddings=z_neg,    # synthetic negatives (J_syn)
                     neg_labels=y_neg, anchor_index=a)
    loss = criterion(embeddings, labels, neg_embeddings=z_neg,    # ... in a padded layout
                     neg_labels=y_neg, anchor_index=a, neg_mask=real)

:class:`BaseMetricLoss` ``forward`` validates its inputs once (through :mod:`graphneg.validation`;
value checks only while :func:`graphneg.validation.value_checks_enabled`) and calls
``compute(embeddings, labels, indices_tuple, ref_emb, ref_labels, synthetic)``. The positional part of
the signature is pytorch-metric-learning's ``BaseMetricLossFunction.forward``; the synthetic negatives
are keyword-only.

* ``embeddings`` ``[B, D]`` (floating), ``labels`` ``[B]`` (integer class ids).
* ``indices_tuple``: PML miner output, pairs ``(a1, p, a2, n)`` or triplets ``(a, p, n)`` (1-D integer
  tensors; anchors index ``embeddings``, the others ``ref_emb`` or ``embeddings``). A loss uses it
  as PML does (:func:`pair_masks`: PML ``convert_to_pairs``; :func:`convert_to_triplets`: PML
  ``convert_to_triplets``) or, when ``supports_indices_tuple`` is ``False``, raises naming itself.
* ``ref_emb`` ``[R, D]``, ``ref_labels`` ``[R]``: PML's reference set (pairs are anchors x references,
  no self-pair exclusion); losses with ``supports_ref_emb = False`` raise.
* ``neg_embeddings`` ``[M, D]``, ``neg_labels`` ``[M]``, ``anchor_index`` ``[M]``: synthetic negatives
  (GCA-HNG, HDML). Synthetic negative ``k`` belongs to anchor ``anchor_index[k]`` and carries class
  ``neg_labels[k] != labels[anchor_index[k]]``. For the pair-based losses the negatives of anchor ``a``
  are then exactly its synthetic negatives and its positives the real same-class samples (the
  synthetic term :math:`J_{syn}` of HDML, Zheng et al. CVPR 2019 Sec. 3.4, and GCA-HNG, official
  ``scripts/models.py``). They cannot be combined with ``indices_tuple`` / ``ref_emb``; to feed them to a
  PML loss use :func:`graphneg.losses.synthetic_indices_tuple`.
* ``neg_mask`` ``[M]`` (bool, optional, keyword-only; ``None`` = every row is a synthetic negative): the
  padded layout with a static number of rows that :class:`graphneg.nn.GCAHNG` returns on CUDA (no host
  sync, issue 21). ``True`` marks a real synthetic negative, ``False`` a padding row (finite ``x``, e.g.
  zeros; any ``neg_labels`` / ``anchor_index``, even the anchor's class or out of range: the value checks
  skip padding rows and :func:`check_synthetic` sets them to 0). Every loss gives the value and the
  gradients (up to rounding) of the compact call on the rows ``neg_mask`` selects (``neg_embeddings[neg_mask]``, ...),
  padding rows get zero gradient, and an all-``False`` mask is the call with ``M = 0``; the mask is folded
  into each loss's pair / triplet masks (``-inf`` logits, masked means), so no host sync is added.
  :class:`SyntheticNegatives` carries it as ``mask``.

What a loss needs is declared by class attributes (read them instead of ``isinstance``):

* ``requires_positives``: the batch needs a class with at least two samples (use an m-per-class
  sampler with ``m >= 2``, :class:`graphneg.data.MPerClassBatchSampler`).
* ``accepts_synthetic``: takes ``neg_embeddings / neg_labels / anchor_index`` (and ``neg_mask``).
* ``has_proxies``: owns learnable parameters (proxies) that the optimiser must see.
* ``supports_indices_tuple``, ``supports_ref_emb``: as above.

Every loss computes in float32 under autocast and for 16-bit inputs
(:func:`graphneg.precision.full_precision`); no Python loop over samples.
"""
from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from typing import NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from graphneg.losses.distances import BaseDistance
from graphneg.precision import full_precision
from graphneg.validation import (
    SyntheticNegatives, check_embeddings, check_hyperparameter, check_indices_tuple, check_labels, check_multiclass,
    check_same_width, check_synthetic, value_checks_enabled,
)

__all__ = [
    "BaseMetricLoss", "SyntheticNegatives", "PairBlock", "check_synthetic", "check_indices_tuple",
    "check_hparam", "pair_block", "segment_log_sum_exp", "pair_masks", "convert_to_triplets", "log1p_sum_exp", "NO_POSITIVE",
]

NO_POSITIVE = (
    "no anchor in this batch has a positive (every class appears once): pair-based losses need at "
    "least two samples of some class; use an m-per-class sampler with m >= 2 "
    "(e.g. graphneg.data.MPerClassBatchSampler)"
)


def check_hparam(owner: str, name: str, value, minimum: float = 0.0, strict: bool = False) -> float:
    """Deprecated: use :func:`graphneg.validation.check_hyperparameter` (same check, same message)."""
    warnings.warn("graphneg.losses.base.check_hparam is deprecated; use graphneg.validation.check_hyperparameter",
                  DeprecationWarning, stacklevel=2)
    return check_hyperparameter(value, name, minimum, min_inclusive=not strict, owner=owner)


class PairBlock(NamedTuple):
    r"""Anchors x candidates matrix and masks, shared by all pair-based losses.

    * ``pos_sim`` ``[B, R]``: ``distance(embeddings, ref)`` (similarities or distances, as the loss's
      distance object says); ``pos_mask[a, j]`` iff ``j`` is a positive of ``a``.
    * ``neg_sim`` ``[B, K]``; ``neg_mask[a, c]`` iff column ``c`` of row ``a`` holds a negative of ``a``;
      ``neg_index[a, c]`` is that candidate's row in the candidate set (``ref``, or ``neg_embeddings``
      with synthetic negatives), ``-1`` on padding. Without synthetic negatives ``neg_sim`` *is*
      ``pos_sim`` and ``K = R``.
    """

    pos_sim: Tensor
    pos_mask: Tensor
    neg_sim: Tensor
    neg_mask: Tensor
    neg_index: Tensor


def log1p_sum_exp(x: Tensor, mask: Tensor, dim: int = 1) -> Tensor:
    r""":math:`\log(1 + \sum_{j: mask_j} e^{x_j})` along ``dim``, stable (logsumexp with a zero logit);
    0 where the mask is empty (PML ``lmu.logsumexp(add_one=True)``)."""
    x = x.masked_fill(~mask, float("-inf"))
    zero = x.new_zeros(1).expand(*[1 if d == (dim % x.dim()) else s for d, s in enumerate(x.shape)])
    return torch.logsumexp(torch.cat([zero, x], dim=dim), dim=dim)


def segment_log_sum_exp(x: Tensor, index: Tensor, init: Tensor) -> Tensor:
    r""":math:`\log(e^{init_a} + \sum_{k: index_k = a} e^{x_k})` for every segment ``a`` (``init`` ``[B]``,
    ``x`` and ``index`` ``[M]``; ``-inf`` entries of ``x`` count as absent): the logsumexp of
    :func:`log1p_sum_exp` (``init = 0``) over a flat, unpadded layout, stable (shifted by the segment's
    detached maximum), no host sync. Reconstructed: the standard max-shifted logsumexp, per segment."""
    shift = init.detach().scatter_reduce(0, index, x.detach(), reduce="amax", include_self=True)
    total = (init - shift).exp().index_add(0, index, (x - shift.index_select(0, index)).exp())
    return shift + total.log()


def pair_masks(indices_tuple: Optional[Sequence[Tensor]], labels: Tensor, ref_labels: Optional[Tensor]):
    """Positive and negative pair masks ``[B, R]`` (PML ``convert_to_pairs``): all pairs from the labels
    (self-pairs excluded when there is no reference set), or exactly the pairs of a miner tuple (a triplet
    tuple ``(a, p, n)`` gives pairs ``(a, p)`` and ``(a, n)``). No host sync."""
    ref = labels if ref_labels is None else ref_labels
    n, r, device = labels.numel(), ref.numel(), labels.device
    if indices_tuple is None:
        same = labels[:, None] == ref[None, :]
        pos = same & ~torch.eye(n, r, dtype=torch.bool, device=device) if ref_labels is None else same
        return pos, ~same
    if len(indices_tuple) == 3:
        a, p, neg = indices_tuple
        indices_tuple = (a, p, a, neg)
    a1, p, a2, neg = (t.to(device) for t in indices_tuple)
    empty = torch.zeros(n, r, dtype=torch.bool, device=device)
    true = torch.ones((), dtype=torch.bool, device=device)
    return (empty.index_put((a1, p), true.expand(a1.numel())),
            empty.index_put((a2, neg), true.expand(a2.numel())))


def convert_to_triplets(indices_tuple: Sequence[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
    """A miner tuple as triplets (PML ``convert_to_triplets``): triplets as they are; pairs
    ``(a1, p, a2, n)`` as every ``(a, p, n)`` with ``a1 == a2 == a`` (data-dependent size, like a miner)."""
    if len(indices_tuple) == 3:
        return tuple(indices_tuple)  # type: ignore[return-value]
    a1, p, a2, n = indices_tuple
    p_idx, n_idx = torch.where(a1[:, None] == a2[None, :])
    return a1[p_idx], p[p_idx], n[n_idx]


def pair_block(
    embeddings: Tensor,
    labels: Tensor,
    synthetic: Optional[SyntheticNegatives],
    distance: BaseDistance,
    ref_emb: Optional[Tensor] = None,
    ref_labels: Optional[Tensor] = None,
    indices_tuple: Optional[Sequence[Tensor]] = None,
) -> PairBlock:
    r"""Build the anchors x candidates :class:`PairBlock` (the one helper of all pair-based losses).

    Without synthetic negatives: ``distance(embeddings, ref_emb)`` with :func:`pair_masks`. With
    ``synthetic`` the candidates of anchor ``a`` are the rows ``k`` with ``anchor_index[k] == a``, packed
    into the first columns of a padded block of ``max(M, 1)`` columns (a static bound on the widest
    anchor, read from the shape, so no host sync, issue 21; the padding is masked out, so the losses
    are those of the tight ``K = max_a |{k : anchor_index[k] = a}|`` packing); their values
    ``distance.pairwise(z_a, n_k)`` are computed row-wise, ``O(M D)``; the block takes ``O(B M)`` memory.
    With ``synthetic.mask`` the padding rows (``mask[k] = False``) are placed after their anchor's real
    rows and left out of ``neg_mask``, so the block equals the compact call's on its first columns
    (``neg_index`` still points at them, ``-1`` only on empty columns).
    """
    mat = distance(embeddings, ref_emb)
    pos_mask, neg_mask = pair_masks(indices_tuple, labels, ref_labels)
    n, device = embeddings.size(0), embeddings.device
    if synthetic is None:
        index = torch.arange(mat.size(1), device=device).expand(n, mat.size(1))
        return PairBlock(mat, pos_mask, mat, neg_mask, index)
    anchor, real = synthetic.anchor_index, synthetic.mask
    m = anchor.numel()
    counts = torch.zeros(n, dtype=torch.long, device=device).index_add_(0, anchor, torch.ones_like(anchor))
    width = max(m, 1)  # static bound on the widest anchor (no host sync)
    # with a mask, an anchor's padding rows go after its real ones: the real ones fill the same columns as
    # in the compact call (rows neg_mask[k] = False dropped)
    order = torch.argsort(anchor if real is None else 2 * anchor + (~real).long(), stable=True)
    a_sorted = anchor[order]
    slot = torch.arange(m, device=device) - (torch.cumsum(counts, 0) - counts)[a_sorted]
    values = distance.pairwise(embeddings[anchor], synthetic.x)  # [M]
    neg_sim = values.new_zeros(n, width).index_put((a_sorted, slot), values[order])
    neg_index = torch.full((n, width), -1, dtype=torch.long, device=device)
    neg_index = neg_index.index_put((a_sorted, slot), order)
    if real is not None:
        keep = torch.zeros(n, width, dtype=torch.bool, device=device).index_put((a_sorted, slot), real[order])
        return PairBlock(mat, pos_mask, neg_sim, keep, neg_index)
    return PairBlock(mat, pos_mask, neg_sim, neg_index >= 0, neg_index)


class BaseMetricLoss(nn.Module, ABC):
    """Base class of graphneg's metric losses: validate once, then :meth:`compute` (module docstring).

    A new loss declares its needs and implements :meth:`compute` on validated inputs, e.g. the mean
    positive-pair distance::

        class MeanPositiveDistance(BaseMetricLoss):
            accepts_synthetic = False
            supports_indices_tuple = supports_ref_emb = False

            def compute(self, embeddings, labels, indices_tuple, ref_emb, ref_labels, synthetic):
                d = LpDistance()(embeddings)
                pos, _ = pair_masks(None, labels, None)
                return MeanReducer()(d, pos)
    """

    #: the batch needs a class with >= 2 samples (pair-based losses)
    requires_positives: bool = True
    #: takes GCA-HNG / HDML synthetic negatives (neg_embeddings, neg_labels, anchor_index)
    accepts_synthetic: bool = True
    #: owns learnable proxies (the optimiser must include ``loss.parameters()``)
    has_proxies: bool = False
    #: accepts a PML miner ``indices_tuple``
    supports_indices_tuple: bool = True
    #: accepts PML's ``ref_emb`` / ``ref_labels``
    supports_ref_emb: bool = True

    @abstractmethod
    def compute(
        self,
        embeddings: Tensor,
        labels: Tensor,
        indices_tuple: Optional[Tuple[Tensor, ...]],
        ref_emb: Optional[Tensor],
        ref_labels: Optional[Tensor],
        synthetic: Optional[SyntheticNegatives],
    ) -> Tensor:
        """The loss on validated inputs (``labels`` on the embeddings' device); each loss defines it."""

    @full_precision
    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        indices_tuple: Optional[Tuple[Tensor, ...]] = None,
        ref_emb: Optional[Tensor] = None,
        ref_labels: Optional[Tensor] = None,
        *,
        neg_embeddings: Optional[Tensor] = None,
        neg_labels: Optional[Tensor] = None,
        anchor_index: Optional[Tensor] = None,
        neg_mask: Optional[Tensor] = None,
    ) -> Tensor:
        name = type(self).__name__
        check_embeddings(embeddings)
        if labels is None:
            raise ValueError(f"{name} needs labels [B] (class ids), got None")
        labels = check_labels(labels, embeddings.size(0)).to(embeddings.device)
        if isinstance(indices_tuple, Tensor):
            raise ValueError(
                f"{name}: indices_tuple (3rd positional argument) must be a PML miner tuple (a1, p, a2, n) or "
                "(a, p, n), got a Tensor; synthetic negatives are keyword-only: "
                "loss(emb, labels, neg_embeddings=..., neg_labels=..., anchor_index=...)")
        if (ref_emb is None) != (ref_labels is None):
            raise ValueError(f"{name}: pass ref_emb [R, D] and ref_labels [R] together (or neither)")
        synth = check_synthetic(embeddings, labels, neg_embeddings, neg_labels, anchor_index, neg_mask)
        if synth is not None and not self.accepts_synthetic:
            raise ValueError(f"{name} does not take synthetic negatives (neg_embeddings / neg_labels / anchor_index)")
        if synth is not None and (indices_tuple is not None or ref_emb is not None):
            raise ValueError(
                f"{name}: synthetic negatives cannot be combined with indices_tuple / ref_emb; use "
                "graphneg.losses.synthetic_indices_tuple to express them as a PML tuple instead")
        if ref_emb is not None:
            if not self.supports_ref_emb:
                raise ValueError(f"{name} does not support ref_emb / ref_labels (as in pytorch-metric-learning)")
            check_same_width(ref_emb, embeddings, "ref_emb")
            ref_labels = check_labels(ref_labels, ref_emb.size(0), "ref_labels").to(embeddings.device)
            check_multiclass(torch.cat([labels, ref_labels]))
        else:
            check_multiclass(labels)
        if indices_tuple is not None:
            if not self.supports_indices_tuple:
                raise ValueError(f"{name} does not take a miner indices_tuple; call it without one")
            r = embeddings.size(0) if ref_emb is None else ref_emb.size(0)
            indices_tuple = tuple(t.to(embeddings.device) for t in
                                  check_indices_tuple(indices_tuple, embeddings.size(0), r, name))
        return self.compute(embeddings, labels, indices_tuple, ref_emb, ref_labels, synth)
