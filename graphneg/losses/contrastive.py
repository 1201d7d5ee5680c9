r"""Contrastive losses on two views: InfoNCE (NT-Xent), DCL, HCL and UnReMix, one code path.

Setting. Two views ``z1, z2`` ``[B, D]`` of the same ``B`` samples are L2-normalised and stacked into
``N = 2B`` anchors ``z = [z1; z2]``. Anchor ``i``'s positive is its other view (column
``pos(i) = (i + B) mod 2B``) and its negatives are the other ``2B - 2`` embeddings; with ``labels``
the ones of the same class are excluded (so the number of negatives ``N_i`` varies per anchor), and
optional extra negatives ``neg`` ``[M, D]`` (e.g. gathered from other processes) are appended to every
anchor's candidate set (excluded by ``neg_labels`` when labels are given). With ``s_ij`` the cosine
similarity and ``t`` the temperature:

* :func:`contrastive_pairs` builds the ``[2B, 2B + M]`` cosine matrix, the positive index and the
  boolean negative mask (mask-based, so a variable number of negatives per anchor works);
* :func:`hcl_estimator` is the single estimator all four losses configure: per anchor,

  .. math::
      \mathrm{pos}_i = e^{s_{i,pos(i)}/t},\quad
      \mathrm{neg}_{ij} = e^{s_{ij}/t},\quad
      R_i = N_i\,\frac{\sum_j w_{ij}\,\mathrm{neg}_{ij}}{\sum_j w_{ij}},\quad
      N^g_i = \max\Big(\frac{R_i - \tau^+ N_i\,\mathrm{pos}_i}{1 - \tau^+},\; N_i e^{-1/t}\Big),\quad
      \ell_i = -\log\frac{\mathrm{pos}_i}{\mathrm{pos}_i + N^g_i}

  with an importance matrix ``w`` over the negatives. Sums run over ``neg(i)``.

================================  =============================  ============  =====
loss                              importance ``w_ij``            ``tau_plus``  clamp
================================  =============================  ============  =====
:class:`InfoNCELoss`              1                              0             no
:class:`DebiasedContrastiveLoss`  1                              ``tau_plus``  yes
:class:`HCLLoss`                  ``exp(beta * s_ij / t)``       ``tau_plus``  yes
:class:`UnReMixLoss`              mixed UnReMix scores (mean 1)  ``tau_plus``  yes
================================  =============================  ============  =====

Numerics: every exponential is taken relative to a per-anchor shift (the largest candidate logit,
detached); the loss is invariant to it, so nothing overflows for small temperatures. InfoNCE uses
``cross_entropy`` (log-sum-exp) directly. The loss is the mean of :math:`\ell_i` over the ``2B`` anchors.
Under autocast the losses run in float32 (:func:`graphneg.precision.full_precision`).

Multi-GPU: with ``gather_distributed=True`` (every loss) and a ``torch.distributed`` process group
(Lightning DDP), the candidates are all processes' views and extras (:func:`contrastive_pairs`), the
anchors stay local; see :meth:`_TwoViewContrastiveLoss.forward` for the reduction.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Dict, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from graphneg.distributed import gather, is_distributed
from graphneg.validation import check_embeddings, check_labels
from graphneg.precision import full_precision
from graphneg.validation import value_checks_enabled
from graphneg.sampling.unremix import (
    REPRESENTATIVENESS,
    UNCERTAINTY,
    _check_beta,
    _check_k,
    _check_temperature,
    _check_variant,
    mix_scores,
    normalize_scores,
    unremix_components,
)


class ContrastivePairs(NamedTuple):
    """Anchors, candidates and masks of a two-view batch (see :func:`contrastive_pairs`)."""

    sim: Tensor  # [2B, C] cosine similarities, C = 2B + M
    pos_index: Tensor  # [2B] column of each anchor's positive
    neg_mask: Tensor  # [2B, C] bool, True for negatives
    anchors: Tensor  # [2B, D] normalised
    candidates: Tensor  # [C, D] normalised (anchors followed by the extra negatives)
    num_neg: Tensor  # [2B] number of negatives per anchor (float, dtype of sim)
    labelled: bool = False  # True when labels removed same-class negatives
    self_index: Optional[Tensor] = None  # [2B] column of each anchor itself (arange(2B) when local)
    # [C] column of each candidate's own positive view (-1 for extra negatives) when the candidates are
    # gathered ([z1_all; z2_all; neg_all]); None locally, where the candidates start with the anchors
    partner: Optional[Tensor] = None


def _check_tau_plus(tau_plus: float) -> None:
    tp = float(tau_plus)
    if not (0.0 <= tp < 1.0):
        raise ValueError(
            f"tau_plus (class prior of false negatives) must lie in [0, 1), got {tau_plus!r}; "
            "use 0 for no debiasing, typical values are 0.01 to 0.1"
        )


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
            candidates from *all* processes (:func:`graphneg.distributed.gather`, differentiable,
            any per-process ``B_r``): anchors stay this process's ``2B`` views, candidates are
            ``[z1_all; z2_all; neg_all]`` with ``z*_all`` ``[B_tot, D]`` in rank order (``neg`` and
            ``neg_labels`` are gathered too, so every process must pass them or none). Each
            anchor's own column and positive are found by its index shifted by this process's
            offset. Ignored outside a process group (one process: the candidates are the batch).

    Returns:
        :class:`ContrastivePairs` with ``sim`` ``[2B, C]``, ``pos_index`` ``[2B]``,
        ``neg_mask`` ``[2B, C]``, ``self_index`` ``[2B]``; ``C = 2B + M`` locally,
        ``C = 2 B_tot + M_tot`` when gathered.

    Raises:
        ValueError: on mismatched shapes, non-finite values, or an anchor without any negative.
    """
    check_embeddings(z1, "z1")
    check_embeddings(z2, "z2")
    if z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must be two views of the same batch with equal shape [B, D], got "
            f"{tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    b = z1.size(0)
    if b == 0:
        raise ValueError("the batch is empty: z1 and z2 need at least one row")
    if neg is not None:
        check_embeddings(neg, "neg")
        if neg.size(1) != z1.size(1):
            raise ValueError(
                f"extra negatives neg must have the embedding size D={z1.size(1)} of z1/z2, got shape "
                f"{tuple(neg.shape)}"
            )
    if neg_labels is not None and labels is None:
        raise ValueError("neg_labels were given without labels: pass labels for z1/z2 as well, or neither")
    if labels is not None and neg is not None and neg.size(0) > 0 and neg_labels is None:
        raise ValueError(
            "labels were given together with extra negatives neg but without neg_labels: pass the class "
            "ids of neg (shape [M]) so same-class extras can be excluded"
        )
    if neg_labels is not None and neg is None:
        raise ValueError("neg_labels were given without neg (the extra negative embeddings)")

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
    offset, b_tot, labels_all = 0, b, labels
    if gather_distributed and is_distributed():
        # the two views side by side: one gather (row counts exchanged once, labels alongside)
        views = torch.cat([anchors[:b], anchors[b:]], dim=1)
        if labels is None:
            views, offset = gather(views, return_offset=True)
        else:
            views, labels_all, offset = gather(views, labels, return_offset=True)
        b_tot = views.size(0)
        own = torch.cat([views[:, : z1.size(1)], views[:, z1.size(1):]])
        if neg is not None:
            if neg_labels is None:
                neg = gather(neg)
            else:
                neg, neg_labels = gather(neg, neg_labels)
    else:
        own = anchors
    candidates = own if neg is None else torch.cat([own, neg])
    n, c = 2 * b, candidates.size(0)
    sim = anchors @ candidates.t()

    self_index, pos_index = _self_and_positive(b, offset, b_tot, device)
    neg_mask = negative_pair_mask(
        b, labels, device, c - 2 * b_tot, neg_labels if labels is not None else None,
        offset=offset, global_batch_size=b_tot, global_labels=labels_all,
    )
    if labels is not None:
        num_neg = neg_mask.sum(dim=1)
        empty = num_neg == 0
        if value_checks_enabled() and bool(empty.any()):
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
    labelled = labels is not None
    partner = None
    if b_tot != b or offset != 0:  # gathered: the anchors are not the candidates' first rows
        cols = torch.arange(c, device=device)
        partner = torch.where(cols < 2 * b_tot, (cols + b_tot) % (2 * b_tot), torch.full_like(cols, -1))
    return ContrastivePairs(sim, pos_index, neg_mask, anchors, candidates, num_neg, labelled, self_index,
                            partner)


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


