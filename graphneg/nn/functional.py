"""Fused gather ops for edge-level computations that store no ``[E, D]`` tensor for backward.

A plain PyG message such as ``(q_i * k_j).sum(-1)`` gathers two ``[E, D]`` tensors and autograd
keeps both alive until the backward pass. On a complete batch graph (``E = B^2``) every such
tensor costs as much as the official dense ``[B, B, D]`` tensor. The functions below compute the
same values but save only the node-level inputs (``[N, D]``) and the index vectors, and recompute
the gathers in the backward pass (``O(E * D)`` extra time, no extra memory). Each has a plain
reference formula in its docstring; ``tests/test_nn_functional.py`` checks values and gradients
against it (``torch.autograd.gradcheck`` in float64).

The fused edge MLP of :class:`~graphneg.nn.NodeToEdgeConv` and GCA-HNG's normalisation module
live in :mod:`graphneg.nn.edge_mlp`.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import scatter


def _add_rows_(out: Tensor, index: Tensor, src: Tensor) -> Tensor:
    """``out.index_add_(0, index, src)`` via ``scatter_add_`` with an expanded index, whose CPU
    kernel is parallel (``index_add_`` runs one row at a time on CPU). ``src`` is cast to
    ``out``'s dtype (under autocast a gradient can come in another dtype than its input)."""
    shape = (-1,) + (1,) * (src.dim() - 1)
    return out.scatter_add_(0, index.view(shape).expand_as(src), src.to(out.dtype))


def _index_add(size_like: Tensor, index: Optional[Tensor], src: Tensor) -> Tensor:
    if index is None:
        return src
    return _add_rows_(torch.zeros_like(size_like), index, src)


#: elements per row chunk of the chunked edge-level functions: 2**20 float32 values = 4 MiB per
#: temporary (512 rows of the edge MLP's 4D = 2,048 hidden channels at D = 512). Temporaries of
#: a whole ``[E, 4D]`` or ``[P, D]`` size would otherwise set the step's peak memory in backward.
CHUNK_ELEMENTS = 2 ** 20


def row_chunk(width: int, chunk_size: Optional[int] = None) -> int:
    """Rows per chunk: ``chunk_size`` if given, else ``CHUNK_ELEMENTS // width`` (at least 1)."""
    if chunk_size is not None:
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be a positive number of rows, got {chunk_size}")
        return int(chunk_size)
    return max(1, CHUNK_ELEMENTS // max(int(width), 1))


def row_slices(n: int, chunk: int):
    """``slice`` objects covering ``range(n)`` in consecutive chunks of ``chunk`` rows."""
    return (slice(start, min(start + chunk, n)) for start in range(0, n, chunk))


def _take(x: Tensor, index: Optional[Tensor]) -> Tensor:
    return x if index is None else x.index_select(0, index)


class _GatherMul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, index_a, index_b):
        ctx.save_for_backward(x, index_a, index_b)
        return x.index_select(0, index_a) * x.index_select(0, index_b)

    @staticmethod
    def backward(ctx, grad):
        x, index_a, index_b = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        gx = torch.zeros_like(x)
        _add_rows_(gx, index_a, grad * x.index_select(0, index_b))
        _add_rows_(gx, index_b, grad * x.index_select(0, index_a))
        return gx, None, None


def gather_mul(x: Tensor, index_a: Tensor, index_b: Tensor) -> Tensor:
    """``x[index_a] * x[index_b]`` (shape ``[E, *]``), saving only ``x`` for backward."""
    return _GatherMul.apply(x, index_a, index_b)


class _GatherDot(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, index_a, b, index_b):
        ctx.save_for_backward(a, index_a, b, index_b)
        ctx.has_ia, ctx.has_ib = index_a is not None, index_b is not None
        return (_take(a, index_a) * _take(b, index_b)).sum(dim=-1)

    @staticmethod
    def backward(ctx, grad):
        a, index_a, b, index_b = ctx.saved_tensors
        index_a = index_a if ctx.has_ia else None
        index_b = index_b if ctx.has_ib else None
        g = grad.unsqueeze(-1)
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = _index_add(a, index_a, g * _take(b, index_b))
        if ctx.needs_input_grad[2]:
            gb = _index_add(b, index_b, g * _take(a, index_a))
        return ga, None, gb, None


