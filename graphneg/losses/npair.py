"""Multi-class N-pair loss (Sohn 2016) with the HDML / GCA-HNG ``l2`` term, official GCA-HNG forms."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from graphneg.losses.base import NO_POSITIVE, BaseMetricLoss, pair_block, segment_log_sum_exp
from graphneg.losses.distances import BaseDistance, DotProductSimilarity
from graphneg.losses.reducers import masked_mean
from graphneg.ops.labels import next_positive_index, rank_in_class
from graphneg.validation import check_hyperparameter, value_checks_enabled

__all__ = ["NPairLoss"]


class NPairLoss(BaseMetricLoss):
    r"""Multi-class N-pair loss (Sohn, NeurIPS 2016, Sec. 3.2) with the HDML / GCA-HNG ``l2`` term.

    For every anchor :math:`a` with a positive :math:`p(a)` (the next same-class sample in batch order,
    cyclic: :func:`graphneg.ops.labels.next_positive_index`) and negatives :math:`\mathcal N_a`, with
    similarity :math:`s` (default unnormalised inner products, ``DotProductSimilarity(normalize_embeddings=False)``,
    as the official code; a distance object that is not a similarity enters as :math:`s = -d`):

    .. math::
        \ell_a = -\log \frac{e^{s(z_a, z_{p(a)})}}
                 {e^{s(z_a, z_{p(a)})} + \sum_{n\in\mathcal N_a} e^{s(z_a, z_n)}},
        \qquad
        L = \operatorname{mean}_a \ell_a + 0.25\,\lambda_{l2}\, R .

    * Real pairs (``anchors="all"``, default): :math:`\mathcal N_a` = all other-class samples of the
      batch and :math:`R = \operatorname{mean}_a (\|z_a\|^2 + \|z_{p(a)}\|^2)`.
    * Synthetic negatives: :math:`\mathcal N_a` = the synthetic negatives of :math:`a` and
      :math:`R = \operatorname{mean}_a \|z_a\|^2 + \operatorname{mean}_{t \in T}\|t\|^2` with
      :math:`T` the "tile" :math:`\{z_{p(a)}\} \cup \{\tilde z_k\}` (positives and synthetic negatives).

    Relation to the official code (``scripts/loss.py`` ``NpairLoss``):

    * Synthetic branch (``equal_shape=False``): reproduced exactly, in both ``anchors`` modes. The
      official code arranges the batch as ``m`` chunks of one sample per class, pairs chunk ``j`` with
      chunk ``j+1`` (cyclic), uses the ``C - 1`` synthetic negatives of each anchor with the positive on
      the diagonal of the ``C x C`` tile, ``CrossEntropy`` over that row, ``l2 = mean||anchor||^2 +
      mean||tile||^2`` and averages ``ce + 0.25 l2_reg l2`` over chunks; with equal chunks this equals
      the formula above. Officially ``J_syn = mining_loss(z~, t, False, bs, embedding_z=z)``
      (``scripts/models.py`` ``GCA_HNG.forward``).
    * Real branch (``equal_shape=True``, ``J_m = loss_fn(z, t)``, which also sets the hardness
      ``exp(-alpha / J_m)``): ``anchors="official"`` computes it exactly. Let :math:`r_j` be the rank of
      sample :math:`j` within its class in batch order (:func:`graphneg.ops.labels.rank_in_class`; the
      chunk index in the official layout), :math:`a(j)` the rank-0 sample of :math:`j`'s class (the
      official anchor, chunk 0) and :math:`C` the number of classes:

      .. math::
          L = \operatorname{mean}_{j:\,r_j \ge 1}\Big[-s(z_{a(j)}, z_j)
              + \log\!\sum_{k:\,r_k = r_j} e^{s(z_{a(j)}, z_k)}\Big]
              + 0.25\,\lambda_{l2}\,\frac{1}{C}\sum_{j}\|z_j\|^2 .

      With ``m`` samples of each class this is the official ``sum_{r=1}^{m-1} CE(chunk_0 chunk_r^T) /
      (m - 1) + 0.25 l2_reg sum_all ||z||^2 / C`` for any batch order; with unequal class counts it
      averages over the (anchor, rank-``r`` sample) pairs that exist. ``anchors="all"`` generalises it:
      every sample is an anchor, its single positive the next same-class sample, its negatives all
      other-class samples, other same-class samples left out of the logits. For ``m = 2`` the ``l2``
      term is identical; the cross-entropy sees all ``m (C-1)`` other-class samples instead of the
      ``C-1`` of one chunk, which raises ``J_m`` (and so the hardness ``exp(-alpha / J_m)`` of GCA-HNG):
      at initialisation ``log(m (C-1) + 1)`` instead of ``log C`` (C=27, m=3: 4.37 vs 3.30 nats).
    * Anchors without a positive are skipped; an anchor without synthetic negatives contributes 0.
      Padding rows of synthetic negatives (``neg_mask`` False) are in neither the logits nor the tile.

    Versus pytorch-metric-learning's ``NPairsLoss`` (a different name on purpose): PML takes one
    (anchor, positive) pair per class, the first in batch order, normalises the embeddings by default
    (``DotProductSimilarity()``) and has no ``l2`` term. ``NPairLoss(l2_reg=0, anchors="official",
    distance=DotProductSimilarity())`` equals it on batches with two samples per class.
    No ``indices_tuple`` / ``ref_emb`` (PML's ``NPairsLoss`` takes no ``ref_emb`` either).

    Args:
        l2_reg (float): weight :math:`\lambda_{l2}` of the squared-norm penalty (official 3e-3; >= 0).
        anchors (str): ``"all"`` (default) or ``"official"`` (see above).
        distance: a :mod:`graphneg.losses.distances` object (default unnormalised dot products).
    """

    ANCHORS = ("all", "official")
    supports_indices_tuple = False
    supports_ref_emb = False

    def __init__(self, l2_reg: float = 3e-3, anchors: str = "all", *, distance: Optional[BaseDistance] = None):
        super().__init__()
        self.l2_reg = check_hyperparameter(l2_reg, "l2_reg", minimum=0.0, owner=type(self).__name__)
        if anchors not in self.ANCHORS:
            raise ValueError(f"NPairLoss: anchors must be one of {self.ANCHORS}, got {anchors!r}")
        self.anchors = anchors
        self.distance = DotProductSimilarity(normalize_embeddings=False) if distance is None else distance

    def _sim(self, values: Tensor) -> Tensor:
        return values if self.distance.is_inverted else -values

    def compute(self, embeddings, labels, indices_tuple, ref_emb, ref_labels, synthetic) -> Tensor:
        if synthetic is None and self.anchors == "official":
            return self._official_real(embeddings, labels)
        partner = next_positive_index(labels)
        valid = partner != torch.arange(partner.numel(), device=partner.device)
        if value_checks_enabled() and not bool(valid.any()):
            raise ValueError(NO_POSITIVE)
        if synthetic is None:
            block = pair_block(embeddings, labels, synthetic, self.distance)
            s_pos = self._sim(block.pos_sim).gather(1, partner[:, None])  # [B, 1]
            neg = self._sim(block.neg_sim).masked_fill(~block.neg_mask, float("-inf"))
            lse = torch.logsumexp(torch.cat([s_pos, neg], dim=1), dim=1)
        else:
            # flat [M] layout (anchor_index[k] = row): the padded block's logsumexp without the [B, M] block
            # or a host sync (issue 21); values as pair_block's (distance.pairwise)
            a = synthetic.anchor_index
            s_pos = self._sim(self.distance.pairwise(embeddings, embeddings.index_select(0, partner)))[:, None]
            neg = self._sim(self.distance.pairwise(embeddings.index_select(0, a), synthetic.x))
            if synthetic.mask is not None:  # padding rows: no logit (exp(-inf) = 0, zero gradient)
                neg = neg.masked_fill(~synthetic.mask, float("-inf"))
            lse = segment_log_sum_exp(neg, a, s_pos[:, 0])
        ce = masked_mean(lse - s_pos[:, 0], valid)

        sq = embeddings.pow(2).sum(dim=1)
        if synthetic is None:
            reg = masked_mean(sq + sq[partner], valid)
        else:
            keep = valid[synthetic.anchor_index]
            if synthetic.mask is not None:  # padding rows are not in the tile
                keep = keep & synthetic.mask
            tile = torch.where(valid, sq[partner], torch.zeros_like(sq)).sum() + torch.where(
                keep, synthetic.x.pow(2).sum(dim=1), sq.new_zeros(())
            ).sum()
            reg = masked_mean(sq, valid) + tile / (valid.sum() + keep.sum()).to(sq.dtype)
        return ce + 0.25 * self.l2_reg * reg

    def _official_real(self, z: Tensor, labels: Tensor) -> Tensor:
        """The official real-pair branch (``anchors="official"``); ``O(B^2)``, no host sync."""
        rank = rank_in_class(labels)
        first = rank == 0
        same = labels[:, None] == labels[None, :]
        anchor = (same & first[None, :]).to(torch.uint8).argmax(dim=1)  # a(j): rank-0 sample of j's class
        keep = ~first
        if value_checks_enabled() and not bool(keep.any()):
            raise ValueError(NO_POSITIVE)
        sim = self._sim(self.distance(z[anchor], z))  # row j: s(z_a(j), z_k)
        chunk = rank[:, None] == rank[None, :]  # candidates of row j: the samples of j's rank
        lse = torch.logsumexp(sim.masked_fill(~chunk, float("-inf")), dim=1)
        ce = masked_mean(lse - sim.diagonal(), keep)
        reg = z.pow(2).sum() / first.sum().to(z.dtype)
        return ce + 0.25 * self.l2_reg * reg

    def extra_repr(self) -> str:
        return f"l2_reg={self.l2_reg}, anchors={self.anchors!r}"
