"""GCA-HNG message-passing layers against dense ``[B, B, D]`` references written here.

The references follow the official formulation (github PWenJay/GCA-HNG ``scripts/models.py``,
``scripts/graph_generator.py``, ``scripts/utils.py``): the dense edge tensor ``W[r, c]`` holds the
feature of edge ``(r, c)``, attention queries sit at the column ``c`` and keys/values at the row
``r``, edge-to-node sums over the columns of row ``r``. PyG edge ``(source j, target i)`` is the
dense entry ``W[j, i]``. Everything runs in float64 so the comparison tolerance is tight.
"""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from graphneg.nn import (
    GCAGNN,
    CorrelationEdgeEncoder,
    EdgeToNodeConv,
    GCABlock,
    NodeAttentionConv,
    NodeToEdgeConv,
)
from graphneg.nn.functional import (
    edge_mlp_update,
    gather_distance,
    gather_dot,
    gather_lerp,
    gather_mul,
    gather_scale,
)

B, D, H = 5, 8, 2
TOL = 1e-8


def complete_graph(n, loop=True):
    src = torch.arange(n).repeat_interleave(n)
    tgt = torch.arange(n).repeat(n)
    keep = torch.ones_like(src, dtype=torch.bool) if loop else src != tgt
    return torch.stack([src[keep], tgt[keep]])


def dense_adj(edge_index, n):
    """present[r, c] = edge r -> c is in the graph."""
    adj = torch.zeros(n, n, dtype=torch.bool)
    adj[edge_index[0], edge_index[1]] = True
    return adj


def to_dense_edges(edge_attr, edge_index, n):
    w = torch.zeros(n, n, edge_attr.size(-1), dtype=edge_attr.dtype)
    return w.index_put((edge_index[0], edge_index[1]), edge_attr)


def lin(layer, t):
    return t @ layer.weight.t() + layer.bias


def norm(seq, t):
    ln = seq[1]
    return F.layer_norm(F.gelu(t), ln.normalized_shape, ln.weight, ln.bias, ln.eps)


# dense references (official formulation) --------------------------------------------------------
def dense_correlation(x):
    """GraphGenerator._get_W: W[r, c, d] = xc_r,d xc_c,d / (|xc_r| |xc_c|)."""
    xc = x - x.mean(dim=1, keepdim=True)
    n = xc.norm(dim=1)
    return torch.einsum("rd,cd->rcd", xc, xc) / torch.einsum("r,c->rc", n, n)[..., None]


def dense_attention(conv, x, allowed):
    """MultiHeadDotProduct + utils.softmax: alpha[h, r, c] = exp(s) / (sum_r exp(s) + 1)."""
    n, d = x.shape
    h, c = conv.heads, d // conv.heads
    q = lin(conv.lin_q, x).view(n, h, c)
    k = lin(conv.lin_k, x).view(n, h, c)
    v = lin(conv.lin_v, x).view(n, h, c)
    s = torch.einsum("chd,rhd->hrc", q, k) / math.sqrt(c)
    ex = torch.where(allowed[None], s.exp(), torch.zeros_like(s))
    alpha = ex / (ex.sum(dim=1, keepdim=True) + 1.0)
    out = torch.einsum("hrc,rhd->chd", alpha, v).reshape(n, d)
    return norm(conv.norm, x + lin(conv.lin_out, out)), alpha


def dense_edge_to_node(conv, h, w, present):
    """DotAttentionLayer: h_r + sum_c GELU(Linear(W[r, c])) over the edges (r, c) present."""
    msg = F.gelu(lin(conv.lin, w))
    agg = torch.einsum("rc,rcd->rd", present.to(w.dtype), msg)
    return norm(conv.norm, h + agg)