def gather_dot(a: Tensor, index_a: Optional[Tensor], b: Tensor, index_b: Optional[Tensor]) -> Tensor:
    """``(a[index_a] * b[index_b]).sum(-1)``; an index of ``None`` means "already per edge".

    Shapes: ``a`` ``[Na, *S, C]``, ``b`` ``[Nb, *S, C]``, output ``[E, *S]``.
    """
    return _GatherDot.apply(a, index_a, b, index_b)


class _GatherScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, index, w):
        ctx.save_for_backward(v, index, w)
        return v.index_select(0, index) * w.unsqueeze(-1)

    @staticmethod
    def backward(ctx, grad):
        v, index, w = ctx.saved_tensors
        gv = gw = None
        if ctx.needs_input_grad[0]:
            gv = _add_rows_(torch.zeros_like(v), index, grad * w.unsqueeze(-1))
        if ctx.needs_input_grad[2]:
            gw = (grad * v.index_select(0, index)).sum(dim=-1)
        return gv, None, gw


def gather_scale(v: Tensor, index: Tensor, w: Tensor) -> Tensor:
    """``v[index] * w[..., None]``. Shapes: ``v`` ``[N, *S, C]``, ``w`` ``[E, *S]`` -> ``[E, *S, C]``."""
    return _GatherScale.apply(v, index, w)


class _GatherDistance(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, index_a, index_b, eps):
        dist = torch.linalg.vector_norm(
            x.index_select(0, index_a) - x.index_select(0, index_b) + eps, dim=-1)
        ctx.save_for_backward(x, index_a, index_b, dist)
        ctx.eps = eps
        return dist

    @staticmethod
    def backward(ctx, grad):
        x, index_a, index_b, dist = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        diff = x.index_select(0, index_a) - x.index_select(0, index_b) + ctx.eps
        g = diff * (grad / dist.clamp_min(torch.finfo(dist.dtype).tiny)).unsqueeze(-1)
        gx = torch.zeros_like(x)
        _add_rows_(gx, index_a, g)
        _add_rows_(gx, index_b, -g)
        return gx, None, None, None


def gather_distance(x: Tensor, index_a: Tensor, index_b: Tensor, eps: float = 1e-6) -> Tensor:
    """``F.pairwise_distance(x[index_a], x[index_b], eps=eps)`` (``||x_a - x_b + eps||_2``), ``[E]``."""
    return _GatherDistance.apply(x, index_a, index_b, float(eps))


def _lerp_weight(rho: Tensor, lam: Tensor, index_lam: Tensor, scale: float):
    """``(lam[index_lam], (1 - rho) * scale, r)`` with ``r = rho + (1 - rho) * scale * lam[index_lam]``,
    the channel-wise interpolation weight of :func:`gather_lerp` (forward and backward)."""
    lam_e = lam.index_select(0, index_lam)
    coef = (1.0 - rho) * scale
    return lam_e, coef, torch.addcmul(rho.unsqueeze(1), coef.unsqueeze(1), lam_e)