class _TwoViewContrastiveLoss(torch.nn.Module):
    """Base: ``forward(z1, z2, labels=None, neg=None, neg_labels=None) -> scalar``."""

    def __init__(self, temperature: float = 0.5, gather_distributed: bool = False):
        super().__init__()
        _check_temperature(temperature)
        if not isinstance(gather_distributed, bool):
            raise TypeError(f"gather_distributed must be True or False, got {gather_distributed!r}")
        self.temperature = float(temperature)
        self.gather_distributed = gather_distributed

    def reset_parameters(self) -> None:
        """No learnable parameters (kept for a uniform interface)."""

    def _per_anchor(self, pairs: ContrastivePairs) -> Tensor:
        raise TypeError(f"{type(self).__name__} is abstract")

    @full_precision
    def forward(
        self,
        z1: Tensor,
        z2: Tensor,
        labels: Optional[Tensor] = None,
        neg: Optional[Tensor] = None,
        neg_labels: Optional[Tensor] = None,
    ) -> Tensor:
        """Mean loss over the ``2B`` anchors.

        Args:
            z1, z2: two views ``[B, D]`` (any scale; L2-normalised inside).
            labels: optional class ids ``[B]`` (supervised: same-class samples are not negatives).
            neg: optional extra negatives ``[M, D]`` for every anchor.
            neg_labels: class ids ``[M]`` of ``neg`` (needed with ``labels``).

        With ``gather_distributed=True`` inside a process group (Lightning DDP) the candidates span
        all processes' batches (:func:`contrastive_pairs`) and the result is the mean over *this
        process's* ``2B_r`` anchors. Reduction: the single-process loss on the concatenated batch is
        the batch-size-weighted mean ``sum_r B_r L_r / sum_r B_r`` of the processes' losses, i.e. their
        plain mean (what DDP's gradient averaging minimises) when every ``B_r`` is equal; then the
        averaged gradients equal the single-process ones too (``tests/test_distributed.py``). With
        unequal ``B_r``, scale the loss by ``W B_r / sum_r B_r`` before ``backward`` for exact
        gradients. Under autocast (``bf16-mixed``, ``16-mixed``) the loss runs in float32
        (:func:`graphneg.precision.full_precision`).
        """
        pairs = contrastive_pairs(z1, z2, labels, neg, neg_labels, self.gather_distributed)
        return self._per_anchor(pairs).mean()

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}" + self._gather_repr()

    def _gather_repr(self) -> str:
        return ", gather_distributed=True" if self.gather_distributed else ""