def dense_node_to_edge(conv, h, w):
    """Messagepasstoedge + Vanilla_Attention (eval mode: no dropout)."""
    f = F.gelu(lin(conv.lin_node, h))
    q = lin(conv.lin_q, w)
    k = lin(conv.lin_k, f)
    v = lin(conv.lin_v, f)
    scale = math.sqrt(w.size(-1))
    s_r = torch.einsum("rcd,rd->rc", q, k) / scale
    s_c = torch.einsum("rcd,cd->rc", q, k) / scale
    beta = torch.softmax(torch.stack([s_r, s_c], dim=-1), dim=-1)
    att = beta[..., 0, None] * v[:, None, :] + beta[..., 1, None] * v[None, :, :]
    e = norm(conv.norm, w + att)
    m = conv.mlp
    hid = F.layer_norm(F.gelu(lin(m[0], e)), m[2].normalized_shape, m[2].weight, m[2].bias, m[2].eps)
    return norm(conv.norm, e + lin(m[3], hid))


def dense_block(block, x, w, present, allowed):
    h, _ = dense_attention(block.attention, x, allowed)
    h = dense_edge_to_node(block.edge_to_node, h, w, present)
    h = norm(block.norm, h + lin(block.lin2, F.gelu(lin(block.lin1, h))))
    return h, dense_node_to_edge(block.node_to_edge, h, w)


def dense_gnn(gnn, x, present, allowed):
    """GNNDecoder (train-mode BatchNorm over the present edges / all nodes)."""
    w = dense_correlation(x)
    h = lin(gnn.lin_in, x)
    for block in gnn.blocks:
        h, w = dense_block(block, h, w, present, allowed)
    e = w[present]  # present edges, row-major (r, c) order
    bn = gnn.edge_bn
    e_bn = (e - e.mean(0)) / torch.sqrt(e.var(0, unbiased=False) + bn.eps) * bn.weight + bn.bias
    lam = torch.sigmoid(lin(gnn.lin_lam, e_bn))
    nb = gnn.node_bn
    h_bn = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + nb.eps) * nb.weight + nb.bias
    return h, w, lam, lin(gnn.classifier, h_bn)


# helpers ----------------------------------------------------------------------------------------
def _params(module):
    return [p for p in module.parameters() if p.requires_grad]


def assert_grads_match(out_a, out_b, inputs, seed=0):
    g = torch.Generator().manual_seed(seed)
    loss_a = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in out_a)
    g = torch.Generator().manual_seed(seed)
    loss_b = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in out_b)
    ga = torch.autograd.grad(loss_a, inputs, allow_unused=True)
    gb = torch.autograd.grad(loss_b, inputs, allow_unused=True)
    for x, y in zip(ga, gb):
        assert (x is None) == (y is None)
        if x is not None:
            torch.testing.assert_close(x, y, atol=TOL, rtol=1e-6)


def inputs(seed=0, n=B, d=D):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64).requires_grad_(True)
    return x


LABELS = torch.tensor([0, 1, 0, 2, 1])


# CorrelationEdgeEncoder -------------------------------------------------------------------------
def test_correlation_matches_dense_and_sums_to_pearson():
    x = inputs()
    ei = complete_graph(B)
    enc = CorrelationEdgeEncoder()
    e = enc(x, ei)
    w = dense_correlation(x)
    torch.testing.assert_close(e, w[ei[0], ei[1]], atol=TOL, rtol=0)
    corr = torch.corrcoef(x.detach())
    torch.testing.assert_close(e.detach().sum(-1), corr[ei[0], ei[1]], atol=1e-10, rtol=0)
    assert_grads_match([e], [w[ei[0], ei[1]]], [x])
    assert repr(enc) == "CorrelationEdgeEncoder(eps=1e-12)"
    assert len(list(enc.parameters())) == 0


def test_correlation_sparse_is_dense_restricted():
    x = inputs(1)
    ei = complete_graph(B)[:, torch.tensor([0, 3, 7, 11, 12, 19, 24])]
    e = CorrelationEdgeEncoder()(x, ei)
    torch.testing.assert_close(e, dense_correlation(x)[ei[0], ei[1]], atol=TOL, rtol=0)