class _GatherLerp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, index_a, index_b, rho, lam, index_lam, scale, chunk):
        p = index_a.size(0)
        out = x.new_empty(p, x.size(1))
        for sl in row_slices(p, chunk):  # row chunks: no [P, D] temporary besides the output
            _, _, r = _lerp_weight(rho[sl], lam, index_lam[sl], scale)
            torch.lerp(x.index_select(0, index_a[sl]), x.index_select(0, index_b[sl]), r, out=out[sl])
        ctx.save_for_backward(x, index_a, index_b, rho, lam, index_lam)
        ctx.scale, ctx.chunk = scale, chunk
        return out

    @staticmethod
    def backward(ctx, grad):
        x, index_a, index_b, rho, lam, index_lam = ctx.saved_tensors
        scale, need = ctx.scale, ctx.needs_input_grad
        gx = torch.zeros_like(x) if need[0] else None
        grho = torch.empty_like(rho) if need[3] else None
        glam = torch.zeros_like(lam) if need[4] else None
        for sl in row_slices(index_a.size(0), ctx.chunk):
            g, ia, ib = grad[sl], index_a[sl], index_b[sl]
            lam_e, coef, r = _lerp_weight(rho[sl], lam, index_lam[sl], scale)
            if gx is not None:
                _add_rows_(gx, ib, g * r)
                _add_rows_(gx, ia, g - g * r)  # g * (1 - r)
            if grho is not None or glam is not None:
                gr = g * (x.index_select(0, ib) - x.index_select(0, ia))
                if grho is not None:
                    grho[sl] = (gr * (1.0 - scale * lam_e)).sum(dim=-1)
                if glam is not None:
                    _add_rows_(glam, index_lam[sl], gr.mul_(coef.unsqueeze(1)))
        return gx, None, None, grho, glam, None, None, None


def gather_lerp(
    x: Tensor, index_a: Tensor, index_b: Tensor, rho: Tensor, lam: Tensor, index_lam: Tensor,
    scale: Union[float, Tensor] = 1.0,
) -> Tensor:
    r"""Channel-wise interpolation ``x[a] + r * (x[b] - x[a])`` with
    ``r = rho + (1 - rho) * scale * lam[index_lam]`` (``torch.lerp``), shape ``[P, D]``.

    ``scale`` is a constant (no gradient). ``rho`` ``[P]``, ``lam`` ``[E, D]``. Forward and
    backward run in row chunks (:data:`CHUNK_ELEMENTS`), so besides the output and the gradients no
    ``[P, D]`` temporary exists; only ``x``, ``lam`` and the ``[P]`` vectors are kept for backward.
    """
    if isinstance(scale, Tensor):
        scale = scale.detach()
    return _GatherLerp.apply(x, index_a, index_b, rho, lam, index_lam, scale, row_chunk(x.size(1)))


def batch_norm_linear(x: Tensor, bn: nn.BatchNorm1d, lin: nn.Linear) -> Tensor:
    r"""``lin(bn(x))`` with the BatchNorm folded into the linear layer: no ``[E, D]`` BatchNorm output.

    .. math::
        \mathrm{BN}(x) = a \odot x + c,\quad a = \frac{\gamma}{\sqrt{\sigma^2 + \epsilon}},\quad
        c = \beta - a \odot \mu,\qquad
        W\,\mathrm{BN}(x) + b = x\,(W \operatorname{diag} a)^\top + (W c + b),

    with :math:`\mu, \sigma^2` the biased batch statistics of ``x`` in training mode (and the
    running statistics updated exactly as :class:`torch.nn.BatchNorm1d` does: momentum, or the
    cumulative average when ``momentum is None``, unbiased variance) and the running statistics
    otherwise (Ioffe & Szegedy 2015, Eq. of Alg. 1; the folding is the standard inference-time
    "BN folding", used here in training too). Autograd then keeps only ``x`` (which the batch
    statistics need anyway) for backward, not the ``[E, D]`` normalised tensor that
    ``lin(bn(x))`` keeps: on a complete batch graph that is one ``[B^2, D]`` tensor less.
    Same values as ``lin(bn(x))`` up to float rounding; ``tests/test_nn_layers.py`` checks values,
    gradients and running statistics against the two modules.

    Shapes: ``x`` ``[N, C]`` (``bn`` over ``C`` features) -> ``[N, lin.out_features]``.
    """
    use_batch = bn.training or not bn.track_running_stats or bn.running_mean is None
    if use_batch:
        if x.size(0) < 2:
            raise ValueError(
                f"batch statistics need more than 1 row per channel, got input of shape {tuple(x.shape)}; "
                "use a larger batch or put the module in eval mode")
        var, mean = torch.var_mean(x, dim=0, unbiased=False)
        if bn.training and bn.track_running_stats and bn.running_mean is not None:
            with torch.no_grad():
                bn.num_batches_tracked.add_(1)
                m = (1.0 / float(bn.num_batches_tracked)) if bn.momentum is None else bn.momentum
                n = x.size(0)
                bn.running_mean.mul_(1.0 - m).add_(mean.detach(), alpha=m)
                bn.running_var.mul_(1.0 - m).add_(var.detach() * (n / (n - 1)), alpha=m)
    else:
        mean, var = bn.running_mean, bn.running_var
    a = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        a = a * bn.weight
    c = -mean * a
    if bn.bias is not None:
        c = c + bn.bias
    weight = lin.weight * a  # [out, C]: W diag(a)
    bias = lin.weight @ c
    if lin.bias is not None:
        bias = bias + lin.bias
    return F.linear(x, weight, bias)


