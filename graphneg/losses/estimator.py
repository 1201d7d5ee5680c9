r"""The one estimator of the contrastive losses: HCL's importance-weighted, debiased InfoNCE.

:func:`hcl_estimator` (Robinson et al., ICLR 2021, Sec. 3; with uniform weights the debiased
estimator of Chuang et al., NeurIPS 2020; without debiasing and clamp InfoNCE) is configured by every
loss of :mod:`graphneg.losses.contrastive`; :func:`hcl_importance` is HCL's importance weight.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["EstimatorTerms", "hcl_estimator", "hcl_importance"]


class EstimatorTerms(NamedTuple):
    """Intermediates of :func:`hcl_estimator`, handed to an importance callable so it can reuse them.

    All ``[N, C]`` tensors are zero (``neg``) or ``-inf`` (``masked``) outside the negative mask.
    """

    logits: Tensor  # [N, C] s / t
    masked: Tensor  # [N, C] logits, -inf outside neg_mask
    pos_logit: Tensor  # [N]
    neg_max: Tensor  # [N] largest negative logit (detached)
    shift: Tensor  # [N] max(neg_max, pos_logit) (detached)
    neg: Tensor  # [N, C] exp(logit - shift) on negatives, 0 elsewhere
    pos: Tensor  # [N] exp(pos_logit - shift)
    num_neg: Tensor  # [N] number of negatives


def hcl_estimator(
    logits: Tensor,
    pos_index: Tensor,
    neg_mask: Tensor,
    temperature: float,
    tau_plus: float = 0.0,
    importance: Union[None, Tensor, Callable[[EstimatorTerms], Tensor]] = None,
    clamp: bool = True,
    num_neg: Optional[Tensor] = None,
) -> Tensor:
    r"""Per-anchor HCL/DCL estimator of the contrastive loss (the shared code path of all losses).

    .. math::
        \ell_i = -\log\frac{\mathrm{pos}_i}{\mathrm{pos}_i + N^g_i},\qquad
        N^g_i = \max\Big(\frac{N_i \frac{\sum_j w_{ij} \mathrm{neg}_{ij}}{\sum_j w_{ij}}
                 - \tau^+ N_i\, \mathrm{pos}_i}{1 - \tau^+},\; N_i\, e^{-1/t}\Big)

    Source: Robinson et al., "Contrastive Learning with Hard Negative Samples", ICLR 2021, Sec. 3
    (the hard-sampling objective and its importance-sampling estimate), exactly as the reference code
    joshr17/HCL ``image/main.py`` ``criterion`` computes it: ``imp = exp(beta * s / t)``,
    ``reweight_neg = sum(imp * neg) / mean(imp)``, ``Ng = (-tau_plus * N * pos + reweight_neg) /
    (1 - tau_plus)`` clamped below by ``N * exp(-1/t)``. With uniform ``w`` it is the debiased
    estimator of Chuang et al., "Debiased Contrastive Learning", NeurIPS 2020 (same clamp in their
    code chingyaoc/DCL); with ``tau_plus=0``, uniform ``w`` and no clamp it is InfoNCE (Oord et al.
    2018; NT-Xent of SimCLR, Chen et al. 2020), computed as ``cross_entropy`` (log-sum-exp) of the
    masked logits. ``N`` is generalised
    to the per-anchor count ``N_i`` of negatives (labels can exclude some); ``mean(imp)`` is
    ``sum(imp) / N_i`` accordingly.

    All exponentials are taken relative to ``shift_i = max(pos logit, largest negative logit)``
    (detached); the loss is invariant to it (``pos``, ``neg`` and the clamp bound scale alike), so
    small temperatures do not overflow.

    Args:
        logits: ``s / t``, ``[N, C]``.
        pos_index: ``[N]`` positive column per anchor.
        neg_mask: ``[N, C]`` bool negatives (every row needs at least one).
        temperature: ``t`` (for the clamp ``N_i e^{-1/t}``).
        tau_plus: class prior ``tau^+`` in ``[0, 1)``.
        importance: ``None`` (uniform), an ``[N, C]`` tensor of non-negative weights that is **zero
            outside** ``neg_mask`` with a positive sum on every row, or a callable mapping the
            :class:`EstimatorTerms` to such a tensor (so it can reuse ``masked``/``neg``). Any
            per-anchor constant factor cancels. The callable may instead return a pair
            ``(weights, row_sums)`` with the ``[N]`` sums of the weights over each row's negatives;
            entries outside ``neg_mask`` are then only required to be finite (``neg`` is 0 there).
        clamp: apply the lower bound ``N_i e^{-1/t}``.
        num_neg: optional ``[N]`` counts of negatives (computed from ``neg_mask`` otherwise).

    Returns:
        ``[N]`` per-anchor losses.
    """
    if importance is None and tau_plus == 0 and not clamp:
        cand_mask = neg_mask.scatter(1, pos_index[:, None], True)
        masked = logits.masked_fill(~cand_mask, float("-inf"))
        return F.cross_entropy(masked, pos_index, reduction="none")  # logsumexp - positive logit
    pos_logit = logits.gather(1, pos_index[:, None]).squeeze(1)
    if num_neg is None:
        num_neg = neg_mask.sum(dim=1).to(logits.dtype)
    masked = logits.masked_fill(~neg_mask, float("-inf"))
    neg_max = masked.detach().amax(dim=1)
    shift = torch.maximum(neg_max, pos_logit.detach())
    neg = torch.exp(masked - shift[:, None])  # 0 outside the mask
    pos = torch.exp(pos_logit - shift)
    if importance is None:
        reweight = neg.sum(dim=1)
    else:
        if callable(importance):
            terms = EstimatorTerms(logits, masked, pos_logit, neg_max, shift, neg, pos, num_neg)
            importance = importance(terms)
        if isinstance(importance, tuple):  # (weights, their row sums over the negatives)
            importance, row_sum = importance
        else:
            row_sum = importance.sum(dim=1)
        reweight = num_neg * (importance * neg).sum(dim=1) / row_sum
    ng = reweight
    if tau_plus != 0:
        ng = (reweight - tau_plus * num_neg * pos) / (1.0 - tau_plus)
    if clamp:
        ng = torch.clamp(ng, min=num_neg * torch.exp(-1.0 / float(temperature) - shift))
    total = (pos + ng).clamp_min(torch.finfo(logits.dtype).tiny)
    return torch.log(total) - (pos_logit - shift)


def hcl_importance(terms: EstimatorTerms, beta: float) -> Tensor:
    r"""HCL importance :math:`e^{\beta (s_{ij}/t - m_i)}` from the estimator's masked logits.

    :math:`m_i` is the anchor's largest negative logit (a per-anchor constant, cancels). Not
    detached, as in joshr17/HCL (``imp`` is computed from ``neg`` with its graph). ``beta = 0`` gives
    the uniform weight (the mask).
    """
    if beta == 0:
        return torch.isfinite(terms.masked).to(terms.masked.dtype)
    rel = terms.masked - terms.neg_max[:, None]
    if beta != 1:
        rel = rel * beta
    return torch.exp(rel)