# NodeAttentionConv ------------------------------------------------------------------------------
@pytest.mark.parametrize("masked", [False, True])
def test_node_attention_matches_dense(masked):
    torch.manual_seed(0)
    x = inputs()
    ei = complete_graph(B)
    conv = NodeAttentionConv(D, heads=H).double()
    with torch.no_grad():  # non-trivial biases
        for p in conv.parameters():
            p.add_(0.1 * torch.randn_like(p))
    mask = LABELS[ei[0]] != LABELS[ei[1]] if masked else None
    out, (used, alpha) = conv(x, ei, attn_mask=mask, return_attention_weights=True)
    allowed = dense_adj(ei if mask is None else ei[:, mask], B)
    ref, ref_alpha = dense_attention(conv, x, allowed)
    torch.testing.assert_close(out, ref, atol=TOL, rtol=0)
    torch.testing.assert_close(alpha, ref_alpha[:, used[0], used[1]].t(), atol=TOL, rtol=0)
    assert_grads_match([out], [ref], [x] + _params(conv))


def test_node_attention_no_weight_between_same_class():
    x = inputs(2)
    ei = complete_graph(B)
    conv = NodeAttentionConv(D, heads=H).double()
    block = GCABlock(D, heads=H).double()
    mask = LABELS[ei[0]] != LABELS[ei[1]]
    _, (used, alpha) = conv(x, ei, attn_mask=mask, return_attention_weights=True)
    assert used.size(1) == int(mask.sum()) and bool((LABELS[used[0]] != LABELS[used[1]]).all())
    assert bool((alpha > 0).all())
    # extra zero logit: weights of a node sum to strictly less than 1
    sums = torch.zeros(B, H, dtype=alpha.dtype).index_add_(0, used[1], alpha.detach())
    assert bool((sums < 1).all())
    # the block's attention output ignores same-class nodes: perturbing a node's value only moves
    # nodes of other classes (checked on the attention sub-step)
    h0 = block.attention(x, ei, attn_mask=mask)
    x2 = x.detach().clone()
    x2[2] += 5.0  # node 2 has class 0, like node 0
    h1 = block.attention(x2, ei, attn_mask=mask)
    changed = (h1 - h0).abs().amax(dim=1) > 1e-9
    assert not bool(changed[0])  # same class as node 2: unaffected
    assert bool(changed[1]) and bool(changed[3]) and bool(changed[4])


def test_node_attention_sparse_equals_dense_restricted():
    x = inputs(3)
    ei = complete_graph(B)[:, torch.tensor([1, 2, 5, 8, 9, 13, 15, 17, 21, 22])]
    conv = NodeAttentionConv(D, heads=H).double()
    out = conv(x, ei)
    ref, _ = dense_attention(conv, x, dense_adj(ei, B))
    torch.testing.assert_close(out, ref, atol=TOL, rtol=0)
    assert_grads_match([out], [ref], [x] + _params(conv))


def test_node_attention_stable_for_large_scores():
    # the official max-shift keeps exp() finite; the formula exp(s)/(sum exp(s)+1) -> ~softmax
    x = inputs(4) * 200
    ei = complete_graph(B)
    conv = NodeAttentionConv(D, heads=H).double()
    out = conv(x, ei)
    assert bool(torch.isfinite(out).all())


# EdgeToNodeConv ---------------------------------------------------------------------------------
@pytest.mark.parametrize("flow", ["target_to_source", "source_to_target"])
def test_edge_to_node_matches_dense(flow):
    x = inputs(5)
    g = torch.Generator().manual_seed(1)
    ei = complete_graph(B)
    keep = torch.rand(ei.size(1), generator=g) < 0.6  # asymmetric sparse graph
    ei = ei[:, keep]
    e = torch.randn(ei.size(1), D, generator=g, dtype=torch.float64).requires_grad_(True)
    conv = EdgeToNodeConv(D, flow=flow).double()
    out = conv(x, ei, e)
    present = dense_adj(ei, B)
    w = to_dense_edges(e, ei, B)
    if flow == "target_to_source":  # official: node r sums W[r, :] (its out-edges)
        ref = dense_edge_to_node(conv, x, w, present)
    else:  # in-edges: node c sums W[:, c]
        ref = dense_edge_to_node(conv, x, w.transpose(0, 1), present.t())
    torch.testing.assert_close(out, ref, atol=TOL, rtol=0)
    assert_grads_match([out], [ref], [x, e] + _params(conv))