class _SquaredDeviationSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, mean, index, chunk):
        total = x.new_zeros(())
        for start in range(0, x.size(0), chunk):
            sl = slice(start, min(start + chunk, x.size(0)))
            total += (x[sl] - mean.index_select(0, index[sl])).pow(2).sum()
        ctx.save_for_backward(x, mean, index)
        ctx.chunk = chunk
        return total

    @staticmethod
    def backward(ctx, grad):
        x, mean, index = ctx.saved_tensors
        gx = None
        if ctx.needs_input_grad[0]:
            gx = torch.empty_like(x)
            for start in range(0, x.size(0), ctx.chunk):
                sl = slice(start, min(start + ctx.chunk, x.size(0)))
                torch.mul(x[sl] - mean.index_select(0, index[sl]), 2.0 * grad, out=gx[sl])
        return gx, None, None, None


def group_squared_deviation(x: Tensor, index: Tensor, num_groups: int,
                            chunk_size: Optional[int] = None) -> Tensor:
    r"""Sum of squared deviations of the rows of ``x`` from their group means, a scalar:

    .. math:: S = \sum_e \lVert x_e - \bar x_{g(e)}\rVert^2,\qquad
              \bar x_g = \operatorname{mean}_{e : g(e) = g} x_e,\qquad
              \frac{\partial S}{\partial x_e} = 2\,(x_e - \bar x_{g(e)})

    (the terms through :math:`\bar x` cancel because deviations sum to zero within each group).
    Computed in row chunks, saving only ``x`` and the ``[G, D]`` means for backward, so no
    ``[E, D]`` deviation tensor is kept or materialised. Equal to
    ``(x - scatter_mean(x, index)[index]).pow(2).sum()`` (tested, values and gradients).

    Shapes: ``x`` ``[E, D]``, ``index`` ``[E]`` (group of each row) -> scalar.
    """
    mean = scatter(x.detach(), index, dim=0, dim_size=num_groups, reduce="mean")
    return _SquaredDeviationSum.apply(x, mean, index, row_chunk(x.size(1), chunk_size))


def gather_cosine(a: Tensor, index: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    r"""``F.cosine_similarity(a[index], b, dim=1, eps=eps)`` without the gathered ``[P, D]`` copy of ``a``.

    .. math:: \cos_p = \frac{\langle a_{i(p)}, b_p\rangle}{\max(\lVert a_{i(p)}\rVert, \epsilon)\,
              \max(\lVert b_p\rVert, \epsilon)}

    (the formula of :func:`torch.nn.functional.cosine_similarity`). The dot product is a
    :func:`gather_dot`, which keeps only ``a`` and ``b`` for backward.

    Shapes: ``a`` ``[N, D]``, ``index`` ``[P]``, ``b`` ``[P, D]`` -> ``[P]``.
    """
    na = torch.linalg.vector_norm(a, dim=1).clamp_min(eps).index_select(0, index)
    nb = torch.linalg.vector_norm(b, dim=1).clamp_min(eps)
    return gather_dot(a, index, b, None) / (na * nb)


__all__ = ["gather_mul", "gather_dot", "gather_scale", "gather_distance", "gather_lerp", "batch_norm_linear",
           "group_squared_deviation", "gather_cosine", "row_chunk", "row_slices", "CHUNK_ELEMENTS"]
