"""The generation step of GCA-HNG as functions: HDML interpolation and the random mixing weights.

Peng et al., "Globally Correlation-Aware Hard Negative Generation" (IJCV / arXiv 2024); official code
github.com/PWenJay/GCA-HNG, ``scripts/models.py`` ``GeneralPulling``. Used by
:class:`graphneg.nn.GCAHNG`; each function works on plain tensors and is tested against a loop written
from the official code in ``tests/test_generator.py``.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.utils import scatter

from graphneg.nn.functional import gather_lerp

__all__ = ["hdml_interpolate", "chain_weights", "dirichlet_weights", "rank_within_groups"]


def rank_within_groups(group: Tensor, key: Tensor, num_groups: int, key_range: int) -> Tuple[Tensor, Tensor]:
    """Rank of each element within its group ordered by ``key`` (``key < key_range``), and the group sizes
    ``[num_groups]``; no Python loop (one sort)."""
    perm = torch.argsort(group * key_range + key)
    counts = torch.bincount(group, minlength=num_groups)
    starts = counts.cumsum(0) - counts
    rank = torch.empty_like(group)
    rank[perm] = torch.arange(group.numel(), device=group.device) - starts.index_select(
        0, group.index_select(0, perm))
    return rank, counts


def _uniform(shape, generator: Optional[torch.Generator], device, dtype) -> Tensor:
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device, dtype=dtype).to(device)


def chain_weights(
    step: Tensor, size: Tensor, chunk: Tensor, generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    r"""Convex weights equivalent to the official chained random mixing.

    Official ``GeneralPulling``: for the anchors of chunk ``id`` and one class, the generated
    negatives :math:`\hat{z}_0, \dots, \hat{z}_{K-1}` (one per chunk, in order) are mixed as
    ``tmp = z_0``; ``tmp = z_t + u_t (tmp - z_t)`` for ``t = 1..K-1``, with one
    ``np.random.random()`` per step shared by all anchors of the chunk and all classes. The
    result is :math:`\sum_t w_t \hat{z}_t` with

    .. math:: w_0 = \prod_{s=1}^{K-1} u_s,\qquad
              w_t = (1 - u_t) \prod_{s=t+1}^{K-1} u_s \quad (t \ge 1),

    which sum to 1. Draws: ``u = torch.rand(R, T, generator=generator)`` with ``R`` = number of
    chunks (max ``chunk`` + 1) and ``T = max(size) - 1``; ``u[r, t - 1]`` is the draw of step
    ``t`` for anchors of chunk ``r`` (the official draw order). Products are taken in log space.

    Args:
        step: position ``t`` of each pair within its (anchor, class) group ``[P]``.
        size: size ``K`` of the pair's group ``[P]``.
        chunk: chunk (rank in class) ``r`` of the pair's anchor ``[P]``.

    Returns:
        weights ``[P]``.
    """
    num_steps = int(size.max()) - 1 if size.numel() else 0
    if num_steps <= 0:
        return torch.ones(step.shape, dtype=dtype, device=step.device)
    num_chunks = int(chunk.max()) + 1
    u = _uniform((num_chunks, num_steps), generator, step.device, dtype)
    log_u = u.clamp_min(torch.finfo(dtype).tiny).log()
    cum = torch.cat([torch.zeros(num_chunks, 1, dtype=dtype, device=step.device),
                     log_u.cumsum(dim=1)], dim=1)  # cum[r, t] = sum_{s<=t} log u_s
    tail = (cum[chunk, size - 1] - cum[chunk, step]).exp()
    head = torch.where(step == 0, torch.ones_like(tail), 1.0 - u[chunk, (step - 1).clamp_min(0)])
    return head * tail


def dirichlet_weights(
    group: Tensor, num_groups: int, generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Flat Dirichlet(1, ..., 1) weights within each group (normalised i.i.d. Exp(1) draws).

    Reconstructed alternative to the chain (not in the official code): the chain's weights are
    not exchangeable (later samples get larger expected weight); Dirichlet(1) is uniform on the
    simplex. ``u = torch.rand(P, generator=generator)``, ``w = -log(1 - u)`` normalised per group.
    """
    u = _uniform(group.shape, generator, group.device, dtype)
    e = -torch.log1p(-u)
    total = scatter(e, group, dim=0, dim_size=num_groups, reduce="sum")
    return e / total.clamp_min(torch.finfo(dtype).tiny).index_select(0, group)


def hdml_interpolate(
    anchor: Tensor, negative: Tensor, d_pos: Tensor, d_neg: Tensor, lam: Tensor,
    scale: Union[float, Tensor] = 1.0, eps: float = 1e-12, *,
    anchor_index: Optional[Tensor] = None, negative_index: Optional[Tensor] = None,
    lam_index: Optional[Tensor] = None,
):
    r"""Channel-adaptive HDML interpolation (official ``GeneralPulling.forward``).

    .. math::
        \lambda' = \lambda\,e^{-\alpha/J_m},\quad
        r = \frac{d^+ + (d^- - d^+)\lambda'}{d^-},\quad
        \tilde{z} = \begin{cases} z_a + r \odot (z_n - z_a) & d^+ < d^-\\ z_n & d^+ \ge d^-\end{cases}

    (Peng et al. Eq. (generation); Zheng et al., HDML, CVPR 2019, Eq. 4, made channel-wise.)
    Written as ``r = rho + (1 - rho) * scale * lam`` with ``rho = d+/d-`` (``rho = 1`` where
    ``d+ >= d-``, which gives exactly ``r = 1`` and ``z~ = z_n`` with zero gradient to ``lam``,
    like the official masks) and ``z~ = lerp(z_a, z_n, r)``; since ``r in [d+/d-, 1]``,
    ``z~`` lies channel-wise on the segment from ``z_a`` to ``z_n``. The one implementation used
    by :class:`GCAHNG`; the per-channel part runs in the fused
    :func:`graphneg.nn.functional.gather_lerp` (no ``[P, D]`` gather is kept for backward).

    Shapes: per pair, ``anchor, negative, lam`` :math:`(P, D)`; ``d_pos, d_neg`` :math:`(P,)`;
    returns ``(z~ (P, D), hard (P,))``. With ``anchor_index`` / ``negative_index`` (``[P]``),
    ``anchor`` and ``negative`` are node tensors (may be the same tensor) read at those rows, and
    with ``lam_index`` ``lam`` is an edge tensor read at those rows (``lam[lam_index]``).
    """
    hard = d_pos < d_neg
    rho = torch.where(hard, d_pos / d_neg.clamp_min(eps), torch.ones_like(d_pos))
    p, device = d_pos.numel(), d_pos.device
    ia = torch.arange(p, device=device) if anchor_index is None else anchor_index
    ib = torch.arange(p, device=device) if negative_index is None else negative_index
    il = torch.arange(p, device=device) if lam_index is None else lam_index
    if anchor is negative:
        x = anchor
    else:  # one node tensor: negatives follow the anchors
        x = torch.cat([anchor, negative])
        ib = ib + anchor.size(0)
    return gather_lerp(x, ia, ib, rho, lam, il, scale), hard