# NodeToEdgeConv ---------------------------------------------------------------------------------
@pytest.mark.parametrize("sparse", [False, True])
def test_node_to_edge_matches_dense(sparse):
    torch.manual_seed(0)
    x = inputs(6)
    ei = complete_graph(B)
    if sparse:
        ei = ei[:, torch.tensor([0, 4, 6, 10, 14, 18, 20, 23])]
    w = dense_correlation(inputs(7)).detach().requires_grad_(True)
    conv = NodeToEdgeConv(D).double().eval()
    out = conv(x, ei, w[ei[0], ei[1]])
    ref = dense_node_to_edge(conv, x, w)[ei[0], ei[1]]
    torch.testing.assert_close(out, ref, atol=TOL, rtol=0)
    assert_grads_match([out], [ref], [x, w] + _params(conv))


def test_node_to_edge_symmetric_and_dropout_only_in_training():
    x = inputs(8)
    ei = complete_graph(B)
    w = dense_correlation(inputs(9)).detach()
    conv = NodeToEdgeConv(D, dropout=0.5).double().eval()
    out = to_dense_edges(conv(x, ei, w[ei[0], ei[1]]), ei, B)
    torch.testing.assert_close(out, out.transpose(0, 1), atol=1e-12, rtol=0)
    conv.train()
    torch.manual_seed(0)
    a = conv(x, ei, w[ei[0], ei[1]])
    torch.manual_seed(1)
    b = conv(x, ei, w[ei[0], ei[1]])
    assert not torch.allclose(a, b)


# GCABlock / GCAGNN ------------------------------------------------------------------------------
def test_block_shares_one_norm_across_node_steps():
    block = GCABlock(D, heads=H)
    assert block.attention.norm is block.norm and block.edge_to_node.norm is block.norm
    assert block.node_to_edge.norm is not block.norm
    # parameters are counted once
    n_unique = len({id(p) for p in block.parameters()})
    assert n_unique == len(list(block.parameters()))


@pytest.mark.parametrize("use_mask_arg", [False, True])
def test_block_matches_dense(use_mask_arg):
    torch.manual_seed(1)
    x = inputs(10)
    ei = complete_graph(B)
    w = dense_correlation(inputs(11)).detach().requires_grad_(True)
    block = GCABlock(D, heads=H).double().eval()
    mask = LABELS[ei[0]] != LABELS[ei[1]]
    if use_mask_arg:
        h, e = block(x, ei, w[ei[0], ei[1]], attn_mask=mask)
    else:
        h, e = block(x, ei, w[ei[0], ei[1]], labels=LABELS)
    rh, re = dense_block(block, x, w, dense_adj(ei, B), dense_adj(ei[:, mask], B))
    torch.testing.assert_close(h, rh, atol=TOL, rtol=0)
    torch.testing.assert_close(e, re[ei[0], ei[1]], atol=TOL, rtol=0)
    assert_grads_match([h, e], [rh, re[ei[0], ei[1]]], [x, w] + _params(block))


@pytest.mark.parametrize("sparse", [False, True])
def test_gnn_matches_dense(sparse):
    torch.manual_seed(2)
    x = inputs(12)
    ei = complete_graph(B)
    if sparse:  # a symmetric subset with self-loops
        adj = dense_adj(ei, B) & ~torch.tensor(
            [[0, 1, 0, 0, 1], [1, 0, 0, 1, 0], [0, 0, 0, 1, 1], [0, 1, 1, 0, 0], [1, 0, 1, 0, 0]],
            dtype=torch.bool)
        ei = adj.nonzero().t()
    gnn = GCAGNN(D, num_classes=3, num_layers=2, heads=H, dropout=0.0).double().train()
    out = gnn(x, ei, labels=LABELS)
    present = dense_adj(ei, B)
    allowed = present & (LABELS[:, None] != LABELS[None, :])
    rh, rw, rlam, rlogits = dense_gnn(gnn, x, present, allowed)
    order = torch.argsort(ei[0] * B + ei[1])  # dense w[present] is row-major
    torch.testing.assert_close(out.x, rh, atol=TOL, rtol=0)
    torch.testing.assert_close(out.edge_attr, rw[ei[0], ei[1]], atol=TOL, rtol=0)
    torch.testing.assert_close(out.lam[order], rlam, atol=TOL, rtol=0)
    torch.testing.assert_close(out.logits, rlogits, atol=TOL, rtol=0)
    assert bool((out.lam > 0).all()) and bool((out.lam < 1).all())
    assert_grads_match([out.lam[order], out.logits], [rlam, rlogits], [x] + _params(gnn))


