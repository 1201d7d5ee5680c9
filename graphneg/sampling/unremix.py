r"""UnReMix negative scores: anchor similarity, model uncertainty and representativeness.

UnReMix (Tabassum et al., "Hard Negative Sampling Strategies for Contrastive Representation Learning",
arXiv 2206.01197) selects negatives by three signals at once. Its full text and code are not public;
the abstract names the signals (*anchor similarity*, *model uncertainty*, *representativeness*) but
gives no formulas. The formulas below are **reconstructions**, chosen so that each signal is a positive
per-(anchor, negative) weight that plugs into the importance-sampling estimator of HCL (Robinson et
al., ICLR 2021), the method UnReMix builds on. Each docstring states the formula and the reasoning.

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

from typing import NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.utils import scatter

from graphneg.graph import check_embeddings, knn_index
from graphneg.validation import value_checks_enabled


class UnReMixScores(NamedTuple):
    """The three per-pair UnReMix scores, each ``[N, C]`` and zero outside ``neg_mask``."""

    similarity: Tensor
    uncertainty: Tensor
    representativeness: Tensor


# --------------------------------------------------------------------------------------- validation
def _check_temperature(temperature: float) -> None:
    if not float(temperature) > 0:
        raise ValueError(
            f"temperature must be > 0 (it divides the cosine similarities), got {temperature!r}; "
            "typical values are 0.05 to 1.0"
        )


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(
            f"k (neighbours per node of the kNN density graph) must be an integer >= 1, got {k!r}"
        )


def _check_beta(beta: float) -> None:
    b = float(beta)
    if not (b >= 0 and b < float("inf")):
        raise ValueError(
            f"beta (HCL concentration) must be a finite number >= 0, got {beta!r}; "
            "beta=0 gives uniform importance (DCL), larger values favour harder negatives"
        )


def _check_pairs(z: Tensor, candidates: Tensor, pos_index: Optional[Tensor], neg_mask: Tensor) -> None:
    check_embeddings(z, "z")
    check_embeddings(candidates, "candidates")
    if candidates.size(1) != z.size(1):
        raise ValueError(
            f"candidates must have the embedding size of z: z is {tuple(z.shape)}, candidates "
            f"{tuple(candidates.shape)}"
        )
    n, c = z.size(0), candidates.size(0)
    if neg_mask.dtype != torch.bool or tuple(neg_mask.shape) != (n, c):
        raise ValueError(
            f"neg_mask must be a bool tensor of shape [N, C] = [{n}, {c}] (anchors x candidates), got "
            f"dtype {neg_mask.dtype} and shape {tuple(neg_mask.shape)}"
        )
    if pos_index is not None:
        if pos_index.dim() != 1 or pos_index.numel() != n or pos_index.is_floating_point():
            raise ValueError(
                f"pos_index must be an integer vector [N] = [{n}] holding each anchor's positive "
                f"column, got dtype {pos_index.dtype} and shape {tuple(pos_index.shape)}"
            )
        if n and value_checks_enabled() and bool(((pos_index < 0) | (pos_index >= c)).any()):
            raise ValueError(f"pos_index entries must lie in [0, {c}) (columns of the candidates)")
        if n and value_checks_enabled() and bool(neg_mask.gather(1, pos_index.long()[:, None]).any()):
            raise ValueError("neg_mask marks an anchor's positive as a negative; unset those entries")


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
    _check_temperature(temperature)
    _check_beta(beta)
    cand = z if candidates is None else candidates
    _check_pairs(z, cand, None, neg_mask)
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
) -> Tensor:
    r"""Model-uncertainty score: how hard the current model is pushed by negative ``j`` for anchor ``i``.

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

    Args:
        z: anchors ``[N, D]``.
        pos_index: ``[N]`` positive column of each anchor.
        neg_mask: ``[N, C]`` bool negatives.
        temperature: ``t > 0``.
        candidates, sim, detach: as in :func:`similarity_scores`.

    Returns:
        ``[N, C]`` scores, zero outside ``neg_mask``.
    """
    _check_temperature(temperature)
    cand = z if candidates is None else candidates
    _check_pairs(z, cand, pos_index, neg_mask)
    _, _, sim = _prepare(z, candidates, sim, detach)
    return _uncertainty(sim, pos_index, neg_mask, temperature)


def _knn_from_sim(sim: Tensor, k: int) -> Tensor:
    """The ``k``-NN ``edge_index`` of :func:`graphneg.graph.knn_index` read off a precomputed ``[N, N]``
    cosine matrix (no second ``N x N x D`` product): ``edge_index[0]`` = neighbour, ``[1]`` = node.

    Takes the ``k + 1`` largest entries of each row and drops the node itself (or, when a duplicate
    outranks it, the ``(k+1)``-th), so no masked copy of the matrix is needed.
    """
    n = sim.size(0)
    k_eff = min(int(k), n - 1)
    if k_eff <= 0:
        return torch.empty(2, 0, dtype=torch.long, device=sim.device)
    top = sim.detach().topk(k_eff + 1, dim=1).indices  # [N, k + 1]
    nodes = torch.arange(n, device=sim.device)
    is_self = (top == nodes[:, None]).to(torch.uint8)
    keep = torch.sort(is_self, dim=1, stable=True).indices[:, :k_eff]  # other nodes first, in order
    src = top.gather(1, keep).reshape(-1)
    dst = nodes.repeat_interleave(k_eff)
    return torch.stack([src, dst])


def _density(xn: Tensor, k: int, sim: Optional[Tensor] = None) -> Tensor:
    n = xn.size(0)
    square = sim is not None and sim.size(0) == n and sim.size(1) == n
    # PyG kNN graph: edge_index[0] = neighbour (source), edge_index[1] = node (target)
    edge_index = _knn_from_sim(sim, k) if square else knn_index(xn, k)
    src, dst = edge_index[0], edge_index[1]
    if square:
        w = sim[dst, src]
    else:
        w = (xn[dst] * xn[src]).sum(dim=-1)
    mean_sim = scatter(w, dst, dim=0, dim_size=n, reduce="mean")
    return torch.exp(mean_sim)


def density_scores(z: Tensor, k: int = 10, sim: Optional[Tensor] = None, detach: bool = True) -> Tensor:
    r"""Per-node neighbourhood density on a PyG kNN graph (UnReMix representativeness, reconstructed).

    .. math:: r_j = \exp\Big(\frac{1}{|\mathcal N_k(j)|} \sum_{l \in \mathcal N_k(j)} s_{jl}\Big)

    with :math:`\mathcal N_k(j)` the ``k`` most cosine-similar other nodes of ``j``. The graph is
    built by :func:`graphneg.graph.knn_index` (``edge_index[0]`` = neighbour, ``edge_index[1]`` =
    node), or, when the ``[N, N]`` cosine matrix ``sim`` is already at hand (the losses), read off it
    with ``topk`` (same edges, no second ``N x N x D`` product); the mean is a
    :func:`torch_geometric.utils.scatter` over the target index, so memory is ``O(N k)`` beyond the
    block-wise kNN search.

    Reconstruction and reasoning: UnReMix's abstract asks for *representative* negatives, i.e. typical
    points of the data distribution rather than outliers; the density of a point among its
    neighbours is the standard proxy for typicality (k-NN density estimation, density-weighted active
    learning). The mean cosine similarity to the ``k`` nearest neighbours is high inside dense
    regions and low for isolated points. We take its exponential, which is the geometric mean of the
    von Mises-Fisher kernel :math:`e^{s}` (bandwidth 1) over the neighbours, because (i) the score
    must be strictly positive so that the per-anchor mean-1 normalisation is always defined, and
    (ii) it is bounded in :math:`[e^{-1}, e]`, so an outlier is down-weighted by at most
    :math:`e^2 \approx 7.4` relative to the densest point and never dropped entirely; the bandwidth
    is independent of the loss temperature so this prior does not sharpen as ``t`` shrinks. A node
    without neighbours (a batch of one) gets density ``exp(0) = 1``.

    Args:
        z: node embeddings ``[N, D]`` (normalised here).
        k: neighbours per node, ``>= 1`` (nodes with fewer candidates keep all of them).
        sim: optional precomputed ``[N, N]`` cosine matrix of ``z`` to read edge weights from.
        detach: compute from detached embeddings (default).

    Returns:
        ``[N]`` densities in ``[1/e, e]``.
    """
    _check_k(k)
    check_embeddings(z, "z")
    zn = F.normalize(z.detach() if detach else z, dim=-1)
    if sim is not None and detach:
        sim = sim.detach()
    return _density(zn, k, sim)


def representativeness_scores(density: Tensor, neg_mask: Tensor) -> Tensor:
    r"""Broadcast a per-candidate density ``[C]`` to pairs: :math:`w^{rep}_{ij} = r_j` on ``neg_mask``.

    Representativeness is a property of the negative alone (how typical ``j`` is), the same for all
    anchors; zero outside ``neg_mask``.
    """
    if density.dim() != 1 or density.numel() != neg_mask.size(1):
        raise ValueError(
            f"density must be a vector with one entry per candidate column ([{neg_mask.size(1)}]), "
            f"got shape {tuple(density.shape)}"
        )
    return density[None, :].expand_as(neg_mask).masked_fill(~neg_mask, 0.0)


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
    one signal, pairs, all three). Components with :math:`\lambda_c = 0` may be ``None``.
    """
    weights = [float(w) for w in weights]
    if len(weights) != len(normalized):
        raise ValueError(f"need one weight per score, got {len(weights)} weights for {len(normalized)}")
    if any(not (w >= 0) for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {tuple(weights)}")
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


def unremix_scores(
    z: Tensor,
    pos_index: Tensor,
    neg_mask: Tensor,
    temperature: float = 0.5,
    beta: float = 1.0,
    k: int = 10,
    candidates: Optional[Tensor] = None,
    sim: Optional[Tensor] = None,
    detach: bool = True,
) -> UnReMixScores:
    r"""All three raw UnReMix scores for every (anchor, negative) pair.

    Args:
        z: anchors ``[N, D]``, e.g. ``torch.cat([z1, z2])`` of two views (``N = 2B``).
        pos_index: ``[N]`` column of each anchor's positive (``(i + B) mod 2B`` for two views).
        neg_mask: ``[N, C]`` bool, True where column ``j`` is a negative of anchor ``i``.
        temperature: ``t > 0`` of the similarity and uncertainty scores.
        beta: HCL concentration ``>= 0`` of the similarity score.
        k: neighbours per node of the kNN density graph.
        candidates: ``[C, D]`` column embeddings (default ``z``; e.g. ``z`` followed by extra
            negatives gathered from other processes). The density is computed over all candidates.
        sim: optional precomputed cosine matrix ``[N, C]`` (reused, not recomputed).
        detach: compute the scores from detached embeddings (default: scores are weights).

    Returns:
        :class:`UnReMixScores` ``(similarity, uncertainty, representativeness)``, each ``[N, C]``,
        raw (use :func:`normalize_scores` for the per-anchor mean-1 form), zero outside ``neg_mask``.
        See :func:`similarity_scores`, :func:`uncertainty_scores`, :func:`density_scores`.
    """
    _check_temperature(temperature)
    _check_beta(beta)
    _check_k(k)
    cand = z if candidates is None else candidates
    _check_pairs(z, cand, pos_index, neg_mask)
    _, cn, sim = _prepare(z, candidates, sim, detach)
    density = _density(cn, k, sim if candidates is None else None)
    return UnReMixScores(
        similarity=_similarity(sim, neg_mask, temperature, beta),
        uncertainty=_uncertainty(sim, pos_index, neg_mask, temperature),
        representativeness=representativeness_scores(density, neg_mask),
    )


__all__ = [
    "UnReMixScores", "unremix_scores", "similarity_scores", "uncertainty_scores", "density_scores",
    "representativeness_scores", "normalize_scores", "mix_scores",
]
