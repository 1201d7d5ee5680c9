"""Proxy-Anchor loss (Kim et al., CVPR 2020) on the :class:`~graphneg.losses.BaseMetricLoss` contract."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from graphneg.losses.base import BaseMetricLoss, log1p_sum_exp
from graphneg.losses.distances import BaseDistance, CosineSimilarity
from graphneg.losses.reducers import masked_mean
from graphneg.validation import check_hyperparameter, check_labels

__all__ = ["ProxyAnchorLoss"]


class ProxyAnchorLoss(BaseMetricLoss):
    r"""Proxy-Anchor loss (Kim et al., CVPR 2020, eq. 4) with its own learnable proxies.

    .. math::
        L = \frac{1}{|P^+|}\sum_{p\in P^+}\log\Big(1 + \sum_{x\in X_p^+} e^{-\alpha(s(x,p)-\delta)}\Big)
          + \frac{1}{|P|}\sum_{p\in P}\log\Big(1 + \sum_{x\in X_p^-} e^{\alpha(s(x,p)+\delta)}\Big)

    with similarity :math:`s` (``distance``, default cosine), :math:`P` all ``num_classes`` proxies,
    :math:`P^+` the proxies of the classes present in the batch, :math:`X_p^{+/-}` the samples of / not
    of class ``p`` (``delta = margin``). Proxies ``[num_classes, embedding_size]`` are initialised with
    ``kaiming_normal_(mode="fan_out")`` as in the paper's code and PML. Same signature, defaults and
    values as pytorch-metric-learning's ``ProxyAnchorLoss(num_classes, embedding_size, margin=0.1,
    alpha=32)``, including a miner ``indices_tuple``: each sample's exponent gets ``w - 1`` with ``w``
    its number of occurrences in the tuple over the largest such number (PML ``convert_to_weights``).
    ``ref_emb`` is not supported (as PML). With synthetic negatives the synthetic samples join the
    batch with their own labels ``neg_labels`` (label-preserving, as HDML); ``anchor_index`` is
    validated only; padding rows (``neg_mask`` False) are left out (no proxy counts them).

    Args:
        num_classes (int): number of training classes; labels must lie in ``[0, num_classes)``.
        embedding_size (int): embedding dimension ``D``.
        margin (float): :math:`\delta` (paper 0.1, finite). alpha (float): scale :math:`\alpha` (paper 32, > 0).
    """

    requires_positives = False
    has_proxies = True
    supports_ref_emb = False

    def __init__(self, num_classes: int, embedding_size: int, margin: float = 0.1, alpha: float = 32.0, *,
                 distance: Optional[BaseDistance] = None):
        super().__init__()
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if int(embedding_size) < 1:
            raise ValueError(f"embedding_size must be >= 1, got {embedding_size}")
        name = type(self).__name__
        self.num_classes, self.embedding_size = int(num_classes), int(embedding_size)
        self.margin = check_hyperparameter(margin, "margin", minimum=float("-inf"), owner=name)
        self.alpha = check_hyperparameter(alpha, "alpha", minimum=0.0, min_inclusive=False, owner=name)
        self.distance = CosineSimilarity() if distance is None else distance
        self.proxies = nn.Parameter(torch.empty(self.num_classes, self.embedding_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.proxies, mode="fan_out")

    def compute(self, embeddings, labels, indices_tuple, ref_emb, ref_labels, synthetic) -> Tensor:
        if embeddings.size(1) != self.embedding_size:
            raise ValueError(
                f"embeddings have dimension {embeddings.size(1)} but ProxyAnchorLoss was built with "
                f"embedding_size={self.embedding_size}"
            )
        check_labels(labels, labels.numel(), "labels", num_classes=self.num_classes)
        x, y, real = embeddings, labels, None
        if synthetic is not None:
            check_labels(synthetic.labels, synthetic.labels.numel(), "neg_labels", num_classes=self.num_classes)
            x, y = torch.cat([x, synthetic.x]), torch.cat([y, synthetic.labels])
            if synthetic.mask is not None:  # padding rows (mask False) join no proxy's X_p^+ or X_p^-
                real = torch.cat([torch.ones_like(labels, dtype=torch.bool), synthetic.mask])
        mat = self.distance(self.proxies.to(dtype=x.dtype), x)  # [C, N]
        member = torch.arange(self.num_classes, device=y.device)[:, None] == y[None, :]  # [C, N]
        other = ~member
        if real is not None:
            member, other = member & real[None, :], other & real[None, :]
        shift = x.new_zeros(1, x.size(0))
        if indices_tuple is not None:  # PML convert_to_weights, then weights - 1
            counts = torch.bincount(torch.cat(indices_tuple), minlength=x.size(0)).to(x.dtype)
            w = torch.where(counts.sum() > 0, counts / counts.max().clamp(min=1), torch.ones_like(counts))
            shift = (w - 1)[None, :]
        pos = log1p_sum_exp(self.alpha * self.distance.margin(mat, self.margin) + shift, member)
        neg = log1p_sum_exp(self.alpha * self.distance.margin(-self.margin, mat) + shift, other)
        return masked_mean(pos, member.any(dim=1)) + neg.mean()

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, embedding_size={self.embedding_size}, "
                f"margin={self.margin}, alpha={self.alpha}")
