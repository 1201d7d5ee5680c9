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
from graphneg.ops.random import counter_uniform, draw_seed

__all__ = ["hdml_interpolate", "chain_weights", "dirichlet_weights", "rank_within_groups", "static_groups"]


def static_groups(key: Tensor, present: Tensor, rows: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Number the distinct ``key`` values of the ``present`` elements ``0, 1, ...`` in increasing key order
    (``torch.unique(key[present], return_inverse=True)``'s numbering) into a static number of ``rows``
    (``>=`` the number of distinct keys), without a host sync: one stable sort and a cumsum.

    Reconstructed for GCA-HNG's padded layout: the (anchor, negative class) groups of its random
    weighting, whose count depends on the labels. Returns ``group`` ``[P]`` (the row of each element;
    ``rows`` for the absent ones), ``mask`` ``[rows]`` (rows that hold a group: the first ones) and
    ``row_key`` ``[rows]`` (each row's key, ``-1`` on the others). ``key`` must be ``>= 0``.
    """
    absent = torch.iinfo(key.dtype).max
    key = torch.where(present, key, torch.full_like(key, absent))
    sorted_key, order = torch.sort(key, stable=True)
    new_run = torch.ones_like(sorted_key, dtype=torch.bool)
    new_run[1:] = sorted_key[1:] != sorted_key[:-1]
    real = sorted_key != absent
    run = torch.where(real, new_run.cumsum(0) - 1, torch.full_like(sorted_key, rows))
    group = torch.empty_like(run).index_copy_(0, order, run)
    num_rows = (new_run & real).sum()  # 0-d tensor: the number of groups
    mask = torch.arange(rows, device=key.device) < num_rows
    row_key = key.new_full((rows + 1,), -1).scatter_(0, group, torch.where(present, key, -1))[:rows]
    return group, mask, row_key


def rank_within_groups(group: Tensor, key: Tensor, num_groups: int, key_range: int) -> Tuple[Tensor, Tensor]:
    """Rank of each element within its group ordered by ``key`` (``key < key_range``), and the group sizes
    ``[num_groups]``; no Python loop (one sort)."""
    perm = torch.argsort(group * key_range + key)
    counts = torch.zeros(num_groups, dtype=group.dtype, device=group.device).index_add_(
        0, group, torch.ones_like(group))  # bincount without its host sync (num_groups is given)
    starts = counts.cumsum(0) - counts
    rank = torch.empty_like(group)
    rank[perm] = torch.arange(group.numel(), device=group.device) - starts.index_select(
        0, group.index_select(0, perm))
    return rank, counts


def _segment_prefix_and_total(values: Tensor, group: Tensor, order: Tensor) -> Tuple[Tensor, Tensor]:
    """Inclusive prefix sums of ``values`` within each group, and each element's group total, where
    ``order`` is a permutation that sorts the elements by group, then by position in the group; one
    cumsum, no Python loop, no host sync."""
    vs = values.index_select(0, order)
    gs = group.index_select(0, order)
    n = vs.numel()
    pos = torch.arange(n, device=vs.device)
    change = gs[1:] != gs[:-1]
    first = torch.cat([change.new_ones(1), change])
    last = torch.cat([change, change.new_ones(1)])
    start = torch.cummax(torch.where(first, pos, torch.zeros_like(pos)), dim=0).values
    end = torch.cummin(torch.where(last, pos, torch.full_like(pos, n - 1)).flip(0), dim=0).values.flip(0)
    cs = vs.cumsum(0)
    prefix = cs - cs.index_select(0, start) + vs.index_select(0, start)
    total = prefix.index_select(0, end)
    back = torch.empty_like(order).index_copy_(0, order, pos)  # position of each element in sorted order
    return prefix.index_select(0, back), total.index_select(0, back)


def chain_weights(
    step: Tensor, chunk: Tensor, generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float32, *, group: Tensor, seed: Optional[Tensor] = None,
) -> Tensor:
    r"""Convex weights equivalent to the official chained random mixing.

    Official ``GeneralPulling``: for the anchors of chunk ``id`` and one class, the generated
    negatives :math:`\hat{z}_0, \dots, \hat{z}_{K-1}` (one per chunk, in order) are mixed as
    ``tmp = z_0``; ``tmp = z_t + u_t (tmp - z_t)`` for ``t = 1..K-1``, with one
    ``np.random.random()`` per step shared by all anchors of the chunk and all classes. The
    result is :math:`\sum_t w_t \hat{z}_t` with

    .. math:: w_0 = \prod_{s=1}^{K-1} u_s,\qquad
              w_t = (1 - u_t) \prod_{s=t+1}^{K-1} u_s \quad (t \ge 1),

    which sum to 1. Draws: ``u_t`` of chunk ``r`` is
    ``graphneg.ops.random.counter_uniform(seed, r, t)``, a counter-based draw (a function of
    ``(seed, r, t)`` only), so every anchor of chunk ``r`` and every class share it as officially, and
    no draw table of data-dependent shape (hence no host sync) is needed; ``seed`` defaults to
    ``draw_seed(generator)``. Products are sums of logs within each group (one float64 segmented
    cumsum).

    Args:
        step: position ``t`` of each pair within its (anchor, class) group ``[P]`` (``0 .. K - 1``, each once).
        chunk: chunk (rank in class) ``r`` of the pair's anchor ``[P]``.
        group: the pair's group ``[P]`` (any integer ids; the pairs of one group share ``chunk``).
        seed: 0-d int64 seed tensor (default: drawn from ``generator``).

    Returns:
        weights ``[P]``.
    """
    if isinstance(generator, Tensor):
        raise TypeError("chain_weights(step, chunk, generator=None, dtype=..., *, group, seed=None): the group "
                        "sizes are no longer passed (the third argument is the torch.Generator); pass group=")
    if seed is None:
        seed = draw_seed(generator, step.device)
    if not step.numel():
        return torch.ones(step.shape, dtype=dtype, device=step.device)
    u = counter_uniform(seed, chunk, step, dtype=torch.float64)  # u_t of chunk r (t >= 1)
    later = step >= 1
    log_u = torch.where(later, u.log(), torch.zeros_like(u))
    order = torch.argsort(group * (step.numel() + 1) + step)  # by group, then step
    prefix, total = _segment_prefix_and_total(log_u, group, order)  # sum_{1<=s<=t}, sum_{1<=s<=K-1} log u_s
    tail = (total - prefix).exp()
    head = torch.where(later, 1.0 - u, torch.ones_like(u))
    return (head * tail).to(dtype)


def dirichlet_weights(
    group: Tensor, num_groups: int, generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float32, *, seed: Optional[Tensor] = None, counter: Optional[Tensor] = None,
) -> Tensor:
    """Flat Dirichlet(1, ..., 1) weights within each group (normalised i.i.d. Exp(1) draws).

    Reconstructed alternative to the chain (not in the official code): the chain's weights are
    not exchangeable (later samples get larger expected weight); Dirichlet(1) is uniform on the
    simplex. ``u = counter_uniform(seed, counter)`` (``counter`` default ``arange(P)``; the generator
    passes the pair's edge id), ``w = -log(1 - u)`` normalised per group; ``seed`` defaults to
    ``draw_seed(generator)``.
    """
    if seed is None:
        seed = draw_seed(generator, group.device)
    if counter is None:
        counter = torch.arange(group.numel(), device=group.device)
    u = counter_uniform(seed, counter, dtype=dtype)
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
