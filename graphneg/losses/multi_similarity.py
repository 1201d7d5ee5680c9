"""Multi-similarity loss (Wang et al., CVPR 2019) on the :class:`~graphneg.losses.BaseMetricLoss` contract."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from graphneg.losses.base import (
    NO_POSITIVE, BaseMetricLoss, log1p_sum_exp, pair_block, pair_masks, segment_log_sum_exp,
)
from graphneg.losses.distances import BaseDistance, CosineSimilarity
from graphneg.losses.reducers import BaseReducer, MeanReducer
from graphneg.validation import check_hyperparameter, value_checks_enabled

__all__ = ["MultiSimilarityLoss"]


class MultiSimilarityLoss(BaseMetricLoss):
    r"""Multi-similarity loss with MS pair mining (Wang et al., CVPR 2019, Sec. 4).

    Similarities :math:`S_{ij}` (``distance``, default :class:`CosineSimilarity`). Loss (Sec. 4.2; PML
    ``MultiSimilarityLoss._compute_loss``), per anchor :math:`i` with kept positives
    :math:`\hat{\mathcal P}_i` and negatives :math:`\hat{\mathcal N}_i`:

    .. math::
        \ell_i = \frac1\alpha \log\big(1 + \sum_{p\in\hat{\mathcal P}_i} e^{-\alpha (S_{ip}-\lambda)}\big)
               + \frac1\beta \log\big(1 + \sum_{n\in\hat{\mathcal N}_i} e^{\beta (S_{in}-\lambda)}\big),
        \qquad L = \operatorname{reducer}(\ell) = \operatorname{mean}_i \ell_i

    over all ``B`` anchors (PML's ``MeanReducer``; an anchor with no kept pair contributes 0).
    Mining (Sec. 4.1; PML ``MultiSimilarityMiner(epsilon)``), with :math:`\mathcal P_i, \mathcal N_i`
    all positives / negatives: :math:`\hat{\mathcal N}_i = \{n : S_{in} + \epsilon > \min_{p} S_{ip}\}`,
    :math:`\hat{\mathcal P}_i = \{p : S_{ip} - \epsilon < \max_{n} S_{in}\}`.

    Contract vs pytorch-metric-learning: ``alpha, beta, base`` are PML's positional arguments and
    defaults, and the default (``mining=False``) is PML's: ``MultiSimilarityLoss()(z, y)`` equals PML's
    ``MultiSimilarityLoss()(z, y)`` (all pairs). ``mining=True`` (the paper's loss with its pair mining,
    what graphneg's MS configs use) applies the MS miner inside the loss and equals PML's
    ``MultiSimilarityLoss()(z, y, MultiSimilarityMiner(0.1)(z, y))``. With an ``indices_tuple`` the tuple's pairs are used
    as they are (no further mining), as PML. With synthetic negatives, :math:`\mathcal N_i` is the set
    of anchor ``i``'s synthetic negatives (in mining and in the loss).

    Args:
        alpha (float): positive scale (> 0). beta (float): negative scale (> 0).
        base (float): :math:`\lambda`. epsilon (float): mining margin (>= 0).
        mining (bool): MS mining inside the loss (see above; default ``False`` as PML).
        distance: a :mod:`graphneg.losses.distances` object (default ``CosineSimilarity()``).
        reducer: a :mod:`graphneg.losses.reducers` object (default ``MeanReducer()``).
    """

    def __init__(self, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5, *, epsilon: float = 0.1,
                 mining: bool = False, distance: Optional[BaseDistance] = None,
                 reducer: Optional[BaseReducer] = None):
        super().__init__()
        name = type(self).__name__
        self.alpha = check_hyperparameter(alpha, "alpha", minimum=0.0, min_inclusive=False, owner=name)
        self.beta = check_hyperparameter(beta, "beta", minimum=0.0, min_inclusive=False, owner=name)
        self.base = check_hyperparameter(base, "base", minimum=float("-inf"), owner=name)
        self.epsilon = check_hyperparameter(epsilon, "epsilon", minimum=0.0, owner=name)
        self.mining = bool(mining)
        self.distance = CosineSimilarity() if distance is None else distance
        self.reducer = MeanReducer() if reducer is None else reducer

    def compute(self, embeddings, labels, indices_tuple, ref_emb, ref_labels, synthetic) -> Tensor:
        if synthetic is not None:
            return self._compute_synthetic(embeddings, labels, synthetic)
        b = pair_block(embeddings, labels, synthetic, self.distance, ref_emb, ref_labels, indices_tuple)
        if indices_tuple is None and value_checks_enabled() and not bool(b.pos_mask.any()):
            raise ValueError(NO_POSITIVE)
        pos_keep, neg_keep = b.pos_mask, b.neg_mask
        if self.mining and indices_tuple is None:
            sign = 1.0 if self.distance.is_inverted else -1.0  # mine on "similarity" = sign * value
            sp, sn = sign * b.pos_sim.detach(), sign * b.neg_sim.detach()
            min_pos = sp.masked_fill(~b.pos_mask, float("inf")).amin(dim=1, keepdim=True)
            max_neg = sn.masked_fill(~b.neg_mask, float("-inf")).amax(dim=1, keepdim=True)
            neg_keep = neg_keep & (sn + self.epsilon > min_pos)
            pos_keep = pos_keep & (sp - self.epsilon < max_neg)
        pos_exp = self.distance.margin(b.pos_sim, self.base)
        neg_exp = self.distance.margin(self.base, b.neg_sim)
        pos_term = log1p_sum_exp(self.alpha * pos_exp, pos_keep) / self.alpha
        neg_term = log1p_sum_exp(self.beta * neg_exp, neg_keep) / self.beta
        return self.reducer(pos_term + neg_term)

    def _compute_synthetic(self, embeddings, labels, synthetic) -> Tensor:
        """:meth:`compute` with synthetic negatives on the flat ``[M]`` layout (anchor ``anchor_index[k]``):
        the same terms as the padded :func:`pair_block` block, in ``O(B^2 + M)`` memory and without a
        host sync (issue 21). Padding rows (``synthetic.mask`` False) are left out of the mining maximum
        and of the negative term (``-inf`` logits), so the loss is that of the compact rows."""
        mat = self.distance(embeddings)
        pos_mask, _ = pair_masks(None, labels, None)
        if value_checks_enabled() and not bool(pos_mask.any()):
            raise ValueError(NO_POSITIVE)
        a, real = synthetic.anchor_index, synthetic.mask  # real: None, or False on padding rows
        neg = self.distance.pairwise(embeddings.index_select(0, a), synthetic.x)  # [M], as pair_block
        pos_keep = pos_mask
        neg_keep = torch.ones_like(neg, dtype=torch.bool) if real is None else real
        if self.mining:
            sign = 1.0 if self.distance.is_inverted else -1.0
            sp, sn = sign * mat.detach(), sign * neg.detach()
            min_pos = sp.masked_fill(~pos_mask, float("inf")).amin(dim=1)
            max_neg = sn.new_full((embeddings.size(0),), float("-inf")).scatter_reduce(
                0, a, sn if real is None else sn.masked_fill(~real, float("-inf")), reduce="amax",
                include_self=True)
            neg_keep = neg_keep & (sn + self.epsilon > min_pos.index_select(0, a))
            pos_keep = pos_keep & (sp - self.epsilon < max_neg[:, None])
        pos_term = log1p_sum_exp(self.alpha * self.distance.margin(mat, self.base), pos_keep) / self.alpha
        neg_x = (self.beta * self.distance.margin(self.base, neg)).masked_fill(~neg_keep, float("-inf"))
        neg_term = segment_log_sum_exp(neg_x, a, mat.new_zeros(embeddings.size(0))) / self.beta
        return self.reducer(pos_term + neg_term)

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, beta={self.beta}, base={self.base}, epsilon={self.epsilon}, "
                f"mining={self.mining}")
