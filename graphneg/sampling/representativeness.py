r"""UnReMix representativeness: a per-candidate score from the batch kNN graph (reconstructed).

UnReMix (Tabassum et al., "Hard Negative Sampling Strategies for Contrastive Representation Learning",
arXiv 2206.01197) names *representativeness* as one of its three signals; its full text and code are
not public, so the formulas here are **reconstructions** (see each docstring). Both directions are
read off the same neighbourhood: the ``k`` most cosine-similar other candidates of each candidate on
the batch kNN graph, found by the one kNN kernel of graphneg,
:func:`graphneg.ops.knn.chunked_topk` (chunked, device-agnostic, ties broken by the lowest index, no
host synchronisation):

* ``"diversity"`` (the default of :class:`graphneg.losses.UnReMixLoss`): mean cosine *distance* to
  those neighbours, :func:`diversity_scores`; an isolated negative scores highest. Direction source:
  the paper's overview figure (authors' lab site repository PLAN-Lab/plan-lab.github.io,
  ``assets/images/publications/unremix.png``) gives the highest representativeness to the negative
  least like the others;
* ``"density"``: exponential of the mean cosine *similarity* to them, :func:`density_scores`; a
  negative in a dense region scores highest (the first reconstruction, kept as an option).

Notation: ``C`` candidates ``[C, D]`` (L2-normalised here), ``partner`` ``[C]`` the column of each
candidate's own positive view (``-1`` for none), which the diversity leaves out of the neighbourhood
(it is an augmentation of the same sample, not another negative).
"""
from __future__ import annotations

import warnings
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from graphneg.ops.knn import chunked_topk
from graphneg.validation import (
    check_choice, check_embeddings, check_neighbours, check_partner,
)

__all__ = [
    "REPRESENTATIVENESS", "check_neighbours", "neighbour_similarities", "pair_groups", "density_scores",
    "diversity_scores", "representativeness_vector", "candidate_representativeness",
    "representativeness_scores",
]

#: Representativeness directions of :func:`candidate_representativeness` / ``UnReMixLoss``.
REPRESENTATIVENESS = ("diversity", "density")


def pair_groups(partner: Tensor) -> Tensor:
    """``[C]`` group id of every candidate: a candidate and its ``partner`` share ``min(j, partner_j)``,
    a candidate without partner (``-1``) is its own group. ``partner`` must be an involution
    (``partner[partner[j]] == j``), as the two views of a sample are. No host synchronisation."""
    rows = torch.arange(partner.numel(), device=partner.device)
    return torch.where(partner >= 0, torch.minimum(rows, partner), rows)


def neighbour_similarities(cn: Tensor, k: int, groups: Optional[Tensor] = None,
                           chunk_size: int = 1024) -> Tuple[Tensor, Tensor]:
    """Cosine similarities of every node to its ``k`` nearest other nodes on the batch kNN graph.

    One call of :func:`graphneg.ops.knn.chunked_topk` (``score="dot"`` on the unit-norm ``cn``,
    ``[chunk_size, C]`` blocks, self excluded; with ``groups`` every node of the same group is
    excluded too, e.g. :func:`pair_groups` to drop a candidate's own positive view). No checks
    (``cn`` is ``[C, D]`` and L2-normalised), no host synchronisation; differentiable through the
    returned similarities.

    Returns:
        ``(sims [C, k'], valid [C, k'])`` with ``k' = min(k, C - 1)``: ``valid`` is ``False`` for the
        last columns of a node with fewer than ``k'`` allowed neighbours (their ``sims`` are 0).
    """
    c = cn.size(0)
    k_eff = min(int(k), c - 1)
    if k_eff <= 0:
        return cn.new_zeros(c, 0), torch.zeros(c, 0, dtype=torch.bool, device=cn.device)
    vals = [val for _, val, _ in chunked_topk(
        cn, cn, k_eff, score="dot", exclude_self=True, query_labels=groups, ref_labels=groups,
        exclude_same_label=groups is not None, chunk_size=chunk_size,
    )]
    val = torch.cat(vals) if len(vals) > 1 else vals[0]
    valid = torch.isfinite(val)
    return torch.where(valid, val, torch.zeros_like(val)), valid


def _masked_row_mean(values: Tensor, valid: Tensor) -> Tensor:
    count = valid.sum(dim=1).to(values.dtype)
    return values.sum(dim=1) / count.clamp_min(1.0), count


