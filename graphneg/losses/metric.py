r"""Metric-learning losses that take a labelled batch and, optionally, synthetic hard negatives.

Contract (pytorch-metric-learning style, composable)
----------------------------------------------------
Every loss is an :class:`torch.nn.Module` with

.. code-block:: python

    loss = criterion(embeddings, labels)                         # the standard loss
    loss = criterion(embeddings, labels, neg_embeddings=z_neg,   # the synthetic term J_syn
                     neg_labels=y_neg, anchor_index=a)

* ``embeddings`` ``[B, D]`` (finite, floating), ``labels`` ``[B]`` (integer class ids); the batch must
  hold at least two classes and, for the pair-based losses, at least one class with two samples
  (use an m-per-class sampler with ``m >= 2``). An anchor without any positive is skipped, as in
  pytorch-metric-learning; the loss is averaged over the anchors that are kept.
* ``neg_embeddings`` ``[M, D]``, ``neg_labels`` ``[M]``, ``anchor_index`` ``[M]``: synthetic negatives
  (GCA-HNG, HDML, ...). Synthetic negative ``k`` belongs to anchor ``anchor_index[k]`` (an index into
  ``embeddings``) and carries class ``neg_labels[k] != labels[anchor_index[k]]``.

  - **Pair-based losses** (:class:`NPairLoss`, :class:`MultiSimilarityLoss`,
    :class:`TripletMarginLoss`): the negatives of anchor ``a`` are then *exactly its synthetic
    negatives*; its positives stay the real same-class samples of the batch. This is the synthetic
    term :math:`J_{syn}` of HDML (Zheng et al., CVPR 2019, Sec. 3.4) and GCA-HNG (Peng et al. 2024; official
    code ``scripts/models.py`` ``jsyn = (1 - e^{-beta/J_gen}) * mining_loss(z~, ..., False, ...)``).
    The loss on real pairs, :math:`J_m`, is the same module called without synthetic negatives; the
    caller combines ``J_m + w * J_syn``.
  - :class:`ProxyAnchorLoss`: synthetic samples are added to the batch as extra labelled samples
    (label-preserving, as HDML's synthetic samples keep the class they were generated for); they are
    pulled to the proxy of ``neg_labels[k]`` and pushed from the others. ``anchor_index`` is only
    validated.

Shared structure
----------------
All pair-based losses read one :class:`PairBlock`, built by :func:`pair_block`: an anchors x
candidates similarity block with boolean masks (positives among the real samples, negatives among
the candidates). Without synthetic negatives the candidates are the batch itself (``K = B``); with
them, row ``a`` holds anchor ``a``'s synthetic negatives packed to the left (``K`` = the largest number
of synthetic negatives of one anchor), so memory is ``O(B^2 + B K)`` rather than ``O(B M)``. A later
cross-batch / gathered-negatives mode only needs to build another candidate block here.

No Python loop over samples; everything runs on the input's device. Under autocast (``bf16-mixed``,
``16-mixed``) and for 16-bit inputs every loss computes in float32
(:func:`graphneg.precision.full_precision`): float16 inner products overflow for norms above ~256.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphneg.ops.labels import next_positive_index, rank_in_class  # noqa: F401  (public here too)
from graphneg.validation import check_embeddings, check_labels, check_multiclass
from graphneg.precision import full_precision
from graphneg.validation import value_checks_enabled

__all__ = [
    "NPairLoss",
    "MultiSimilarityLoss",
    "TripletMarginLoss",
    "ProxyAnchorLoss",
    "PairBlock",
    "SyntheticNegatives",
    "PMLInputs",
    "pair_block",
    "next_positive_index",
    "rank_in_class",
    "synthetic_indices_tuple",
    "check_synthetic",
]

_NO_POSITIVE = (
    "no anchor in this batch has a positive (every class appears once): pair-based losses need at "
    "least two samples of some class; use an m-per-class sampler with m >= 2 "
    "(e.g. graphneg.data.MPerClassSampler)"
)


class SyntheticNegatives(NamedTuple):
    """Validated synthetic negatives: ``x`` ``[M, D]``, ``labels`` ``[M]``, ``anchor_index`` ``[M]``."""

    x: Tensor
    labels: Tensor
    anchor_index: Tensor


class PairBlock(NamedTuple):
    r"""Anchors x candidates similarities and masks, shared by all pair-based losses.

    * ``pos_sim`` ``[B, B]``: similarity between the real samples; ``pos_mask`` ``[B, B]``:
      ``pos_mask[a, j]`` iff ``j`` is a positive of ``a`` (same label, ``j != a``).
    * ``neg_sim`` ``[B, K]``; ``neg_mask`` ``[B, K]``: ``neg_mask[a, c]`` iff column ``c`` of row ``a``
      holds a negative of ``a``. ``neg_index[a, c]`` is that candidate's row in the candidate set
      (``embeddings`` without synthetic negatives, ``neg_embeddings`` with them), ``-1`` on padding.
      Without synthetic negatives ``neg_sim`` *is* ``pos_sim`` and ``neg_mask`` = different labels.
    """

    pos_sim: Tensor
    pos_mask: Tensor
    neg_sim: Tensor
    neg_mask: Tensor
    neg_index: Tensor


def check_synthetic(
    embeddings: Tensor,
    labels: Tensor,
    neg_embeddings: Optional[Tensor],
    neg_labels: Optional[Tensor],
    anchor_index: Optional[Tensor],
) -> Optional[SyntheticNegatives]:
    """Validate the optional synthetic negatives; ``None`` when none are given.

    Raises a clear ``ValueError`` for a partial set of arguments, a wrong shape or dimension, an
    ``anchor_index`` outside ``[0, B)`` or a synthetic negative that carries its anchor's class.
    """
    given = {"neg_embeddings": neg_embeddings, "neg_labels": neg_labels, "anchor_index": anchor_index}
    if all(v is None for v in given.values()):
        return None
    missing = [k for k, v in given.items() if v is None]
    if missing:
        raise ValueError(
            "synthetic negatives need neg_embeddings [M, D], neg_labels [M] and anchor_index [M] "
            f"together; missing: {', '.join(missing)}"
        )
    check_embeddings(neg_embeddings, "neg_embeddings")
    if neg_embeddings.size(1) != embeddings.size(1):
        raise ValueError(
            f"neg_embeddings must have the embeddings' dimension D={embeddings.size(1)}, got shape "
            f"{tuple(neg_embeddings.shape)}"
        )
    m = neg_embeddings.size(0)
    neg_labels = check_labels(neg_labels, m, "neg_labels").to(embeddings.device)
    if not isinstance(anchor_index, Tensor):
        anchor_index = torch.as_tensor(anchor_index)
    if anchor_index.dim() != 1 or anchor_index.numel() != m:
        raise ValueError(
            f"anchor_index must have one entry per synthetic negative: expected shape [{m}], got "
            f"{tuple(anchor_index.shape)}"
        )
    if anchor_index.is_floating_point() or anchor_index.dtype == torch.bool:
        raise ValueError(f"anchor_index must hold integer row indices, got dtype {anchor_index.dtype}")
    anchor_index = anchor_index.to(device=embeddings.device, dtype=torch.long)
    n = embeddings.size(0)
    if m and value_checks_enabled() and bool(((anchor_index < 0) | (anchor_index >= n)).any()):
        raise ValueError(
            f"anchor_index must index rows of embeddings, i.e. lie in [0, {n}); got values in "
            f"[{int(anchor_index.min())}, {int(anchor_index.max())}]"
        )
    if m and value_checks_enabled() and bool((neg_labels == labels[anchor_index]).any()):
        raise ValueError(
            "a synthetic negative carries its anchor's class (neg_labels[k] == labels[anchor_index[k]]); "
            "neg_labels must be the class of the real negative each sample was generated from"
        )
    return SyntheticNegatives(neg_embeddings, neg_labels, anchor_index)


def _validate(embeddings, labels, neg_embeddings, neg_labels, anchor_index):
    check_embeddings(embeddings)
    labels = check_labels(labels, embeddings.size(0)).to(embeddings.device)
    check_multiclass(labels)
    synth = check_synthetic(embeddings, labels, neg_embeddings, neg_labels, anchor_index)
    return labels, synth


def pair_block(
    embeddings: Tensor,
    labels: Tensor,
    synthetic: Optional[SyntheticNegatives] = None,
    similarity: str = "cosine",
) -> PairBlock:
    r"""Build the anchors x candidates :class:`PairBlock` (the one helper of all pair-based losses).

    ``similarity="cosine"`` compares L2-normalised vectors, ``"dot"`` raw inner products.
    With ``synthetic`` the candidates of anchor ``a`` are the rows ``k`` with
    ``anchor_index[k] == a``, packed into ``K = max_a |{k : anchor_index[k] = a}|`` columns (at least
    one); their similarities ``s(z_a, n_k)`` are computed row-wise, ``O(M D)``.
    """
    if similarity == "cosine":
        z = F.normalize(embeddings, dim=1)
    elif similarity == "dot":
        z = embeddings
    else:
        raise ValueError(f"similarity must be 'cosine' or 'dot', got {similarity!r}")
    n, device = z.size(0), z.device
    pos_sim = z @ z.t()
    same = labels[:, None] == labels[None, :]
    pos_mask = same & ~torch.eye(n, dtype=torch.bool, device=device)
    if synthetic is None:
        index = torch.arange(n, device=device).expand(n, n)
        return PairBlock(pos_sim, pos_mask, pos_sim, ~same, index)

    neg = F.normalize(synthetic.x, dim=1) if similarity == "cosine" else synthetic.x
    anchor = synthetic.anchor_index
    m = anchor.numel()
    counts = torch.bincount(anchor, minlength=n)
    width = max(int(counts.max()), 1) if m else 1  # one host sync: the block width
    order = torch.argsort(anchor, stable=True)
    a_sorted = anchor[order]
    slot = torch.arange(m, device=device) - (torch.cumsum(counts, 0) - counts)[a_sorted]
    sim = (z[anchor] * neg).sum(dim=1)  # [M]
    neg_sim = sim.new_zeros(n, width).index_put((a_sorted, slot), sim[order])
    neg_index = torch.full((n, width), -1, dtype=torch.long, device=device)
    neg_index = neg_index.index_put((a_sorted, slot), order)
    return PairBlock(pos_sim, pos_mask, neg_sim, neg_index >= 0, neg_index)


class PMLInputs(NamedTuple):
    """Synthetic negatives in pytorch-metric-learning form (see :func:`synthetic_indices_tuple`)."""

    ref_emb: Tensor
    ref_labels: Tensor
    indices_tuple: Tuple[Tensor, ...]


def synthetic_indices_tuple(
    embeddings: Tensor,
    labels: Tensor,
    neg_embeddings: Tensor,
    neg_labels: Tensor,
    anchor_index: Tensor,
    kind: str = "pairs",
) -> PMLInputs:
    r"""Feed synthetic negatives to a pytorch-metric-learning loss: a reference set and an indices tuple.

    The reference set is the real batch followed by the synthetic negatives,
    ``ref_emb = cat([embeddings, neg_embeddings])`` (``[B + M, D]``), ``ref_labels`` likewise. The
    indices tuple follows pytorch-metric-learning's convention for ``ref_emb`` (anchors index
    ``embeddings``, positives and negatives index ``ref_emb``) and encodes the same pair sets as
    graphneg's losses with synthetic negatives (module docstring): the positives of anchor ``a``
    are the real same-class samples ``j != a``, its negatives are exactly its synthetic negatives
    ``B + k`` with ``anchor_index[k] = a``.

    * ``kind="pairs"``: ``(a1, p, a2, n)``, for pair losses (``MultiSimilarityLoss``,
      ``ContrastiveLoss``, ``NTXentLoss``, ...).
    * ``kind="triplets"``: ``(a, p, n)``, every positive of ``a`` with every synthetic negative of
      ``a``, for ``TripletMarginLoss``.

    Usage (``neg`` from :class:`graphneg.nn.GCAHNG`; ``neg.pml_inputs()`` is a shortcut)::

        t = synthetic_indices_tuple(emb, labels, neg.x, neg.labels, neg.anchor_index)
        loss = pml_losses.MultiSimilarityLoss()(emb, labels, t.indices_tuple, t.ref_emb, t.ref_labels)

    With every anchor having a positive (m-per-class batches, ``m >= 2``) this equals
    ``graphneg.losses.MultiSimilarityLoss(mining=False)(emb, labels, neg.x, neg.labels,
    neg.anchor_index)``, and pytorch-metric-learning's ``TripletMarginLoss`` on the triplets equals
    ``TripletMarginLoss(mining="all", reduction="nonzero")`` (``tests/test_generator.py`` checks this
    against loops over the tuple). Building the tuple has data-dependent sizes (like a miner).
    """
    if kind not in ("pairs", "triplets"):
        raise ValueError(f"kind must be 'pairs' or 'triplets', got {kind!r}")
    check_embeddings(embeddings)
    labels = check_labels(labels, embeddings.size(0)).to(embeddings.device)
    synth = check_synthetic(embeddings, labels, neg_embeddings, neg_labels, anchor_index)
    n, device = embeddings.size(0), embeddings.device
    m = synth.anchor_index.numel()
    same = labels[:, None] == labels[None, :]
    pos_a, pos_p = (same & ~torch.eye(n, dtype=torch.bool, device=device)).nonzero(as_tuple=True)
    neg_n = torch.arange(n, n + m, device=device)
    if kind == "pairs":
        tup: Tuple[Tensor, ...] = (pos_a, pos_p, synth.anchor_index, neg_n)
    else:
        # every (positive of a, synthetic negative of a): positives are sorted by anchor
        count = torch.bincount(pos_a, minlength=n)
        start = torch.cumsum(count, 0) - count
        reps = count.index_select(0, synth.anchor_index)
        g = torch.repeat_interleave(torch.arange(m, device=device), reps)
        offset = torch.arange(g.numel(), device=device) - torch.repeat_interleave(
            torch.cumsum(reps, 0) - reps, reps)
        a = synth.anchor_index.index_select(0, g)
        tup = (a, pos_p.index_select(0, start.index_select(0, a) + offset), neg_n.index_select(0, g))
    return PMLInputs(torch.cat([embeddings, synth.x]), torch.cat([labels, synth.labels]), tup)


def _log1p_sum_exp(x: Tensor, mask: Tensor) -> Tensor:
    r"""Row-wise :math:`\log(1 + \sum_{j: mask_{ij}} e^{x_{ij}})`, stable (logsumexp with a zero logit)."""
    x = x.masked_fill(~mask, float("-inf"))
    return torch.logsumexp(torch.cat([x.new_zeros(x.size(0), 1), x], dim=1), dim=1)


def _masked_mean(values: Tensor, keep: Tensor) -> Tensor:
    """Mean of ``values`` over ``keep`` (0, still attached to the graph, when nothing is kept)."""
    total = torch.where(keep, values, torch.zeros_like(values)).sum()
    return total / keep.sum().clamp(min=1).to(values.dtype)


def _require_positive(pos_mask: Tensor) -> Tensor:
    has_pos = pos_mask.any(dim=1)
    if value_checks_enabled() and not bool(has_pos.any()):
        raise ValueError(_NO_POSITIVE)
    return has_pos


class NPairLoss(nn.Module):
    r"""Multi-class N-pair loss (Sohn, NeurIPS 2016, Sec. 3.2) with the HDML / GCA-HNG ``l2`` term.

    For every anchor :math:`a` with a positive :math:`p(a)` (the next same-class sample in batch order,
    cyclic: :func:`next_positive_index`) and negatives :math:`\mathcal N_a`, with unnormalised inner
    products (embeddings are not L2-normalised, as in the official code):

    .. math::
        \ell_a = -\log \frac{e^{\langle z_a, z_{p(a)}\rangle}}
                 {e^{\langle z_a, z_{p(a)}\rangle} + \sum_{n\in\mathcal N_a} e^{\langle z_a, z_n\rangle}},
        \qquad
        L = \operatorname{mean}_a \ell_a + 0.25\,\lambda_{l2}\, R .

    * Real pairs: :math:`\mathcal N_a` = all other-class samples of the batch and
      :math:`R = \operatorname{mean}_a (\|z_a\|^2 + \|z_{p(a)}\|^2)`.
    * Synthetic negatives: :math:`\mathcal N_a` = the synthetic negatives of :math:`a` and
      :math:`R = \operatorname{mean}_a \|z_a\|^2 + \operatorname{mean}_{t \in T}\|t\|^2` with
      :math:`T` the "tile" :math:`\{z_{p(a)}\} \cup \{\tilde z_k\}` (positives and synthetic negatives).

    Relation to the official code (``scripts/loss.py`` ``NpairLoss``):

    * Synthetic branch (``equal_shape=False``): reproduced exactly. The official code arranges the
      batch as ``m`` chunks of one sample per class, pairs chunk ``j`` with chunk ``j+1`` (cyclic), uses
      the ``C - 1`` synthetic negatives of each anchor with the positive on the diagonal of the
      ``C x C`` tile, ``CrossEntropy`` over that row, ``l2 = mean||anchor||^2 + mean||tile||^2`` and
      averages ``ce + 0.25 l2_reg l2`` over chunks; with equal chunks this equals the formula above.
    * Real branch (``equal_shape=True``): generalised. The official code takes only chunk 0 as anchors
      and, for each other chunk, the ``C`` samples of that chunk as candidates (one per class, soft
      targets shared among same-class candidates), with ``l2 = sum_all ||z||^2 / C``. Here every
      sample is an anchor, its single positive is the next same-class sample, its negatives are all
      other-class samples of the batch, and the other same-class samples are left out of the logits.
      For ``m = 2`` the ``l2`` term is identical; the cross-entropy sees ``2(C-1)`` negatives instead
      of ``C-1``. Nothing assumes a batch layout.
    * Anchors without a positive are skipped; an anchor without synthetic negatives contributes 0.

    ``anchors="official"`` computes the official real branch exactly (``equal_shape=True``; source
    ``scripts/loss.py`` ``NpairLoss.forward``). Let :math:`r_j` be the rank of sample :math:`j` within its
    class in batch order (:func:`rank_in_class`; in the official chunked layout the chunk index),
    :math:`a(j)` the rank-0 sample of :math:`j`'s class (the official anchor, chunk 0) and
    :math:`C` the number of classes in the batch:

    .. math::
        L = \operatorname{mean}_{j:\,r_j \ge 1}\Big[-\langle z_{a(j)}, z_j\rangle
            + \log\!\sum_{k:\,r_k = r_j} e^{\langle z_{a(j)}, z_k\rangle}\Big]
            + 0.25\,\lambda_{l2}\,\frac{1}{C}\sum_{j}\|z_j\|^2 .

    With ``m`` samples of each class this is the official ``sum_{r=1}^{m-1} CE(chunk_0 chunk_r^T) / (m - 1)
    + 0.25 l2_reg sum_all ||z||^2 / C`` (one anchor and one positive per class and chunk, the chunk's
    ``C`` samples as the softmax candidates), for any batch order; with unequal class counts
    it averages over the (anchor, rank-``r`` sample) pairs that exist. The synthetic term (with
    ``neg_embeddings``) is the official ``equal_shape=False`` branch in both modes (every sample an
    anchor, positive the next same-class sample): officially ``J_m = loss_fn(z, t)`` uses the real branch
    and ``J_syn = mining_loss(z~, t, False, bs, embedding_z=z)`` the synthetic one
    (``scripts/models.py`` ``GCA_HNG.forward``).

    Args:
        l2_reg (float): weight :math:`\lambda_{l2}` of the squared-norm penalty (official 3e-3).
        anchors (str): ``"all"`` (default: the generalised real-pair term above, every sample an anchor)
            or ``"official"`` (the official real-pair term, one anchor per class).
    """

    ANCHORS = ("all", "official")

    def __init__(self, l2_reg: float = 3e-3, anchors: str = "all"):
        super().__init__()
        if not math.isfinite(l2_reg) or l2_reg < 0:
            raise ValueError(f"l2_reg must be >= 0 and finite, got {l2_reg}")
        if anchors not in self.ANCHORS:
            raise ValueError(f"anchors must be one of {self.ANCHORS}, got {anchors!r}")
        self.l2_reg = float(l2_reg)
        self.anchors = anchors

    @full_precision
    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        neg_embeddings: Optional[Tensor] = None,
        neg_labels: Optional[Tensor] = None,
        anchor_index: Optional[Tensor] = None,
    ) -> Tensor:
        labels, synth = _validate(embeddings, labels, neg_embeddings, neg_labels, anchor_index)
        if synth is None and self.anchors == "official":
            return self._official_real(embeddings, labels)
        block = pair_block(embeddings, labels, synth, similarity="dot")
        partner = next_positive_index(labels)
        valid = partner != torch.arange(partner.numel(), device=partner.device)
        if value_checks_enabled() and not bool(valid.any()):
            raise ValueError(_NO_POSITIVE)
        s_pos = block.pos_sim.gather(1, partner[:, None])  # [B, 1]
        logits = torch.cat([s_pos, block.neg_sim.masked_fill(~block.neg_mask, float("-inf"))], dim=1)
        ce = _masked_mean(torch.logsumexp(logits, dim=1) - s_pos[:, 0], valid)

        sq = embeddings.pow(2).sum(dim=1)
        if synth is None:
            reg = _masked_mean(sq + sq[partner], valid)
        else:
            keep = valid[synth.anchor_index]
            tile = torch.where(valid, sq[partner], torch.zeros_like(sq)).sum() + torch.where(
                keep, synth.x.pow(2).sum(dim=1), sq.new_zeros(())
            ).sum()
            reg = _masked_mean(sq, valid) + tile / (valid.sum() + keep.sum()).to(sq.dtype)
        return ce + 0.25 * self.l2_reg * reg

    def _official_real(self, z: Tensor, labels: Tensor) -> Tensor:
        """The official real-pair branch (class docstring, ``anchors="official"``); ``O(B^2)``, no host sync."""
        rank = rank_in_class(labels)
        first = rank == 0
        same = labels[:, None] == labels[None, :]
        anchor = (same & first[None, :]).to(torch.uint8).argmax(dim=1)  # a(j): rank-0 sample of j's class
        keep = ~first
        if value_checks_enabled() and not bool(keep.any()):
            raise ValueError(_NO_POSITIVE)
        sim = z[anchor] @ z.t()  # row j: <z_a(j), z_k>
        chunk = rank[:, None] == rank[None, :]  # candidates of row j: the samples of j's rank
        lse = torch.logsumexp(sim.masked_fill(~chunk, float("-inf")), dim=1)
        ce = _masked_mean(lse - sim.diagonal(), keep)
        reg = z.pow(2).sum() / first.sum().to(z.dtype)
        return ce + 0.25 * self.l2_reg * reg

    def extra_repr(self) -> str:
        return f"l2_reg={self.l2_reg}, anchors={self.anchors!r}"


class MultiSimilarityLoss(nn.Module):
    r"""Multi-similarity loss with MS pair mining (Wang et al., CVPR 2019, Sec. 4).

    Cosine similarities :math:`S_{ij}`. Mining (Sec. 4.1), per anchor :math:`i` with positives
    :math:`\mathcal P_i` and negatives :math:`\mathcal N_i`:
    :math:`\hat{\mathcal N}_i = \{n : S_{in} + \epsilon > \min_{p\in\mathcal P_i} S_{ip}\}`,
    :math:`\hat{\mathcal P}_i = \{p : S_{ip} - \epsilon < \max_{n\in\mathcal N_i} S_{in}\}`. Loss (Sec. 4.2):

    .. math::
        L = \operatorname{mean}_i \Big[\frac1\alpha \log\big(1 + \sum_{p\in\hat{\mathcal P}_i}
            e^{-\alpha (S_{ip}-\lambda)}\big) + \frac1\beta \log\big(1 + \sum_{n\in\hat{\mathcal N}_i}
            e^{\beta (S_{in}-\lambda)}\big)\Big]

    over the anchors with at least one positive (with m-per-class batches: all ``B`` anchors, the
    paper's ``1/m`` normalisation). Defaults are the paper's / pytorch-metric-learning's
    (``alpha=2, beta=50, base=0.5``; ``MultiSimilarityMiner(epsilon=0.1)``). With synthetic
    negatives, :math:`\mathcal N_i` is the set of anchor ``i``'s synthetic negatives (both in mining
    and in the loss). ``mining=False`` uses all pairs.
    """

    def __init__(self, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5,
                 epsilon: float = 0.1, mining: bool = True):
        super().__init__()
        if alpha <= 0 or beta <= 0:
            raise ValueError(f"alpha and beta must be > 0, got alpha={alpha}, beta={beta}")
        self.alpha, self.beta = float(alpha), float(beta)
        self.base, self.epsilon = float(base), float(epsilon)
        self.mining = bool(mining)

    @full_precision
    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        neg_embeddings: Optional[Tensor] = None,
        neg_labels: Optional[Tensor] = None,
        anchor_index: Optional[Tensor] = None,
    ) -> Tensor:
        labels, synth = _validate(embeddings, labels, neg_embeddings, neg_labels, anchor_index)
        b = pair_block(embeddings, labels, synth, similarity="cosine")
        valid = _require_positive(b.pos_mask)
        pos_keep, neg_keep = b.pos_mask, b.neg_mask
        if self.mining:
            sp, sn = b.pos_sim.detach(), b.neg_sim.detach()
            min_pos = sp.masked_fill(~b.pos_mask, float("inf")).amin(dim=1, keepdim=True)
            max_neg = sn.masked_fill(~b.neg_mask, float("-inf")).amax(dim=1, keepdim=True)
            neg_keep = neg_keep & (sn + self.epsilon > min_pos)
            pos_keep = pos_keep & (sp - self.epsilon < max_neg)
        pos_term = _log1p_sum_exp(-self.alpha * (b.pos_sim - self.base), pos_keep) / self.alpha
        neg_term = _log1p_sum_exp(self.beta * (b.neg_sim - self.base), neg_keep) / self.beta
        return _masked_mean(pos_term + neg_term, valid)

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, beta={self.beta}, base={self.base}, epsilon={self.epsilon}, "
                f"mining={self.mining}")


class TripletMarginLoss(nn.Module):
    r"""Triplet margin loss on L2-normalised embeddings with online mining.

    :math:`\ell(a,p,n) = [d(a,p) - d(a,n) + \text{margin}]_+` with Euclidean distances between
    L2-normalised embeddings, :math:`d = \sqrt{2 - 2\cos}`: the hinge triplet loss of Schroff et al.
    (CVPR 2015) with non-squared distances, as Hermans et al. (2017) and pytorch-metric-learning.

    * ``mining="hard"``: batch-hard (Hermans et al. 2017, "In Defense of the Triplet Loss"): per
      anchor, its hardest (farthest) positive and hardest (closest) negative; one triplet per anchor.
    * ``mining="semihard"``: all triplets with :math:`0 < d(a,n) - d(a,p) \le \text{margin}`
      (pytorch-metric-learning ``TripletMarginMiner(type_of_triplets="semihard")``); 0 if none.
    * ``mining="all"``: all triplets (``O(B^2 K)`` memory).

    ``reduction="mean"`` averages over the selected triplets (Hermans et al.); ``"nonzero"``
    averages over those with a positive loss (pytorch-metric-learning's ``AvgNonZeroReducer``).
    With synthetic negatives, the negatives of anchor ``a`` are its synthetic negatives.
    """

    MINING = ("hard", "semihard", "all")
    REDUCTION = ("mean", "nonzero")

    def __init__(self, margin: float = 0.2, mining: str = "hard", reduction: str = "mean"):
        super().__init__()
        if mining not in self.MINING:
            raise ValueError(f"mining must be one of {self.MINING}, got {mining!r}")
        if reduction not in self.REDUCTION:
            raise ValueError(f"reduction must be one of {self.REDUCTION}, got {reduction!r}")
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.margin, self.mining, self.reduction = float(margin), mining, reduction

    @full_precision
    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        neg_embeddings: Optional[Tensor] = None,
        neg_labels: Optional[Tensor] = None,
        anchor_index: Optional[Tensor] = None,
    ) -> Tensor:
        labels, synth = _validate(embeddings, labels, neg_embeddings, neg_labels, anchor_index)
        b = pair_block(embeddings, labels, synth, similarity="cosine")
        valid = _require_positive(b.pos_mask)
        # clamp keeps sqrt's gradient finite at 0 (masked self-pairs); distances of unit vectors <= 2
        d_pos = (2.0 - 2.0 * b.pos_sim).clamp(min=1e-12).sqrt()
        d_neg = (2.0 - 2.0 * b.neg_sim).clamp(min=1e-12).sqrt()
        if self.mining == "hard":
            keep = valid & b.neg_mask.any(dim=1)
            hardest_pos = d_pos.masked_fill(~b.pos_mask, 0.0).amax(dim=1)
            hardest_neg = d_neg.masked_fill(~b.neg_mask, 4.0).amin(dim=1)
            losses = F.relu(hardest_pos - hardest_neg + self.margin)
        else:
            keep = b.pos_mask[:, :, None] & b.neg_mask[:, None, :]  # [B, B, K]
            gap = d_neg[:, None, :] - d_pos[:, :, None]
            losses = F.relu(self.margin - gap)
        if value_checks_enabled() and not bool(keep.any()):
            raise ValueError(
                "no triplet can be formed: no anchor has both a positive and a negative "
                "(with synthetic negatives, give some anchor that has a positive at least one)"
            )
        if self.mining == "semihard":
            g = gap.detach()
            keep = keep & (g > 0) & (g <= self.margin)
        if self.reduction == "nonzero":
            keep = keep & (losses.detach() > 0)
        return _masked_mean(losses, keep)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, mining={self.mining!r}, reduction={self.reduction!r}"


class ProxyAnchorLoss(nn.Module):
    r"""Proxy-Anchor loss (Kim et al., CVPR 2020, eq. 4) with its own learnable proxies.

    .. math::
        L = \frac{1}{|P^+|}\sum_{p\in P^+}\log\Big(1 + \sum_{x\in X_p^+} e^{-\alpha(s(x,p)-\delta)}\Big)
          + \frac{1}{|P|}\sum_{p\in P}\log\Big(1 + \sum_{x\in X_p^-} e^{\alpha(s(x,p)+\delta)}\Big)

    with cosine similarity :math:`s`, :math:`P` all ``num_classes`` proxies, :math:`P^+` the proxies
    of the classes present in the batch, :math:`X_p^{+/-}` the samples of / not of class ``p``
    (``delta = margin``). Proxies ``[num_classes, embedding_size]`` are initialised with
    ``kaiming_normal_(mode="fan_out")`` as in the paper's code. Sums use a stable logsumexp.
    With synthetic negatives the synthetic samples join the batch with their own labels
    ``neg_labels`` (label-preserving, as HDML); ``anchor_index`` is validated only.

    Args:
        num_classes (int): number of training classes; labels must lie in ``[0, num_classes)``.
        embedding_size (int): embedding dimension ``D``.
        margin (float): :math:`\delta` (paper 0.1). alpha (float): scale :math:`\alpha` (paper 32).
    """

    def __init__(self, num_classes: int, embedding_size: int, margin: float = 0.1, alpha: float = 32.0):
        super().__init__()
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if int(embedding_size) < 1:
            raise ValueError(f"embedding_size must be >= 1, got {embedding_size}")
        self.num_classes, self.embedding_size = int(num_classes), int(embedding_size)
        self.margin, self.alpha = float(margin), float(alpha)
        self.proxies = nn.Parameter(torch.empty(self.num_classes, self.embedding_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.proxies, mode="fan_out")

    def _check_range(self, labels: Tensor, name: str) -> None:
        if value_checks_enabled() and labels.numel() and bool(((labels < 0) | (labels >= self.num_classes)).any()):
            raise ValueError(
                f"{name} must lie in [0, num_classes={self.num_classes}), got values in "
                f"[{int(labels.min())}, {int(labels.max())}]; remap the class ids to 0..C-1 or raise "
                "num_classes"
            )

    @full_precision
    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        neg_embeddings: Optional[Tensor] = None,
        neg_labels: Optional[Tensor] = None,
        anchor_index: Optional[Tensor] = None,
    ) -> Tensor:
        labels, synth = _validate(embeddings, labels, neg_embeddings, neg_labels, anchor_index)
        if embeddings.size(1) != self.embedding_size:
            raise ValueError(
                f"embeddings have dimension {embeddings.size(1)} but ProxyAnchorLoss was built with "
                f"embedding_size={self.embedding_size}"
            )
        self._check_range(labels, "labels")
        x, y = embeddings, labels
        if synth is not None:
            self._check_range(synth.labels, "neg_labels")
            x, y = torch.cat([x, synth.x]), torch.cat([y, synth.labels])
        proxies = self.proxies.to(dtype=x.dtype)
        cos = F.normalize(proxies, dim=1) @ F.normalize(x, dim=1).t()  # [C, N]
        member = torch.arange(self.num_classes, device=y.device)[:, None] == y[None, :]  # [C, N]
        pos = _log1p_sum_exp(-self.alpha * (cos - self.margin), member)
        neg = _log1p_sum_exp(self.alpha * (cos + self.margin), ~member)
        return _masked_mean(pos, member.any(dim=1)) + neg.mean()

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, embedding_size={self.embedding_size}, "
                f"margin={self.margin}, alpha={self.alpha}")