def test_gnn_bn_bias_frozen_and_reset():
    gnn = GCAGNN(D, num_classes=3, num_layers=1, heads=H)
    assert not gnn.edge_bn.bias.requires_grad and not gnn.node_bn.bias.requires_grad
    with torch.no_grad():
        gnn.blocks[0].attention.lin_q.bias.fill_(3.0)
        gnn.edge_bn.weight.fill_(2.0)
    gnn.reset_parameters()
    assert float(gnn.blocks[0].attention.lin_q.bias.detach().abs().max()) == 0.0
    assert float((gnn.edge_bn.weight.detach() - 1).abs().max()) == 0.0
    assert not gnn.edge_bn.bias.requires_grad
    assert "GCAGNN(8, num_classes=3, num_layers=1, heads=2)" == repr(gnn)
    assert repr(gnn.blocks[0].attention) == "NodeAttentionConv(8, heads=2)"


# input validation -------------------------------------------------------------------------------
def test_layer_errors():
    with pytest.raises(ValueError, match="heads must divide"):
        NodeAttentionConv(10, heads=3)
    with pytest.raises(ValueError, match="heads must divide"):
        GCAGNN(10, num_classes=3, heads=4)
    conv = NodeAttentionConv(D, heads=H)
    ei = complete_graph(B)
    x = torch.randn(B, D)
    with pytest.raises(ValueError, match="attn_mask must be a bool tensor"):
        conv(x, ei, attn_mask=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="edge_attr must hold one feature row per edge"):
        EdgeToNodeConv(D)(x, ei, torch.randn(4, D))
    with pytest.raises(ValueError, match=r"edge_attr must have shape \[E, D\]"):
        NodeToEdgeConv(D)(x, ei, torch.randn(ei.size(1), D + 1))
    with pytest.raises(ValueError, match="dropout must be in"):
        NodeToEdgeConv(D, dropout=1.0)
    with pytest.raises(ValueError, match=r"x must have shape \[N, 8\]"):
        GCAGNN(D, num_classes=3, heads=H)(torch.randn(B, D + 1), ei)