def _density(cn: Tensor, k: Optional[int], chunk_size: int = 1024) -> Tensor:
    k = max(cn.size(0) - 1, 1) if k is None else k
    sims, valid = neighbour_similarities(cn, k, chunk_size=chunk_size)
    mean_sim, _ = _masked_row_mean(sims, valid)  # a node without neighbours: 0, density exp(0) = 1
    return torch.exp(mean_sim)


def density_scores(z: Tensor, k: Optional[int] = 10, sim: Optional[Tensor] = None,
                   detach: bool = True) -> Tensor:
    r"""Per-node neighbourhood density on the batch kNN graph (representativeness ``"density"``, reconstructed).

    .. math:: r_j = \exp\Big(\frac{1}{|\mathcal N_k(j)|} \sum_{l \in \mathcal N_k(j)} s_{jl}\Big)

    with :math:`\mathcal N_k(j)` the ``k`` most cosine-similar other nodes of ``j``
    (:func:`neighbour_similarities`, i.e. :func:`graphneg.ops.knn.chunked_topk`; the same edges as
    :func:`graphneg.ops.knn.knn_index`).

    Reconstruction and reasoning: representativeness read as typicality, the density of a point
    among its neighbours being the standard proxy (k-NN density estimation, density-weighted active
    learning). We take the exponential of the mean cosine similarity, the geometric mean of the von
    Mises-Fisher kernel :math:`e^{s}` (bandwidth 1) over the neighbours, because (i) the score must be
    strictly positive so that the per-anchor mean-1 normalisation is always defined, and (ii) it is
    bounded in :math:`[e^{-1}, e]`, so an outlier is down-weighted by at most :math:`e^2 \approx 7.4`
    and never dropped; the bandwidth is independent of the loss temperature. A node without
    neighbours (a batch of one) gets ``exp(0) = 1``. This is the opposite direction of the paper's
    figure (see the module docstring); :func:`diversity_scores` follows the figure.

    Args:
        z: node embeddings ``[N, D]`` (normalised here).
        k: neighbours per node, ``>= 1`` (nodes with fewer candidates keep all of them); ``None``:
            all other nodes.
        sim: deprecated and ignored (the kernel computes the similarities block by block; a
            precomputed matrix saves one ``[N, D] x [D, N]`` product, small next to the loss).
        detach: compute from detached embeddings (default).

    Returns:
        ``[N]`` densities in ``[1/e, e]``.
    """
    k = check_neighbours(k)
    check_embeddings(z, "z")
    if sim is not None:
        warnings.warn("density_scores(sim=...) is deprecated and ignored: the kNN kernel "
                      "(graphneg.ops.knn.chunked_topk) computes the similarities", FutureWarning, stacklevel=2)
    zn = F.normalize(z.detach() if detach else z, dim=-1)
    return _density(zn, k)


def _diversity(cn: Tensor, k: Optional[int], partner: Optional[Tensor], block_size: int = 1024) -> Tensor:
    c = cn.size(0)
    rows_all = torch.arange(c, device=cn.device)
    if partner is None:
        partner = torch.full((c,), -1, dtype=torch.long, device=cn.device)
    if k is None:
        # sum_l <c_j, c_l> over l != j, partner(j) without the C x C matrix: <c_j, sum_l c_l> - self - partner
        has = partner >= 0
        pcol = torch.where(has, partner, rows_all)
        total = cn.sum(dim=0)
        self_sq = (cn * cn).sum(dim=-1)
        partner_sim = (cn * cn.index_select(0, pcol)).sum(dim=-1) * has.to(cn.dtype)
        count = (c - 1) - has.to(cn.dtype)
        mean_cos = (cn @ total - self_sq - partner_sim) / count.clamp_min(1.0)
        return torch.where(count > 0, 1.0 - mean_cos, torch.zeros_like(mean_cos))
    sims, valid = neighbour_similarities(cn, k, pair_groups(partner), chunk_size=block_size)
    dist, _ = _masked_row_mean(torch.where(valid, 1.0 - sims, torch.zeros_like(sims)), valid)
    return dist  # a node without allowed neighbours: 0