class InfoNCELoss(_TwoViewContrastiveLoss):
    r"""NT-Xent / InfoNCE as in SimCLR (Chen et al., ICML 2020, eq. 1; Oord et al. 2018).

    :math:`\ell_i = -\log \frac{e^{s_{i,pos(i)}/t}}{e^{s_{i,pos(i)}/t} + \sum_{j \in neg(i)} e^{s_{ij}/t}}`,
    i.e. :func:`hcl_estimator` with uniform importance, ``tau_plus=0`` and no clamp (evaluated as
    ``logsumexp``); equal to ``cross_entropy`` over the masked logits.
    """

    def _per_anchor(self, pairs: ContrastivePairs) -> Tensor:
        logits = pairs.sim / self.temperature
        return hcl_estimator(
            logits, pairs.pos_index, pairs.neg_mask, self.temperature, 0.0, None, clamp=False,
        )


class DebiasedContrastiveLoss(_TwoViewContrastiveLoss):
    r"""Debiased contrastive loss (Chuang et al., "Debiased Contrastive Learning", NeurIPS 2020).

    Not lightly's ``DCLLoss`` (*Decoupled* contrastive learning, Yeh et al., ECCV 2022); the old
    name here, :class:`DCLLoss`, is a deprecated alias of this class.

    :func:`hcl_estimator` with uniform importance:
    :math:`N^g_i = \max\big((\sum_j e^{s_{ij}/t} - \tau^+ N_i e^{s_{i,pos(i)}/t}) / (1 - \tau^+),\,
    N_i e^{-1/t}\big)`. With ``tau_plus=0`` it equals :class:`InfoNCELoss` (the clamp is then inactive
    because every :math:`e^{s/t} \ge e^{-1/t}`).
    """

    def __init__(self, temperature: float = 0.5, tau_plus: float = 0.1, gather_distributed: bool = False):
        super().__init__(temperature, gather_distributed)
        _check_tau_plus(tau_plus)
        self.tau_plus = float(tau_plus)

    def _per_anchor(self, pairs: ContrastivePairs) -> Tensor:
        logits = pairs.sim / self.temperature
        return hcl_estimator(
            logits, pairs.pos_index, pairs.neg_mask, self.temperature, self.tau_plus, None,
            clamp=True, num_neg=pairs.num_neg,
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, tau_plus={self.tau_plus}" + self._gather_repr()


class DCLLoss(DebiasedContrastiveLoss):
    """Deprecated alias of :class:`DebiasedContrastiveLoss` (kept for one release; warns on use).

    Renamed because ``DCLLoss`` names *Decoupled* contrastive learning in lightly.
    """

    def __init__(self, temperature: float = 0.5, tau_plus: float = 0.1):
        warnings.warn(
            "graphneg.losses.DCLLoss is deprecated and will be removed in the next release: use "
            "graphneg.losses.DebiasedContrastiveLoss (the same loss; lightly's DCLLoss is the different "
            "Decoupled contrastive loss)",
            FutureWarning,
            stacklevel=2,
        )
        super().__init__(temperature, tau_plus)


class HCLLoss(_TwoViewContrastiveLoss):
    r"""Hard contrastive loss (Robinson et al., "Contrastive Learning with Hard Negative Samples", ICLR 2021).

    :func:`hcl_estimator` with importance :math:`w_{ij} = e^{\beta s_{ij}/t}` (computed relative to
    the anchor's hardest negative, a constant the estimator is invariant to). As in the reference code
    joshr17/HCL ``image/main.py``, the importance is not detached: gradients flow through it. With
    ``beta=0`` it equals :class:`DebiasedContrastiveLoss`.
    """

    def __init__(self, temperature: float = 0.5, tau_plus: float = 0.1, beta: float = 1.0,
                 gather_distributed: bool = False):
        super().__init__(temperature, gather_distributed)
        _check_tau_plus(tau_plus)
        _check_beta(beta)
        self.tau_plus = float(tau_plus)
        self.beta = float(beta)

    def _per_anchor(self, pairs: ContrastivePairs) -> Tensor:
        logits = pairs.sim / self.temperature
        beta = self.beta
        imp = None if beta == 0 else (lambda terms: hcl_importance(terms, beta))
        return hcl_estimator(
            logits, pairs.pos_index, pairs.neg_mask, self.temperature, self.tau_plus, imp,
            clamp=True, num_neg=pairs.num_neg,
        )

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, tau_plus={self.tau_plus}, beta={self.beta}"
                + self._gather_repr())