# fused gather ops -------------------------------------------------------------------------------
def test_fused_ops_values_and_gradcheck():
    g = torch.Generator().manual_seed(3)
    n, e, d = 4, 9, 3
    x = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(n, 2, d, generator=g, dtype=torch.float64, requires_grad=True)
    q = torch.randn(e, 2, d, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.rand(e, 2, generator=g, dtype=torch.float64).requires_grad_(True)
    ia = torch.randint(0, n, (e,), generator=g)
    ib = torch.randint(0, n, (e,), generator=g)
    torch.testing.assert_close(gather_mul(x, ia, ib), x[ia] * x[ib])
    torch.testing.assert_close(gather_dot(q, None, y, ib), (q * y[ib]).sum(-1))
    torch.testing.assert_close(gather_dot(y, ia, y, ib), (y[ia] * y[ib]).sum(-1))
    torch.testing.assert_close(gather_scale(y, ia, w), y[ia] * w[..., None])
    ib2 = torch.where(ia == ib, (ib + 1) % n, ib)
    torch.testing.assert_close(gather_distance(x, ia, ib2), F.pairwise_distance(x[ia], x[ib2]))
    rho = torch.rand(e, generator=g, dtype=torch.float64).requires_grad_(True)
    lam = torch.rand(6, d, generator=g, dtype=torch.float64).requires_grad_(True)
    il = torch.randint(0, 6, (e,), generator=g)
    r = rho[:, None] + (1 - rho[:, None]) * 0.7 * lam[il]
    torch.testing.assert_close(gather_lerp(x, ia, ib, rho, lam, il, 0.7), x[ia] + r * (x[ib] - x[ia]))
    gc = torch.autograd.gradcheck
    assert gc(lambda t: gather_mul(t, ia, ib), (x,))
    assert gc(lambda a, b: gather_dot(a, None, b, ib), (q, y))
    assert gc(lambda a: gather_dot(a, ia, a, ib), (y,))
    assert gc(lambda a, b: gather_scale(a, ia, b), (y, w))
    assert gc(lambda a: gather_distance(a, ia, ib2), (x,))
    assert gc(lambda a, b, c: gather_lerp(a, ia, ib, b, c, il, 0.7), (x, rho, lam))


def test_fused_edge_mlp_update_equals_modules_and_gradcheck():
    # reference: the plain composition of PyTorch modules (official Messagepasstoedge tail)
    g = torch.Generator().manual_seed(4)
    e_rows, d, hid = 11, 4, 6
    s1 = torch.randn(e_rows, d, generator=g, dtype=torch.float64, requires_grad=True)
    norm = torch.nn.Sequential(torch.nn.GELU(), torch.nn.LayerNorm(d)).double()
    mlp = torch.nn.Sequential(torch.nn.Linear(d, hid), torch.nn.GELU(), torch.nn.LayerNorm(hid),
                              torch.nn.Linear(hid, d)).double()
    with torch.no_grad():  # non-trivial LayerNorm affine parameters
        for ln in (norm[1], mlp[2]):
            ln.weight.uniform_(0.5, 1.5, generator=g)
            ln.bias.uniform_(-0.5, 0.5, generator=g)
    params = [norm[1].weight, norm[1].bias, mlp[0].weight, mlp[0].bias, mlp[2].weight, mlp[2].bias,
              mlp[3].weight, mlp[3].bias]

    def fused(t, nw, nb, w1, b1, lw, lb, w2, b2, chunk=4096, recompute=False):
        return edge_mlp_update(t, nw, nb, 1e-5, w1, b1, lw, lb, 1e-5, w2, b2, chunk_size=chunk,
                               recompute_hidden=recompute)

    e = norm(s1)
    ref = norm(e + mlp(e))
    grad = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    ref_g = torch.autograd.grad(ref, [s1] + params, grad)
    for chunk in (3, 4096, None):  # several chunks, one, the default
        for recompute in (False, True):  # hidden layer kept / recomputed in backward
            out = fused(s1, *params, chunk=chunk, recompute=recompute)
            torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
            for a, b in zip(torch.autograd.grad(out, [s1] + params, grad), ref_g):
                torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    # recompute_hidden keeps 2 [E, D] tensors for backward (s1, s2), not the [E, hidden] layer
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
        fused(s1, *params, recompute=True)
    assert (e_rows, hid) not in saved and saved.count((e_rows, d)) == 2
    with pytest.raises(ValueError, match="chunk_size must be a positive"):
        fused(s1, *params, chunk=0)
    assert torch.autograd.gradcheck(lambda *t: fused(*t, chunk=4), (s1, *params))
    assert torch.autograd.gradcheck(lambda *t: fused(*t, chunk=4, recompute=True), (s1, *params))


def test_node_to_edge_custom_norm_uses_plain_path():
    torch.manual_seed(2)
    x = inputs(6)
    ei = complete_graph(B)
    w = dense_correlation(inputs(7)).detach()
    tanh_norm = torch.nn.Sequential(torch.nn.Tanh(), torch.nn.LayerNorm(D))
    conv = NodeToEdgeConv(D, norm=tanh_norm).double().eval()
    assert not conv._fusable() and NodeToEdgeConv(D)._fusable()
    att = conv.edge_updater(ei, edge_attr=w[ei[0], ei[1]], kq=conv.lin_k(F.gelu(conv.lin_node(x)))
                            @ conv.lin_q.weight, kb=conv.lin_k(F.gelu(conv.lin_node(x))) @ conv.lin_q.bias,
                            v=conv.lin_v(F.gelu(conv.lin_node(x))), size=(B, B))
    e = tanh_norm(w[ei[0], ei[1]] + att)
    torch.testing.assert_close(conv(x, ei, w[ei[0], ei[1]]), tanh_norm(e + conv.mlp(e)), atol=1e-12, rtol=0)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batch_norm_linear_equals_modules_train_and_eval(momentum):
    """lin(bn(x)) with the BatchNorm folded: values, gradients (x, BN weight, W, b) and the
    running statistics equal nn.BatchNorm1d followed by nn.Linear, in training and eval mode."""
    from graphneg.nn.functional import batch_norm_linear

    torch.manual_seed(0)
    x0 = torch.randn(37, 6, dtype=torch.float64) * 3 + 1
    bn_ref = torch.nn.BatchNorm1d(6, momentum=momentum).double()
    lin_ref = torch.nn.Linear(6, 4).double()
    with torch.no_grad():
        bn_ref.weight.uniform_(0.5, 2.0)
        bn_ref.bias.uniform_(-1.0, 1.0)
    bn, lin = copy.deepcopy(bn_ref), copy.deepcopy(lin_ref)
    for step in range(3):  # training: batch statistics, running stats updated each step
        xa, xb = x0.clone().requires_grad_(True), x0.clone().requires_grad_(True)
        ya, yb = batch_norm_linear(xa, bn, lin), lin_ref(bn_ref(xb))
        torch.testing.assert_close(ya, yb, rtol=0, atol=1e-12)
        (ya.sin().sum()).backward()
        (yb.sin().sum()).backward()
        torch.testing.assert_close(xa.grad, xb.grad, rtol=0, atol=1e-12)
        for p, q in zip(list(bn.parameters()) + list(lin.parameters()),
                        list(bn_ref.parameters()) + list(lin_ref.parameters())):
            torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-10)
        torch.testing.assert_close(bn.running_mean, bn_ref.running_mean, rtol=0, atol=1e-14)
        torch.testing.assert_close(bn.running_var, bn_ref.running_var, rtol=0, atol=1e-14)
        assert int(bn.num_batches_tracked) == int(bn_ref.num_batches_tracked) == step + 1
        x0 = x0 * 0.9 + 0.3
    bn.eval(), bn_ref.eval()  # eval: running statistics, nothing updated
    with torch.no_grad():
        torch.testing.assert_close(batch_norm_linear(x0, bn, lin), lin_ref(bn_ref(x0)), rtol=0, atol=1e-12)
    assert int(bn.num_batches_tracked) == 3
    bn.train()
    with pytest.raises(ValueError, match="more than 1 row"):
        batch_norm_linear(x0[:1], bn, lin)


