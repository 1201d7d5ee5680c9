"""GCA-HNG's normalisation module and the fused edge MLP of :class:`~graphneg.nn.NodeToEdgeConv`.

:func:`gca_norm` is the one definition of GCA-HNG's ``LayerNorm(GELU(x))`` module used by every
layer (:func:`resolve_norm` reads a layer's ``norm`` argument). :func:`edge_mlp_update` fuses the
edge MLP and the two residual normalisations of the node-to-edge step: it keeps 2 ``[E, D]`` (and,
unless ``recompute_hidden``, 1 ``[E, 4D]``) tensor for backward and recomputes only element-wise
ops. Its backward is written out (matrix products and the ATen GELU / LayerNorm backward
kernels), so ``torch.compile(fullgraph=True)`` traces it.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphneg.nn.functional import row_chunk, row_slices


def gca_norm(channels: int) -> nn.Sequential:
    """GCA-HNG's post-residual normalisation ``LayerNorm(GELU(x))`` as a module (official
    ``self.norm = nn.Sequential(nn.GELU(), nn.LayerNorm(D))`` in ``DotAttentionLayer`` and
    ``Messagepasstoedge``), with named parts ``act`` and ``layer_norm``; the default ``norm`` of
    every GCA layer."""
    return nn.Sequential(OrderedDict(act=nn.GELU(), layer_norm=nn.LayerNorm(channels)))


#: state-dict keys of :func:`gca_norm` before its parts were named (``rename_state_dict_keys``)
GCA_NORM_RENAMES = {"0.": "act.", "1.": "layer_norm."}


def resolve_norm(norm: Union[nn.Module, bool, None], channels: int) -> Optional[nn.Module]:
    """The ``norm`` argument of a GCA layer: ``None`` or ``True`` -> a fresh :func:`gca_norm`,
    ``False`` -> no normalisation (``None``), a module -> that module."""
    if norm is None or norm is True:
        return gca_norm(channels)
    if norm is False:
        return None
    if not isinstance(norm, nn.Module):
        raise TypeError(f"norm must be a torch.nn.Module, True (GELU -> LayerNorm) or False (none), got {norm!r}")
    return norm


def is_gca_norm(norm: Optional[nn.Module], channels: int) -> bool:
    """``norm`` is the standard ``GELU -> LayerNorm(channels)`` of :func:`gca_norm` (erf GELU,
    affine LayerNorm), the one :func:`edge_mlp_update` fuses."""
    if not isinstance(norm, nn.Sequential) or len(norm) != 2:
        return False
    act, ln = norm[0], norm[1]
    return (type(act) is nn.GELU and act.approximate == "none" and type(ln) is nn.LayerNorm
            and ln.weight is not None and ln.bias is not None and ln.normalized_shape == (channels,))


def reset_norm(norm: Optional[nn.Module]) -> None:
    """Reset the LayerNorm parameters inside a ``norm`` module (weight 1, bias 0)."""
    if norm is None:
        return
    for module in norm.modules():
        if isinstance(module, nn.LayerNorm):
            module.reset_parameters()


def _norm(t: Tensor, w: Tensor, b: Tensor, eps: float) -> Tensor:
    """``LayerNorm(GELU(t))`` over the last dimension (:func:`gca_norm` as a function)."""
    return F.layer_norm(F.gelu(t), (t.size(-1),), w, b, eps)


def _gelu_layer_norm(t: Tensor, w: Tensor, b: Tensor, eps: float):
    """``LayerNorm(GELU(t))`` over the last dimension and what its backward needs:
    ``(output, GELU(t), mean, rstd)`` (``aten.native_layer_norm``, the kernel behind ``F.layer_norm``)."""
    u = F.gelu(t)
    out, mean, rstd = torch.ops.aten.native_layer_norm(u, [t.size(-1)], w, b, eps)
    return out, u, mean, rstd


def _gelu_layer_norm_backward(g, t, u, mean, rstd, w, b, need_w: bool, need_b: bool):
    """Gradients ``(d t, d w, d b)`` of :func:`_gelu_layer_norm` for the output gradient ``g``:
    the ATen backward kernels that autograd itself runs for ``F.layer_norm`` and ``F.gelu``
    (``native_layer_norm_backward``, ``gelu_backward``), called directly so that the backward of
    :func:`edge_mlp_update` is plain tensor code that ``torch.compile`` traces (no
    ``torch.autograd.grad`` inside a backward, a graph break)."""
    gu, gw, gb = torch.ops.aten.native_layer_norm_backward(
        g, u, [t.size(-1)], mean, rstd, w, b, [True, need_w, need_b])
    return torch.ops.aten.gelu_backward(gu, t), gw, gb


def _acc(total: Optional[Tensor], g: Optional[Tensor]) -> Optional[Tensor]:
    if g is None:
        return total
    return g if total is None else total + g


class _EdgeMLPUpdate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, s1, nw, nb, eps_n, w1, b1, lw, lb, eps_l, w2, b2, chunk, recompute_hidden):
        n = s1.size(0)
        out = torch.empty_like(s1)
        h1 = None if recompute_hidden else s1.new_empty(n, w1.size(0))
        s2 = torch.empty_like(s1)
        for sl in row_slices(n, chunk):
            e = _norm(s1[sl], nw, nb, eps_n)
            h = torch.addmm(b1, e, w1.t())
            if h1 is not None:
                h1[sl] = h
            m = torch.addmm(b2, F.layer_norm(F.gelu(h), (h.size(-1),), lw, lb, eps_l), w2.t())
            s2c = e + m
            s2[sl] = s2c
            out[sl] = _norm(s2c, nw, nb, eps_n)
        ctx.save_for_backward(s1, h1, s2, nw, nb, w1, b1, lw, lb, w2, b2)
        ctx.eps_n, ctx.eps_l, ctx.chunk = eps_n, eps_l, chunk
        # the forward's matrix products ran in autocast's dtype (e.g. bfloat16) when autocast was on:
        # the backward's products use the same dtype, with autocast itself off (see backward)
        dev = s1.device.type
        ctx.mm_dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None
        return out

    @staticmethod
    def backward(ctx, grad):
        # explicit chain rule, chunk by chunk: the two Linear layers by matrix products, GELU and
        # LayerNorm by their ATen backward kernels (_gelu_layer_norm_backward); the element-wise
        # forward parts are recomputed, the hidden layer h too with recompute_hidden
        # Mixed precision: the backward may run inside an autocast region (a backward call inside the
        # forward's ``with torch.autocast(...)``, as Lightning's manual_backward does); autocast would
        # then cast the products below to its dtype and hand bfloat16 results to the float32 LayerNorm
        # backward kernels ("expected scalar type Float but found BFloat16"). So autocast is switched
        # off here and every dtype is explicit: element-wise parts in the promoted input dtype, the
        # products in the dtype the forward's products ran in (``ctx.mm_dtype``: autocast's dtype if
        # it was on in forward), as autocast would have run them; the same whether backward is
        # called inside or outside the autocast region.
        with torch.autocast(grad.device.type, enabled=False):
            return _EdgeMLPUpdate._backward(ctx, grad)

    @staticmethod
    def _backward(ctx, grad):
        s1, h1, s2, nw, nb, w1, b1, lw, lb, w2, b2 = ctx.saved_tensors
        eps_n, eps_l, chunk = ctx.eps_n, ctx.eps_l, ctx.chunk
        need = ctx.needs_input_grad
        dtype = torch.promote_types(s1.dtype, nw.dtype)  # compute dtype of the recomputation
        mmd = ctx.mm_dtype or dtype

        def mm(a: Tensor, b: Tensor) -> Tensor:
            return (a.to(mmd) @ b.to(mmd)).to(dtype)
        gs1 = torch.empty_like(s1) if need[0] else None
        gnw = gnb = gw1 = gb1 = glw = glb = gw2 = gb2 = None
        for sl in row_slices(s1.size(0), chunk):
            g_out = grad[sl].to(dtype)
            # out = norm(s2)
            t2 = s2[sl].to(dtype)
            _, u2, m2, r2 = _gelu_layer_norm(t2, nw, nb, eps_n)
            g_s2, a, b = _gelu_layer_norm_backward(g_out, t2, u2, m2, r2, nw, nb, need[1], need[2])
            gnw, gnb = _acc(gnw, a), _acc(gnb, b)
            # e = norm(s1) recomputed; h = Linear1(e) kept, or recomputed with recompute_hidden
            # (the same addmm on the same rows: the same values)
            t1 = s1[sl].to(dtype)
            e, u1, m1, r1 = _gelu_layer_norm(t1, nw, nb, eps_n)
            h = (torch.addmm(b1.to(mmd), e.to(mmd), w1.t().to(mmd)).to(dtype) if h1 is None
                 else h1[sl].to(dtype))
            # s2 = e + m, m = Linear2(act), act = LN(GELU(h))
            act, uh, mh, rh = _gelu_layer_norm(h, lw, lb, eps_l)
            if need[9]:
                gw2 = _acc(gw2, mm(g_s2.t(), act))
            if need[10]:
                gb2 = _acc(gb2, g_s2.sum(0))
            g_h, a, b = _gelu_layer_norm_backward(mm(g_s2, w2), h, uh, mh, rh, lw, lb, need[6], need[7])
            glw, glb = _acc(glw, a), _acc(glb, b)
            if need[4]:
                gw1 = _acc(gw1, mm(g_h.t(), e))
            if need[5]:
                gb1 = _acc(gb1, g_h.sum(0))
            # the residual adds g_s2 to e's gradient
            g_s1, a, b = _gelu_layer_norm_backward(g_s2 + mm(g_h, w1), t1, u1, m1, r1, nw, nb, need[1], need[2])
            gnw, gnb = _acc(gnw, a), _acc(gnb, b)
            if gs1 is not None:
                gs1[sl] = g_s1
        return gs1, gnw, gnb, None, gw1, gb1, glw, glb, None, gw2, gb2, None, None


def edge_mlp_update(
    s1: Tensor, norm_weight: Tensor, norm_bias: Tensor, norm_eps: float,
    w1: Tensor, b1: Tensor, ln_weight: Tensor, ln_bias: Tensor, ln_eps: float,
    w2: Tensor, b2: Tensor, chunk_size: Optional[int] = None, recompute_hidden: bool = False,
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
    pass recomputes the element-wise parts (GELU, LayerNorm) in chunks of ``chunk_size`` rows
    (default: :data:`CHUNK_ELEMENTS` divided by the hidden width ``H``, 512 rows at ``H = 2048``;
    whole-``[E, H]`` temporaries would set the peak memory of the backward pass),
    never the two matrix products, and the forward pass runs in the same chunks, so no
    ``[E, H]`` temporary besides ``h`` exists. Rows are independent: chunking changes nothing.

    With ``recompute_hidden=True`` (activation checkpointing of the hidden layer, used by
    ``GCAGNN(recompute_hidden=True)``) ``h`` is not kept either: the backward pass recomputes it chunk
    by chunk with the same ``addmm`` on the same rows (identical values), at the cost of one extra
    ``D -> H`` product; only ``s_1`` and ``s_2`` (``2 D`` columns per edge) stay for backward.

    The backward pass is the chain rule written out (no ``torch.autograd.grad`` inside it, so
    ``torch.compile(fullgraph=True)`` traces it): the two linear layers by matrix products
    (:math:`\partial W_2 = g_{s_2}^\top a`, :math:`g_a = g_{s_2} W_2`, :math:`\partial W_1 =
    g_h^\top e`, :math:`g_e = g_{s_2} + g_h W_1`), GELU and LayerNorm by the ATen backward kernels
    that autograd runs for them (``gelu_backward``, ``native_layer_norm_backward``); the result
    equals autograd's gradient of the module composition (``tests/test_nn_edge_mlp.py``, float64
    gradcheck).

    Mixed precision: under autocast the forward's products run in autocast's dtype; the backward runs
    its products in that same dtype and everything else in the inputs' dtype, with autocast switched
    off inside it, so it works whether ``backward`` is called inside the autocast region (Lightning's
    ``manual_backward``) or after it (``tests/test_nn_edge_mlp.py``, bf16 against float32).
    """
    return _EdgeMLPUpdate.apply(s1, norm_weight, norm_bias, float(norm_eps), w1, b1, ln_weight,
                                ln_bias, float(ln_eps), w2, b2, row_chunk(w1.size(0), chunk_size),
                                bool(recompute_hidden))


__all__ = ["gca_norm", "resolve_norm", "is_gca_norm", "reset_norm", "edge_mlp_update", "GCA_NORM_RENAMES"]