class UnReMixLoss(_TwoViewContrastiveLoss):
    r"""UnReMix (Tabassum et al., arXiv 2206.01197) as importance weights in the HCL estimator.

    For every (anchor ``i``, negative ``j``) the three scores of :mod:`graphneg.sampling.unremix`
    (reconstructions, see there) are computed by
    :func:`~graphneg.sampling.unremix.unremix_components` (the one implementation the public
    :func:`~graphneg.sampling.unremix.unremix_scores` uses too), each normalised per anchor to mean 1
    over its negatives (:func:`~graphneg.sampling.unremix.normalize_scores`), and mixed
    (:func:`~graphneg.sampling.unremix.mix_scores`)

    .. math:: w_{ij} = \frac{\lambda_1 \hat w^{sim}_{ij} + \lambda_2 \hat w^{unc}_{ij}
                        + \lambda_3 \hat w^{rep}_{ij}}{\lambda_1 + \lambda_2 + \lambda_3}

    (``weights = (lambda_1, lambda_2, lambda_3)``; the mix keeps mean 1), then used as the importance
    of :func:`hcl_estimator`. ``weights=(1, 0, 0)`` reproduces :class:`HCLLoss` (same ``t``,
    ``tau_plus``, ``beta``); any subset of the signals is one config line. Components with weight 0
    are not computed.

    Args:
        temperature: ``t > 0``.
        tau_plus: class prior in ``[0, 1)``.
        beta: HCL concentration of the similarity score, ``>= 0``.
        weights: mixing coefficients (similarity, uncertainty, representativeness), non-negative,
            positive sum.
        k: neighbours per node of the batch kNN graph of the representativeness (``None``: all other
            candidates).
        detach_scores: compute the scores from detached embeddings (default ``True``): they are
            importance weights, not a path for gradients; ``False`` back-propagates through them too.
        representativeness: ``"density"`` (up-weights negatives in dense regions,
            :func:`~graphneg.sampling.unremix.density_scores`) or ``"diversity"`` (up-weights negatives
            far from the other candidates, the revised paper's direction,
            :func:`~graphneg.sampling.unremix.diversity_scores`).
        uncertainty: ``"gradient"`` (norm of the InfoNCE gradient w.r.t. the negative) or
            ``"pseudo_label"`` (gradient of the auxiliary "same anchor?" task and its disagreement
            with the anchor's gradient), see :func:`~graphneg.sampling.unremix.uncertainty_scores`.
        gather_distributed: candidates from all processes under DDP (see
            :meth:`_TwoViewContrastiveLoss.forward`); the representativeness kNN graph is then built
            over the global candidates, so every process scores the same global density.

    Attributes:
        last_scores: the last batch's detached ``[2B, C]`` per-anchor mean-1 scores for logging:
            ``'similarity'``, ``'uncertainty'``, ``'representativeness'`` (only the components with a
            positive weight) and ``'weights'`` (the mix the loss used), zero outside the negatives.
            References to the forward's own tensors, released at the next forward.
    """

    def __init__(
        self,
        temperature: float = 0.5,
        tau_plus: float = 0.1,
        beta: float = 1.0,
        weights: Sequence[float] = (1.0, 1.0, 1.0),
        k: Optional[int] = 10,
        detach_scores: bool = True,
        representativeness: str = "density",
        uncertainty: str = "gradient",
        gather_distributed: bool = False,
    ):
        super().__init__(temperature, gather_distributed)
        _check_tau_plus(tau_plus)
        _check_beta(beta)
        _check_k(k)
        weights = tuple(weights)
        if len(weights) != 3:
            raise ValueError(
                "weights must hold three coefficients (similarity, uncertainty, representativeness), "
                f"got {weights!r}"
            )
        try:
            weights = tuple(float(w) for w in weights)
        except (TypeError, ValueError):
            raise ValueError(f"weights must be numbers, got {weights!r}") from None
        if any(not (math.isfinite(w) and w >= 0) for w in weights) or sum(weights) <= 0:
            raise ValueError(
                f"weights must be finite, non-negative and have a positive sum, got {weights!r}; "
                "e.g. (1, 0, 0) for the similarity signal alone"
            )
        self.tau_plus = float(tau_plus)
        self.beta = float(beta)
        self.weights: Tuple[float, float, float] = weights
        self.k = None if k is None else int(k)
        self.detach_scores = bool(detach_scores)
        self.representativeness = _check_variant("representativeness", representativeness, REPRESENTATIVENESS)
        self.uncertainty = _check_variant("uncertainty", uncertainty, UNCERTAINTY)
        self._last_scores: Dict[str, Tensor] = {}

    @property
    def last_scores(self) -> Dict[str, Tensor]:
        """The last batch's detached, per-anchor mean-1 scores ``[2B, C]`` and their mix ``'weights'``."""
        return self._last_scores

    def importance(self, pairs: ContrastivePairs) -> Tensor:
        """The mixed mean-1 UnReMix importance ``[2B, C]`` of a batch (zero outside the negatives)."""
        self._last_scores = {}  # release the previous batch's scores
        detach = self.detach_scores
        anchors = pairs.anchors.detach() if detach else pairs.anchors
        cand = pairs.candidates.detach() if detach else pairs.candidates
        sim = pairs.sim.detach() if detach else pairs.sim
        comps = unremix_components(
            anchors, cand, sim, pairs.pos_index, pairs.neg_mask, self.temperature, self.beta, self.k,
            self.representativeness, self.uncertainty, partner=pairs.partner,
            anchors_first=pairs.partner is None,  # gathered candidates do not start with the anchors
            active=tuple(w > 0 for w in self.weights),
        )
        normed = [None if c is None else normalize_scores(c, pairs.neg_mask) for c in comps]
        w = mix_scores(normed, self.weights)
        last = {name: v.detach() for name, v in zip(comps._fields, normed) if v is not None}
        last["weights"] = w.detach()
        self._last_scores = last
        return w

    def _per_anchor(self, pairs: ContrastivePairs) -> Tensor:
        w = self.importance(pairs)
        logits = pairs.sim / self.temperature
        return hcl_estimator(
            logits, pairs.pos_index, pairs.neg_mask, self.temperature, self.tau_plus,
            w, clamp=True, num_neg=pairs.num_neg,
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, tau_plus={self.tau_plus}, beta={self.beta}, "
            f"weights={self.weights}, k={self.k}, detach_scores={self.detach_scores}, "
            f"representativeness={self.representativeness!r}, uncertainty={self.uncertainty!r}"
        ) + self._gather_repr()


__all__ = ["InfoNCELoss", "DebiasedContrastiveLoss", "DCLLoss", "HCLLoss", "UnReMixLoss", "contrastive_pairs",
           "hcl_estimator", "negative_pair_mask", "ContrastivePairs"]