def test_group_squared_deviation_and_gather_cosine_equal_plain_formulas():
    from torch_geometric.utils import scatter

    from graphneg.nn.functional import gather_cosine, group_squared_deviation

    torch.manual_seed(1)
    x = torch.rand(50, 7, dtype=torch.float64, requires_grad=True)
    index = torch.randint(0, 9, (50,))
    index[:9] = torch.arange(9)
    # plain formula: deviation from the group mean (gradient through the mean included)
    ref = (x - scatter(x, index, dim=0, dim_size=9, reduce="mean").index_select(0, index)).pow(2).sum()
    got = group_squared_deviation(x, index, 9, chunk_size=16)  # chunks of 16 rows: 4 chunks
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    g_ref, = torch.autograd.grad(ref.sqrt(), x)
    g_got, = torch.autograd.grad(got.sqrt(), x)
    torch.testing.assert_close(g_got, g_ref, rtol=0, atol=1e-12)
    # cosine: same formula as F.cosine_similarity on the gathered rows, incl. a zero row (eps)
    a = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(11, 5, dtype=torch.float64)
    b[3] = 0.0
    b.requires_grad_(True)
    idx = torch.randint(0, 6, (11,))
    ref = F.cosine_similarity(a.index_select(0, idx), b, dim=1)
    got = gather_cosine(a, idx, b)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    w = torch.randn(11, dtype=torch.float64)
    ga_ref, gb_ref = torch.autograd.grad((ref * w).sum(), (a, b))
    ga, gb = torch.autograd.grad((got * w).sum(), (a, b))
    # the zero row's gradient is ~1e8 (1 / eps): compare relative there
    torch.testing.assert_close(ga, ga_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gb, gb_ref, rtol=1e-12, atol=1e-12)
