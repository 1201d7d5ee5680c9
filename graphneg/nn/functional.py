"""Fused gather ops for edge-level computations that store no ``[E, D]`` tensor for backward.

A plain PyG message such as ``(q_i * k_j).sum(-1)`` gathers two ``[E, D]`` tensors and autograd
keeps both alive until the backward pass. On a complete batch graph (``E = B^2``) every such
tensor costs as much as the official dense ``[B, B, D]`` tensor. The functions below compute the
same values but save only the node-level inputs (``[N, D]``) and the index vectors, and recompute
the gathers in the backward pass (``O(E * D)`` extra time, no extra memory). Each has a plain
reference formula in its docstring; ``tests/test_nn_layers.py`` checks values and gradients
against it (``torch.autograd.gradcheck`` in float64).

:func:`edge_mlp_update` fuses the edge MLP and the two residual normalisations of
:class:`~graphneg.nn.NodeToEdgeConv` the same way (it keeps 2 ``[E, D]`` and 1 ``[E, 4D]`` tensor
for backward and recomputes only element-wise ops); :func:`gca_norm` / :func:`reset_norm` are the
one definition of GCA-HNG's ``LayerNorm(GELU(x))`` module used by every layer.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _add_rows_(out: Tensor, index: Tensor, src: Tensor) -> Tensor:
    """``out.index_add_(0, index, src)`` via ``scatter_add_`` with an expanded index, whose CPU
    kernel is parallel (``index_add_`` runs one row at a time on CPU)."""
    shape = (-1,) + (1,) * (src.dim() - 1)
    return out.scatter_add_(0, index.view(shape).expand_as(src), src)


def _index_add(size_like: Tensor, index: Optional[Tensor], src: Tensor) -> Tensor:
    if index is None:
        return src
    return _add_rows_(torch.zeros_like(size_like), index, src)


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


class _GatherLerp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, index_a, index_b, rho, lam, index_lam, scale):
        coef = (1.0 - rho) * scale
        r = torch.addcmul(rho.unsqueeze(1), coef.unsqueeze(1), lam.index_select(0, index_lam))
        out = torch.lerp(x.index_select(0, index_a), x.index_select(0, index_b), r)
        ctx.save_for_backward(x, index_a, index_b, rho, lam, index_lam)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad):
        x, index_a, index_b, rho, lam, index_lam = ctx.saved_tensors
        scale = ctx.scale
        lam_e = lam.index_select(0, index_lam)
        coef = (1.0 - rho) * scale
        r = torch.addcmul(rho.unsqueeze(1), coef.unsqueeze(1), lam_e)
        gx = grho = glam = None
        if ctx.needs_input_grad[0]:
            gx = torch.zeros_like(x)
            _add_rows_(gx, index_a, grad * (1.0 - r))
            _add_rows_(gx, index_b, grad * r)
        if ctx.needs_input_grad[3] or ctx.needs_input_grad[4]:
            gr = grad * (x.index_select(0, index_b) - x.index_select(0, index_a))
            if ctx.needs_input_grad[3]:
                grho = (gr * (1.0 - scale * lam_e)).sum(dim=-1)
            if ctx.needs_input_grad[4]:
                glam = _add_rows_(torch.zeros_like(lam), index_lam, gr * coef.unsqueeze(1))
        return gx, None, None, grho, glam, None, None


def gather_lerp(
    x: Tensor, index_a: Tensor, index_b: Tensor, rho: Tensor, lam: Tensor, index_lam: Tensor,
    scale: Union[float, Tensor] = 1.0,
) -> Tensor:
    r"""Channel-wise interpolation ``x[a] + r * (x[b] - x[a])`` with
    ``r = rho + (1 - rho) * scale * lam[index_lam]`` (``torch.lerp``), shape ``[P, D]``.

    ``scale`` is a constant (no gradient). ``rho`` ``[P]``, ``lam`` ``[E, D]``.
    """
    if isinstance(scale, Tensor):
        scale = scale.detach()
    return _GatherLerp.apply(x, index_a, index_b, rho, lam, index_lam, scale)


def gca_norm(channels: int) -> nn.Sequential:
    """GCA-HNG's post-residual normalisation ``LayerNorm(GELU(x))`` as a module (official
    ``self.norm = nn.Sequential(nn.GELU(), nn.LayerNorm(D))`` in ``DotAttentionLayer`` and
    ``Messagepasstoedge``); the default ``norm`` of every GCA layer."""
    return nn.Sequential(nn.GELU(), nn.LayerNorm(channels))


def reset_norm(norm: nn.Module) -> None:
    """Reset the LayerNorm parameters inside a ``norm`` module (weight 1, bias 0)."""
    for module in norm.modules():
        if isinstance(module, nn.LayerNorm):
            module.reset_parameters()


def _norm(t: Tensor, w: Tensor, b: Tensor, eps: float) -> Tensor:
    """``LayerNorm(GELU(t))`` over the last dimension (:func:`gca_norm` as a function)."""
    return F.layer_norm(F.gelu(t), (t.size(-1),), w, b, eps)


def _grads(out: Tensor, inputs, grad: Tensor):
    want = [t for t in inputs if t.requires_grad]
    got = iter(torch.autograd.grad(out, want, grad)) if want else iter(())
    return [next(got) if t.requires_grad else None for t in inputs]


def _acc(total: Optional[Tensor], g: Optional[Tensor]) -> Optional[Tensor]:
    if g is None:
        return total
    return g if total is None else total + g


class _EdgeMLPUpdate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, s1, nw, nb, eps_n, w1, b1, lw, lb, eps_l, w2, b2, chunk):
        n = s1.size(0)
        out = torch.empty_like(s1)
        h1 = s1.new_empty(n, w1.size(0))
        s2 = torch.empty_like(s1)
        for start in range(0, n, chunk):
            sl = slice(start, min(start + chunk, n))
            e = _norm(s1[sl], nw, nb, eps_n)
            h = torch.addmm(b1, e, w1.t())
            h1[sl] = h
            m = torch.addmm(b2, F.layer_norm(F.gelu(h), (h.size(-1),), lw, lb, eps_l), w2.t())
            out[sl] = _norm(torch.add(e, m, out=s2[sl]), nw, nb, eps_n)
        ctx.save_for_backward(s1, h1, s2, nw, nb, w1, b1, lw, lb, w2, b2)
        ctx.eps_n, ctx.eps_l, ctx.chunk = eps_n, eps_l, chunk
        return out

    @staticmethod
    def backward(ctx, grad):
        s1, h1, s2, nw, nb, w1, b1, lw, lb, w2, b2 = ctx.saved_tensors
        eps_n, eps_l, chunk = ctx.eps_n, ctx.eps_l, ctx.chunk
        need = ctx.needs_input_grad
        n = s1.size(0)
        gs1 = torch.empty_like(s1) if need[0] else None
        # parameters as leaves of the local recomputation graphs
        nw_, nb_ = nw.detach().requires_grad_(need[1]), nb.detach().requires_grad_(need[2])
        lw_, lb_ = lw.detach().requires_grad_(need[6]), lb.detach().requires_grad_(need[7])
        gnw = gnb = gw1 = gb1 = glw = glb = gw2 = gb2 = None
        with torch.enable_grad():
            for start in range(0, n, chunk):
                sl = slice(start, min(start + chunk, n))
                g_out = grad[sl]
                # out = norm(s2)
                s2c = s2[sl].detach().requires_grad_(True)
                g_s2, a, b = _grads(_norm(s2c, nw_, nb_, eps_n), [s2c, nw_, nb_], g_out)
                gnw, gnb = _acc(gnw, a), _acc(gnb, b)
                # s2 = e + m, m = Linear2(LN(GELU(h1))): the Linear by hand (no forward recompute)
                hc = h1[sl].detach().requires_grad_(True)
                act = F.layer_norm(F.gelu(hc), (hc.size(-1),), lw_, lb_, eps_l)
                if need[9]:
                    gw2 = _acc(gw2, g_s2.t() @ act.detach())
                if need[10]:
                    gb2 = _acc(gb2, g_s2.sum(0))
                g_h, a, b = _grads(act, [hc, lw_, lb_], g_s2 @ w2)
                glw, glb = _acc(glw, a), _acc(glb, b)
                # h1 = Linear1(e), e = norm(s1); the residual adds g_s2 to e's gradient
                s1c = s1[sl].detach().requires_grad_(True)
                e = _norm(s1c, nw_, nb_, eps_n)
                if need[4]:
                    gw1 = _acc(gw1, g_h.t() @ e.detach())
                if need[5]:
                    gb1 = _acc(gb1, g_h.sum(0))
                g_s1, a, b = _grads(e, [s1c, nw_, nb_], g_s2 + g_h @ w1)
                gnw, gnb = _acc(gnw, a), _acc(gnb, b)
                if gs1 is not None:
                    gs1[sl] = g_s1
        return gs1, gnw, gnb, None, gw1, gb1, glw, glb, None, gw2, gb2, None


def edge_mlp_update(
    s1: Tensor, norm_weight: Tensor, norm_bias: Tensor, norm_eps: float,
    w1: Tensor, b1: Tensor, ln_weight: Tensor, ln_bias: Tensor, ln_eps: float,
    w2: Tensor, b2: Tensor, chunk_size: int = 4096,
) -> Tensor:
    r"""Fused edge update of :class:`~graphneg.nn.NodeToEdgeConv` after its attention step.

    Plain formula (``norm(t) = LayerNorm(GELU(t))`` with ``norm_weight, norm_bias``, one
    instance for both residuals, as the official ``Messagepasstoedge``):

    .. math::
        e = \mathrm{norm}(s_1),\quad h = W_1 e + b_1,\quad
        s_2 = e + W_2\,\mathrm{LN}(\mathrm{GELU}(h)) + b_2,\quad \mathrm{out} = \mathrm{norm}(s_2).

    Same values as that composition of PyTorch modules, but only ``s_1`` ``[E, D]``, ``h``
    ``[E, H]`` and ``s_2`` ``[E, D]`` are kept for backward (autograd keeps ``~3 H + 6 D``
    columns per edge: the GELU/LayerNorm inputs and outputs of both widths). The backward
    pass recomputes the element-wise parts (GELU, LayerNorm) in chunks of ``chunk_size`` rows,
    never the two matrix products, and the forward pass runs in the same chunks, so no
    ``[E, H]`` temporary besides ``h`` exists. Rows are independent: chunking changes nothing.
    """
    return _EdgeMLPUpdate.apply(s1, norm_weight, norm_bias, float(norm_eps), w1, b1, ln_weight,
                                ln_bias, float(ln_eps), w2, b2, int(chunk_size))


__all__ = ["gather_mul", "gather_dot", "gather_scale", "gather_distance", "gather_lerp", "edge_mlp_update",
           "gca_norm", "reset_norm"]
