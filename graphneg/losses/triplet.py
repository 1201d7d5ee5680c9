"""Triplet margin loss with pytorch-metric-learning's contract, plus in-loss batch-hard / semi-hard mining."""
from __future__ import annotations

import warnings
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from graphneg.losses.base import NO_POSITIVE, BaseMetricLoss, convert_to_triplets, pair_block
from graphneg.losses.distances import BaseDistance, LpDistance
from graphneg.losses.reducers import AvgNonZeroReducer, BaseReducer, MeanReducer
from graphneg.validation import check_hyperparameter, value_checks_enabled

__all__ = ["TripletMarginLoss"]

_NO_TRIPLET = ("no triplet can be formed: no anchor has both a positive and a negative "
               "(with synthetic negatives, give some anchor that has a positive at least one)")


class TripletMarginLoss(BaseMetricLoss):
    r"""Triplet margin loss, pytorch-metric-learning's ``TripletMarginLoss`` contract.

    :math:`\ell(a,p,n) = [\,m(d_{ap}, d_{an}) + \text{margin}\,]_+` (``softplus`` with ``smooth_loss``)
    where :math:`m` is the distance's :meth:`~graphneg.losses.distances.BaseDistance.margin`
    (:math:`d_{ap} - d_{an}` for a distance): the hinge triplet loss of Schroff et al. (CVPR 2015) with
    non-squared distances. Defaults as PML: ``margin=0.05``, all triplets
    (``triplets_per_anchor="all"``), ``swap=False`` (``swap=True``: :math:`d_{an}` replaced by the
    closer of :math:`d_{an}, d_{pn}`, Balntas et al. 2016), Euclidean distance of L2-normalised
    embeddings (``LpDistance()``), mean over the triplets with a positive loss (``AvgNonZeroReducer()``).
    ``triplets_per_anchor=k`` samples ``k`` (positive, negative) pairs per anchor uniformly with
    replacement, as PML's ``get_random_triplet_indices``. A miner ``indices_tuple`` (triplets, or pairs
    converted as PML ``convert_to_triplets``) replaces the selection.

    In-loss mining (graphneg's former default, kept as an explicit option; PML users would pass a miner):

    * ``mining="hard"``: batch-hard (Hermans et al. 2017, "In Defense of the Triplet Loss"): per
      anchor, its hardest (farthest) positive and hardest (closest) negative; one triplet per anchor.
      The former ``TripletMarginLoss()`` is ``TripletMarginLoss(0.2, mining="hard", reducer=MeanReducer())``.
    * ``mining="semihard"``: all triplets with :math:`0 < d_{an} - d_{ap} \le \text{margin}`
      (PML ``TripletMarginMiner(type_of_triplets="semihard")``); 0 if none.

    With synthetic negatives, the negatives of anchor ``a`` are its synthetic negatives (padding rows,
    ``neg_mask`` False, form no triplet; with ``triplets_per_anchor=k`` they get zero sampling weight).
    Memory of the all-triplets form is ``O(B^2 K)``.

    Args:
        margin (float): finite, >= 0. swap (bool), smooth_loss (bool), triplets_per_anchor ("all" or int):
            as PML. mining (None, "hard", "semihard"): in-loss mining. distance, reducer: objects from
            :mod:`graphneg.losses.distances` / :mod:`graphneg.losses.reducers`.
        reduction: deprecated (``"mean"`` = ``reducer=MeanReducer()``, ``"nonzero"`` = ``AvgNonZeroReducer()``).
    """

    MINING = (None, "hard", "semihard")

    def __init__(self, margin: float = 0.05, swap: bool = False, smooth_loss: bool = False,
                 triplets_per_anchor: Union[str, int] = "all", *, mining: Optional[str] = None,
                 distance: Optional[BaseDistance] = None, reducer: Optional[BaseReducer] = None,
                 reduction: Optional[str] = None):
        super().__init__()
        self.margin = check_hyperparameter(margin, "margin", minimum=0.0, owner=type(self).__name__)
        if mining == "all":
            mining = None
        if mining not in self.MINING:
            raise ValueError(f"TripletMarginLoss: mining must be one of {self.MINING}, got {mining!r}")
        if triplets_per_anchor != "all" and (isinstance(triplets_per_anchor, bool)
                                             or not isinstance(triplets_per_anchor, int) or triplets_per_anchor < 1):
            raise ValueError(f"TripletMarginLoss: triplets_per_anchor must be 'all' or an int >= 1, "
                             f"got {triplets_per_anchor!r}")
        if mining is not None and triplets_per_anchor != "all":
            raise ValueError("TripletMarginLoss: mining= and triplets_per_anchor=int both select triplets; use one")
        if reduction is not None:
            if reduction not in ("mean", "nonzero"):
                raise ValueError(f"TripletMarginLoss: reduction must be 'mean' or 'nonzero', got {reduction!r}")
            if reducer is not None:
                raise ValueError("TripletMarginLoss: pass reducer= or the deprecated reduction=, not both")
            warnings.warn("TripletMarginLoss(reduction=...) is deprecated; use reducer=MeanReducer() ('mean') "
                          "or reducer=AvgNonZeroReducer() ('nonzero', the default)", DeprecationWarning, stacklevel=2)
            reducer = MeanReducer() if reduction == "mean" else AvgNonZeroReducer()
        self.swap, self.smooth_loss = bool(swap), bool(smooth_loss)
        self.triplets_per_anchor, self.mining = triplets_per_anchor, mining
        self.distance = LpDistance() if distance is None else distance
        self.reducer = AvgNonZeroReducer() if reducer is None else reducer

    def _violation(self, ap: Tensor, an: Tensor) -> Tensor:
        v = self.distance.margin(ap, an) + self.margin
        return F.softplus(v) if self.smooth_loss else F.relu(v)

    def compute(self, embeddings, labels, indices_tuple, ref_emb, ref_labels, synthetic) -> Tensor:
        if indices_tuple is not None:
            if self.mining is not None:
                raise ValueError("TripletMarginLoss: an indices_tuple and mining= both select triplets; use one")
            a, p, n = convert_to_triplets(indices_tuple)
            mat = self.distance(embeddings, ref_emb)
            an = mat[a, n]
            if self.swap:
                an = self.distance.smallest_dist(an, mat[p, n])  # PML indexes mat[p, n] the same way
            return self.reducer(self._violation(mat[a, p], an))
        if self.swap and (synthetic is not None or ref_emb is not None):
            raise ValueError("TripletMarginLoss: swap=True needs positive-negative distances inside the batch; "
                             "it is not supported with synthetic negatives or ref_emb")
        b = pair_block(embeddings, labels, synthetic, self.distance, ref_emb, ref_labels)
        has_pos, has_neg = b.pos_mask.any(dim=1), b.neg_mask.any(dim=1)
        if value_checks_enabled() and not bool((has_pos & has_neg).any()):
            raise ValueError(_NO_TRIPLET if bool(has_pos.any()) else NO_POSITIVE)
        if self.mining == "hard":
            inv = self.distance.is_inverted  # farthest positive / closest negative
            far = b.pos_sim.masked_fill(~b.pos_mask, float("inf") if inv else float("-inf"))
            near = b.neg_sim.masked_fill(~b.neg_mask, float("-inf") if inv else float("inf"))
            keep = has_pos & has_neg
            ap = torch.where(keep, far.amin(1) if inv else far.amax(1), torch.zeros_like(keep, dtype=far.dtype))
            an = torch.where(keep, near.amax(1) if inv else near.amin(1), torch.zeros_like(ap))
            return self.reducer(self._violation(ap, an), keep)
        if self.triplets_per_anchor != "all":
            return self._sampled(b, has_pos & has_neg)
        if synthetic is not None:
            # all (positive, synthetic negative) triplets as [M, R]: negative k against the positives of its
            # anchor. The same triplets as the [B, R, K] block, in O(M R) rather than O(B R M) memory
            # (pair_block's static width M, issue 21); the values are pair_block's (distance.pairwise)
            a = synthetic.anchor_index
            keep = b.pos_mask.index_select(0, a)  # [M, R]
            if synthetic.mask is not None:  # padding rows form no triplet
                keep = keep & synthetic.mask[:, None]
            ap = b.pos_sim.index_select(0, a)
            an = self.distance.pairwise(embeddings.index_select(0, a), synthetic.x)[:, None]
        else:
            keep = b.pos_mask[:, :, None] & b.neg_mask[:, None, :]  # [B, R, K]
            ap, an = b.pos_sim[:, :, None], b.neg_sim[:, None, :]
        if self.swap:  # d(p, n) for p, n in the batch (no synthetic negatives here)
            an = self.distance.smallest_dist(an.expand_as(keep), b.pos_sim[None, :, :].expand_as(keep))
        losses = self._violation(ap, an)
        if self.mining == "semihard":
            gap = -self.distance.margin(ap, an).detach()
            keep = keep & (gap > 0) & (gap <= self.margin)
        return self.reducer(losses, keep)

    def _sampled(self, b, valid: Tensor) -> Tensor:
        """``k`` random (positive, negative) pairs per anchor, uniform with replacement (PML's sampler)."""
        k = int(self.triplets_per_anchor)
        ones = torch.ones_like(b.pos_mask[:, :1], dtype=b.pos_sim.dtype)
        pw = torch.where(valid[:, None], b.pos_mask.to(b.pos_sim.dtype), ones.expand_as(b.pos_sim))
        nw = torch.where(valid[:, None], b.neg_mask.to(b.neg_sim.dtype), ones.expand_as(b.neg_sim))
        p = torch.multinomial(pw, k, replacement=True)  # [B, k]
        n = torch.multinomial(nw, k, replacement=True)
        ap, an = b.pos_sim.gather(1, p), b.neg_sim.gather(1, n)
        if self.swap:
            an = self.distance.smallest_dist(an, b.pos_sim[p, b.neg_index.gather(1, n)])
        return self.reducer(self._violation(ap, an), valid[:, None].expand(-1, k))

    def extra_repr(self) -> str:
        return (f"margin={self.margin}, swap={self.swap}, smooth_loss={self.smooth_loss}, "
                f"triplets_per_anchor={self.triplets_per_anchor!r}, mining={self.mining!r}")
