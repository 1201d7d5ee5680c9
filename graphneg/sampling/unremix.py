r"""UnReMix negative scores: anchor similarity, model uncertainty and representativeness.

UnReMix (Tabassum et al., "Hard Negative Sampling Strategies for Contrastive Representation Learning",
arXiv 2206.01197) selects negatives by three signals at once. Its full text and code are not public;
the abstract names the signals (*anchor similarity*, *model uncertainty*, *representativeness*) but
gives no formulas. The formulas below are **reconstructions**, chosen so that each signal is a positive
per-(anchor, negative) weight that plugs into the importance-sampling estimator of HCL (Robinson et
al., ICLR 2021), the method UnReMix builds on. Each docstring states the formula and the reasoning.

What is public beyond the abstract: the paper's overview figure (authors' lab site repository
PLAN-Lab/plan-lab.github.io, ``assets/images/publications/unremix.png``), which gives the highest
representativeness to the negative least like the others, and descriptions of the revised paper
(renamed UnDiMix, "uncertainty and diversity mixing"; hard negatives "close to the decision boundary
and far from each other"), which add an uncertainty from last-layer gradients of an auxiliary "same
anchor?" task. Hence ``representativeness="diversity"`` by default, in its neighbourhood form on the
batch kNN graph (:mod:`graphneg.sampling.representativeness`; ``"density"`` is the opposite
direction), and ``uncertainty="gradient" | "pseudo_label"`` (:func:`uncertainty_scores`). One
implementation of all scores, :func:`unremix_components`, serves the public functions and
:class:`graphneg.losses.UnReMixLoss`.

Weights. The paper numbers the mixing coefficients :math:`\lambda_1` (uncertainty),
:math:`\lambda_2` (anchor similarity), :math:`\lambda_3` (representativeness). graphneg's scores and
positional weight tuples are ordered ``(similarity, uncertainty, representativeness)`` =
``(lambda2, lambda1, lambda3)``; ``UnReMixLoss`` also takes them by name.

Notation. ``z`` ``[N, D]`` are the anchors (the concatenated ``2B`` views), ``candidates`` ``[C, D]``
the embeddings anchors are compared to (``z`` itself, optionally followed by extra negatives, so
``C = N + M``); both are L2-normalised here and ``s_ij = <z_i, c_j>`` is their cosine similarity.
``pos_index`` ``[N]`` gives each anchor's positive column and ``neg_mask`` ``[N, C]`` (bool) its
negatives. Every score is an ``[N, C]`` tensor that is zero outside ``neg_mask``.

Scores are **weights, not a path for gradients**: with ``detach=True`` (the default) they are computed
from detached embeddings, so the loss that uses them back-propagates only through its own
similarities, exactly as an importance weight in a Monte-Carlo estimate is a fixed number. Pass
``detach=False`` to differentiate through them (the square root of the uncertainty then has a guarded
gradient, see :func:`uncertainty_scores`).
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from graphneg.sampling.representativeness import (
    REPRESENTATIVENESS,
    representativeness_scores,
    representativeness_vector,
)
from graphneg.validation import (
    check_candidates, check_choice, check_hcl_beta, check_neighbours, check_temperature,
)


class UnReMixScores(NamedTuple):
    """The three per-pair UnReMix scores, each ``[N, C]`` and zero outside ``neg_mask`` (``None`` for
    a component that was not requested, see :func:`unremix_components`)."""

    similarity: Optional[Tensor]
    uncertainty: Optional[Tensor]
    representativeness: Optional[Tensor]


#: Uncertainty variants of :func:`uncertainty_scores` / ``UnReMixLoss``.
UNCERTAINTY = ("gradient", "pseudo_label")


# --------------------------------------------------------------------------------------- validation

def _prepare(z: Tensor, candidates: Optional[Tensor], sim: Optional[Tensor], detach: bool):
    """Normalise, optionally detach, and compute (or reuse) the ``[N, C]`` cosine matrix."""
    zn = F.normalize(z.detach() if detach else z, dim=-1)
    if candidates is None:
        cn = zn
    else:
        cn = F.normalize(candidates.detach() if detach else candidates, dim=-1)
    if sim is None:
        sim = zn @ cn.t()
    elif detach:
        sim = sim.detach()
    return zn, cn, sim


# ------------------------------------------------------------------------------------------ scores
def _similarity(sim: Tensor, neg_mask: Tensor, temperature: float, beta: float) -> Tensor:
    scaled = sim * (float(beta) / float(temperature))
    masked = scaled.masked_fill(~neg_mask, float("-inf"))
    shift = masked.amax(dim=1, keepdim=True).detach()
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    return torch.exp(masked - shift)  # exp(-inf) = 0 outside the mask


def similarity_scores(
    z: Tensor,
    neg_mask: Tensor,
    temperature: float = 0.5,
    beta: float = 1.0,
    candidates: Optional[Tensor] = None,
    sim: Optional[Tensor] = None,
    detach: bool = True,
) -> Tensor:
    r"""Anchor-similarity score: the HCL importance weight.

    .. math:: w^{sim}_{ij} = \exp(\beta\, s_{ij} / t) \,/\, \exp(\beta\, m_i / t),
              \qquad m_i = \max_{j \in \mathrm{neg}(i)} s_{ij}

    Source: Robinson et al., "Contrastive Learning with Hard Negative Samples", ICLR 2021, Sec. 3: the
    hard-negative distribution :math:`q_\beta^-(x^-) \propto e^{\beta f(x)^\top f(x^-)} p(x^-)`, whose
    importance weight on a uniformly drawn in-batch negative is ``imp = exp(beta * s / t)``
    (reference code joshr17/HCL ``image/main.py`` ``criterion``: ``imp = (beta * neg.log()).exp()``
    with ``neg = exp(s / t)``). UnReMix's "anchor similarity" signal is this hardness weight
    (reconstructed: the abstract describes it as the similarity of the negative to the anchor, and
    HCL is the method it extends).

    The per-anchor constant :math:`\exp(\beta m_i / t)` keeps the values in ``(0, 1]`` so they never
    overflow for small temperatures; every use of the score (per-anchor mean-1 normalisation, the
    self-normalised HCL estimator) is invariant to a per-anchor constant.

    Args:
        z: anchors ``[N, D]``.
        neg_mask: ``[N, C]`` bool, True where column ``j`` is a negative of anchor ``i``.
        temperature: ``t > 0``.
        beta: concentration ``>= 0`` (0 gives uniform weights).
        candidates: ``[C, D]`` embeddings of the columns (default ``z``).
        sim: precomputed cosine matrix ``[N, C]`` of the normalised ``z`` and ``candidates``.
        detach: compute from detached embeddings (default).

    Returns:
        ``[N, C]`` scores, zero outside ``neg_mask``.
    """
    check_temperature(temperature)
    check_hcl_beta(beta)
    cand = z if candidates is None else candidates
    check_candidates(z, cand, None, neg_mask)
    _, _, sim = _prepare(z, candidates, sim, detach)
    return _similarity(sim, neg_mask, temperature, beta)


def _safe_sqrt(x: Tensor) -> Tensor:
    """``sqrt(max(x, 0))`` whose gradient is 0 (not inf/NaN) where ``x <= 0``."""
    positive = x > 0
    return torch.where(positive, x.clamp_min(torch.finfo(x.dtype).tiny).sqrt(), torch.zeros_like(x))


def _uncertainty(sim: Tensor, pos_index: Tensor, neg_mask: Tensor, temperature: float) -> Tensor:
    t = float(temperature)
    cand_mask = neg_mask.scatter(1, pos_index.long()[:, None], True)
    prob = torch.softmax((sim / t).masked_fill(~cand_mask, float("-inf")), dim=1)
    tangent = _safe_sqrt(1.0 - sim * sim)
    return (prob * tangent / t).masked_fill(~neg_mask, 0.0)


def uncertainty_scores(
    z: Tensor,
    pos_index: Tensor,
    neg_mask: Tensor,
    temperature: float = 0.5,
    candidates: Optional[Tensor] = None,
    sim: Optional[Tensor] = None,
    detach: bool = True,
    uncertainty: str = "gradient",
) -> Tensor:
    r"""Model-uncertainty score: how hard the current model is pushed by negative ``j`` for anchor ``i``.

    Two variants (``uncertainty=``): ``"gradient"`` (below) and ``"pseudo_label"`` (further below).

    **"gradient"** (the default; the closed form of our first reconstruction):

    .. math:: w^{unc}_{ij} = p_{ij}\, \sqrt{1 - s_{ij}^2}\, /\, t, \qquad
              p_{ij} = \frac{e^{s_{ij}/t}}{e^{s_{i,pos(i)}/t} + \sum_{l \in \mathrm{neg}(i)} e^{s_{il}/t}}

    Reconstruction (UnReMix's abstract names "model uncertainty" without a formula). We measure the
    model's uncertainty about pair ``(i, j)`` by the size of the update that pair causes, as in
    gradient-based uncertainty / active-learning criteria (e.g. expected gradient length, BADGE): the
    InfoNCE term of anchor ``i``, :math:`\ell_i = -\log p_{i,pos(i)}`, has gradient
    :math:`p_{ij} z_i / t` with respect to the unit-norm negative :math:`c_j`; on the unit sphere (the
    gradient through the L2 normalisation) only its tangential part
    :math:`(I - c_j c_j^\top) z_i\, p_{ij} / t` acts, whose norm is the formula above. A negative the
    model already separates well (small :math:`p_{ij}`) or that is (anti-)aligned with the anchor
    (:math:`|s_{ij}| = 1`, no direction to move) scores low.

    ``1 - s^2`` is clamped at 0 (rounding can make it slightly negative) and the square root's
    gradient is set to 0 there instead of ``inf`` (matters only with ``detach=False``).

    **"pseudo_label"** (the revised paper's variant, as far as it is described). The revised version
    of the paper (renamed UnDiMix) takes uncertainty from gradients at the last layer of an auxiliary
    pseudo-labelling task, *do two augmented views come from the same anchor?*, used through their
    similarity to the anchor's gradient; no formula is public. Reconstruction, in closed form:

    * the auxiliary task is a logistic regression on the pair's cosine logit ``s_il / t`` with the
      pseudo-label ``y_il = 1`` for the anchor's own other view (``l = pos(i)``) and ``0`` for a
      negative; its loss is ``BCE(sigmoid(s_il / t), y_il)``;
    * "last layer" is the embedding the loss sees (the L2-normalised projector output); the
      gradient is taken with respect to the anchor's embedding on the unit sphere:
      :math:`g_{il} = (\sigma(s_{il}/t) - y_{il})\, (I - z_i z_i^\top) c_l / t`;
    * the anchor's gradient is that of its positive pair, :math:`g_i = g_{i,pos(i)}`, and the weight of
      negative ``j`` is its gradient's magnitude (the BADGE-style uncertainty of the auxiliary
      prediction) times its *disagreement* with the anchor's gradient,

    .. math:: u_{ij} = \lVert g_{ij} \rVert\, \frac{1 - \cos(g_{ij}, g_i)}{2}
              = \frac{\sigma(s_{ij}/t)}{2t}\Big(\sqrt{1 - s_{ij}^2}
                + \frac{q_{ij} - s_{ij} s_{i,pos(i)}}{\sqrt{1 - s_{i,pos(i)}^2}}\Big),
              \qquad q_{ij} = \langle c_{pos(i)}, c_j \rangle .

    Why the disagreement: ``g_ij`` and ``g_i`` live in the same tangent space at ``z_i``; they point in
    opposite directions (``cos = -1``) when the negative lies on the same side of the anchor as its
    positive, i.e. when separating the negative pulls the anchor away from its positive: the pair is
    on the decision boundary of the pseudo-labelling task. A negative on the far side agrees with the
    anchor's gradient (``cos = +1``) and gets weight 0. Where the anchor's gradient vanishes
    (``s_{i,pos(i)} = \pm 1`` or ``sigmoid(s/t) = 1`` in floating point) the cosine is taken as 0.
    The sign convention (1 - cos, not cos) and the product with the magnitude are our choices.

    Args:
        z: anchors ``[N, D]``.
        pos_index: ``[N]`` positive column of each anchor.
        neg_mask: ``[N, C]`` bool negatives.
        temperature: ``t > 0``.
        candidates, sim, detach: as in :func:`similarity_scores` (``"pseudo_label"`` with
            ``candidates`` computes ``q`` from them: one ``[N, D] x [D, C]`` product).
        uncertainty: ``"gradient"`` or ``"pseudo_label"``.

    Returns:
        ``[N, C]`` scores, zero outside ``neg_mask``.
    """
    check_temperature(temperature)
    check_choice("uncertainty", uncertainty, UNCERTAINTY)
    cand = z if candidates is None else candidates
    check_candidates(z, cand, pos_index, neg_mask)
    _, cn, sim = _prepare(z, candidates, sim, detach)
    if uncertainty == "gradient":
        return _uncertainty(sim, pos_index, neg_mask, temperature)
    return _uncertainty_pseudo_label(sim, _partner_sim(sim, cn, pos_index, candidates is None), pos_index,
                                     neg_mask, temperature)


def _partner_sim(sim: Tensor, cn: Tensor, pos_index: Tensor, anchors_first: bool) -> Tensor:
    """``q_ij = <c_pos(i), c_j>`` ``[N, C]``: the cosine of each anchor's positive to every candidate.

    When the candidates start with the anchors (``candidates=None`` or the losses' ``[z; extras]``)
    the positive ``c_pos(i)`` is anchor ``pos(i)`` and ``q`` is a row gather of ``sim``; otherwise
    one ``[N, D] x [D, C]`` product.
    """
    if anchors_first:
        return sim.index_select(0, pos_index.long())
    return cn.index_select(0, pos_index.long()) @ cn.t()


def _uncertainty_pseudo_label(sim: Tensor, q: Tensor, pos_index: Tensor, neg_mask: Tensor,
                              temperature: float) -> Tensor:
    t = float(temperature)
    pos = pos_index.long()[:, None]
    s_p = sim.gather(1, pos)  # [N, 1] cosine of the positive pair
    tan_j = _safe_sqrt(1.0 - sim * sim)  # |(I - z z^T) c_j|
    tan_p = _safe_sqrt(1.0 - s_p * s_p)  # |(I - z z^T) c_pos|
    # the anchor's gradient vanishes when its positive is (anti-)parallel or sigma(s_p / t) == 1
    anchor_ok = (tan_p > 0) & (torch.sigmoid(-s_p / t) > 0)
    safe_p = torch.where(anchor_ok, tan_p, torch.ones_like(tan_p))
    # ||g_ij|| (1 - cos(g_ij, g_i)) / 2 = sigma_ij / (2t) * (tan_j + (q_ij - s_ij s_ip) / tan_p)
    conflict = torch.where(anchor_ok, (q - sim * s_p) / safe_p, torch.zeros_like(sim))
    u = torch.sigmoid(sim / t) * (tan_j + conflict).clamp_min(0.0) / (2.0 * t)
    return u.masked_fill(~neg_mask, 0.0)


def _default_partner(pos_index: Tensor, num_candidates: int) -> Tensor:
    """``[C]`` own positive view of every candidate column: ``pos_index`` for the first ``N`` columns
    (the anchors), ``-1`` (none) for the extra negatives after them."""
    pos_index = pos_index.long()
    extra = num_candidates - pos_index.numel()
    if extra <= 0:
        return pos_index[:num_candidates]
    return torch.cat([pos_index, pos_index.new_full((extra,), -1)])


def normalize_scores(scores: Tensor, neg_mask: Tensor) -> Tensor:
    r"""Scale each anchor's scores to mean 1 over its negatives: :math:`\hat w_{ij} = w_{ij} / \bar w_i`.

    :math:`\bar w_i = \frac{1}{|\mathrm{neg}(i)|} \sum_{j \in \mathrm{neg}(i)} w_{ij}`. This is what
    makes the three UnReMix signals commensurable before mixing (each then has the scale of the
    uniform weight 1 of DCL). An anchor whose scores are all zero (e.g. the uncertainty of identical
    embeddings, where :math:`\sqrt{1 - s^2} = 0`) carries no preference and gets the uniform weight 1;
    anchors without negatives get zeros. Output is zero outside ``neg_mask``.
    """
    if scores.shape != neg_mask.shape:
        raise ValueError(
            f"scores and neg_mask must have the same shape, got {tuple(scores.shape)} and "
            f"{tuple(neg_mask.shape)}"
        )
    scores = scores.masked_fill(~neg_mask, 0.0)
    count = neg_mask.sum(dim=1, keepdim=True).to(scores.dtype)
    mean = scores.sum(dim=1, keepdim=True) / count.clamp_min(1.0)
    ok = mean > 0
    normed = scores / torch.where(ok, mean, torch.ones_like(mean))
    uniform = neg_mask.to(scores.dtype)
    return torch.where(ok, normed, uniform)


def mix_scores(normalized: Sequence[Optional[Tensor]], weights: Sequence[float]) -> Tensor:
    r"""Mix mean-1 scores: :math:`w_{ij} = \sum_c \lambda_c \hat w^c_{ij} / \sum_c \lambda_c`.

    Reconstruction: UnReMix combines its three signals; a convex combination of mean-1 scores is the
    simplest mixture that keeps each anchor's mean weight at 1 (so the HCL estimator's scale is
    unchanged) and makes each signal switchable by its coefficient :math:`\lambda_c` (ablations:
    one signal, pairs, all three). Components with :math:`\lambda_c = 0` may be ``None``. Python
    arithmetic on the coefficients only: no host synchronisation.
    """
    weights = [float(w) for w in weights]
    if len(weights) != len(normalized):
        raise ValueError(f"need one weight per score, got {len(weights)} weights for {len(normalized)}")
    if any(not (0 <= w < float("inf")) for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be non-negative and finite with a positive sum, got {tuple(weights)}")
    total = sum(weights)
    active = [(w, s) for w, s in zip(weights, normalized) if w > 0]
    if any(s is None for _, s in active):
        raise ValueError("a score with a positive weight is missing (None)")
    if len(active) == 1:
        return active[0][1]
    out = active[0][1] * (active[0][0] / total)
    for w, s in active[1:]:
        out = out + s * (w / total)
    return out


def unremix_components(
    anchors: Tensor,
    candidates: Tensor,
    sim: Tensor,
    pos_index: Tensor,
    neg_mask: Tensor,
    temperature: float,
    beta: float,
    k: Optional[int],
    representativeness: str = "diversity",
    uncertainty: str = "gradient",
    partner: Optional[Tensor] = None,
    anchors_first: bool = True,
    active: Tuple[bool, bool, bool] = (True, True, True),
) -> UnReMixScores:
    """The one implementation of the three raw scores, on already normalised inputs (no checks).

    Called by :func:`unremix_scores` and by :class:`graphneg.losses.UnReMixLoss` (which passes its
    own cosine matrix and skips inactive components: ``active`` flags, ``None`` where off).
    ``anchors`` ``[N, D]`` and ``candidates`` ``[C, D]`` are unit-norm, ``sim = anchors @
    candidates.T``; ``anchors_first`` says that the candidates' first ``N`` rows are the anchors (then
    the pseudo-label uncertainty reads the positive's similarities off ``sim``). ``partner`` ``[C]``
    (each candidate's own positive view, ``-1`` for none; used by the diversity) defaults, when
    ``anchors_first``, to ``pos_index`` for the first ``N`` columns and ``-1`` after them, otherwise
    to ``-1`` everywhere. No host synchronisation.
    """
    sim_score = unc = rep = None
    if active[0]:
        sim_score = _similarity(sim, neg_mask, temperature, beta)
    if active[1]:
        if uncertainty == "gradient":
            unc = _uncertainty(sim, pos_index, neg_mask, temperature)
        else:
            q = _partner_sim(sim, candidates, pos_index, anchors_first)
            unc = _uncertainty_pseudo_label(sim, q, pos_index, neg_mask, temperature)
    if active[2]:
        if partner is None and anchors_first:
            partner = _default_partner(pos_index, candidates.size(0))
        vec = representativeness_vector(candidates, representativeness, k, partner)
        rep = representativeness_scores(vec, neg_mask)
    return UnReMixScores(similarity=sim_score, uncertainty=unc, representativeness=rep)


def unremix_scores(
    z: Tensor,
    pos_index: Tensor,
    neg_mask: Tensor,
    temperature: float = 0.5,
    beta: float = 1.0,
    k: Optional[int] = 10,
    candidates: Optional[Tensor] = None,
    sim: Optional[Tensor] = None,
    detach: bool = True,
    representativeness: str = "diversity",
    uncertainty: str = "gradient",
    partner: Optional[Tensor] = None,
) -> UnReMixScores:
    r"""All three raw UnReMix scores for every (anchor, negative) pair.

    Args:
        z: anchors ``[N, D]``, e.g. ``torch.cat([z1, z2])`` of two views (``N = 2B``).
        pos_index: ``[N]`` column of each anchor's positive (``(i + B) mod 2B`` for two views).
        neg_mask: ``[N, C]`` bool, True where column ``j`` is a negative of anchor ``i``.
        temperature: ``t > 0`` of the similarity and uncertainty scores.
        beta: HCL concentration ``>= 0`` of the similarity score.
        k: neighbours per node of the kNN graph of the representativeness (``None``: all other
            candidates).
        candidates: ``[C, D]`` column embeddings (default ``z``; by convention ``z`` followed by extra
            negatives, e.g. gathered from other processes). The representativeness is computed over
            all candidates.
        sim: optional precomputed cosine matrix ``[N, C]`` (reused, not recomputed).
        detach: compute the scores from detached embeddings (default: scores are weights).
        representativeness: ``"diversity"`` (default, :func:`diversity_scores`, the paper figure's
            direction) or ``"density"`` (:func:`density_scores`).
        uncertainty: ``"gradient"`` or ``"pseudo_label"`` (:func:`uncertainty_scores`).
        partner: ``[C]`` own positive column of each candidate for the diversity (default:
            ``pos_index`` for the first ``N`` columns when ``candidates`` is ``None`` or starts with
            ``z``, ``-1`` for the rest).

    Returns:
        :class:`UnReMixScores` ``(similarity, uncertainty, representativeness)``, each ``[N, C]``,
        raw (use :func:`normalize_scores` for the per-anchor mean-1 form), zero outside ``neg_mask``.
        See :func:`similarity_scores`, :func:`uncertainty_scores`, :func:`density_scores`,
        :func:`diversity_scores`.
    """
    temperature = check_temperature(temperature)
    beta = check_hcl_beta(beta)
    k = check_neighbours(k)
    check_choice("representativeness", representativeness, REPRESENTATIVENESS)
    check_choice("uncertainty", uncertainty, UNCERTAINTY)
    cand = z if candidates is None else candidates
    check_candidates(z, cand, pos_index, neg_mask)
    zn, cn, sim = _prepare(z, candidates, sim, detach)
    if partner is None:
        partner = _default_partner(pos_index, cn.size(0))
    return unremix_components(zn, cn, sim, pos_index.long(), neg_mask, temperature, beta, k,
                              representativeness, uncertainty, partner, anchors_first=candidates is None)


__all__ = [
    "UnReMixScores", "unremix_scores", "similarity_scores", "uncertainty_scores", "normalize_scores",
    "mix_scores", "unremix_components", "UNCERTAINTY",
]