def diversity_scores(z: Tensor, k: Optional[int] = None, partner: Optional[Tensor] = None,
                     detach: bool = True) -> Tensor:
    r"""Per-candidate diversity: mean cosine distance to the nearest other candidates (reconstructed).

    .. math:: d_j = \frac{1}{|\mathcal O(j)|} \sum_{l \in \mathcal O(j)} \big(1 - \cos(z_j, z_l)\big)

    with :math:`\mathcal O(j)`, with ``k`` set, ``j``'s ``k`` nearest neighbours on the batch kNN
    graph (:func:`neighbour_similarities`: :func:`graphneg.ops.knn.chunked_topk` with ``j`` itself and
    ``j``'s own positive view excluded), the *neighbourhood form* and :class:`graphneg.losses.UnReMixLoss`'s
    default (``k=10``); with ``k=None`` all other candidates except those two.

    Source of the direction: the paper's overview figure (PLAN-Lab/plan-lab.github.io,
    ``assets/images/publications/unremix.png``) gives the highest representativeness to the negative
    least like the others; the revised paper (UnDiMix, "uncertainty and diversity mixing") and a summary
    of the first version ("far from each other") say the same. The exact form is not public: the cosine
    distance on the unit sphere, the kNN neighbourhood and the exclusion of the positive view are ours.
    graphneg's own study (``experiments/results/unremix_study.md``, full mix, 5 seeds) measured the
    diversity direction level with or above density on its three datasets (+0.2, +0.4, +0.5 points;
    that study used ``k=None``).

    Cost: ``k=None`` is exact in :math:`O(CD)` through the candidate sum,
    :math:`\sum_{l \ne j} \langle z_j, z_l \rangle = \langle z_j, \sum_l z_l \rangle - \lVert z_j
    \rVert^2`; the kNN form scores ``[1024, C]`` row blocks. Values lie in ``[0, 2]``; a candidate
    with no other candidate gets 0.

    Args:
        z: candidate embeddings ``[C, D]`` (normalised here).
        k: neighbours per node (``None``: all other candidates).
        partner: ``[C]`` column of each candidate's own positive view, ``-1`` for none (e.g.
            ``(j + B) mod 2B`` for two stacked views of ``B`` samples, then ``-1`` for extra negatives);
            must pair both ways (``partner[partner[j]] == j``). ``None``: no candidate has a partner.
        detach: compute from detached embeddings (default).

    Returns:
        ``[C]`` diversities.
    """
    k = check_neighbours(k)
    check_embeddings(z, "z")
    if partner is not None:
        check_partner(partner, z.size(0))
    zn = F.normalize(z.detach() if detach else z, dim=-1)
    return _diversity(zn, k, None if partner is None else partner.long())


def representativeness_vector(cn: Tensor, representativeness: str, k: Optional[int],
                              partner: Optional[Tensor] = None) -> Tensor:
    """``[C]`` representativeness of unit-norm candidates ``cn`` (no checks: the building block of
    :func:`candidate_representativeness` and :func:`graphneg.sampling.unremix_components`)."""
    if representativeness == "density":
        return _density(cn, k)
    return _diversity(cn, k, partner)


def candidate_representativeness(z: Tensor, representativeness: str = "diversity", k: Optional[int] = 10,
                                 partner: Optional[Tensor] = None, sim: Optional[Tensor] = None,
                                 detach: bool = True) -> Tensor:
    """Per-candidate representativeness ``[C]``: :func:`diversity_scores` (``"diversity"``, the default)
    or :func:`density_scores` (``"density"``) of the candidates ``z``; broadcast to pairs with
    :func:`representativeness_scores`. ``partner`` is used by the diversity; ``sim`` is deprecated and
    ignored."""
    check_choice("representativeness", representativeness, REPRESENTATIVENESS)
    if representativeness == "density":
        return density_scores(z, k, sim, detach)
    return diversity_scores(z, k, partner, detach)


def representativeness_scores(density: Tensor, neg_mask: Tensor) -> Tensor:
    r"""Broadcast a per-candidate score ``[C]`` to pairs: :math:`w^{rep}_{ij} = r_j` on ``neg_mask``.

    ``density`` is any per-candidate representativeness (a diversity or a density vector).
    Representativeness is a property of the negative alone, the same for all anchors; zero outside
    ``neg_mask``.
    """
    if density.dim() != 1 or density.numel() != neg_mask.size(1):
        raise ValueError(
            f"density must be a vector with one entry per candidate column ([{neg_mask.size(1)}]), "
            f"got shape {tuple(density.shape)}"
        )
    return density[None, :].expand_as(neg_mask).masked_fill(~neg_mask, 0.0)
