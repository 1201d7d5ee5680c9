"""Dense ``[N, N, D]`` references of the GCA-HNG layers and shared helpers of the tests/test_nn_*.py files.

The references follow the official formulation (github PWenJay/GCA-HNG ``scripts/models.py``,
``scripts/graph_generator.py``, ``scripts/utils.py``): the dense edge tensor ``W[r, c]`` holds the
feature of edge ``(r, c)``, attention queries sit at the column ``c`` and keys/values at the row
``r``, edge-to-node sums over the columns of row ``r``. PyG edge ``(source j, target i)`` is the
dense entry ``W[j, i]``. A sparse adjacency ``adj_t`` (PyG: row = target) lists the edge
``j -> i`` at ``adj_t[i, j]``. Everything runs in float64 so the comparison tolerance is tight.
"""
import math

import torch
import torch.nn.functional as F

B, D, H = 5, 8, 2
TOL = 1e-8
LABELS = torch.tensor([0, 1, 0, 2, 1])


def complete_graph(n, loop=True):
    src = torch.arange(n).repeat_interleave(n)
    tgt = torch.arange(n).repeat(n)
    keep = torch.ones_like(src, dtype=torch.bool) if loop else src != tgt
    return torch.stack([src[keep], tgt[keep]])


def random_graph(n, p=0.6, seed=1):
    g = torch.Generator().manual_seed(seed)
    ei = complete_graph(n)
    return ei[:, torch.rand(ei.size(1), generator=g) < p]


def dense_adj(edge_index, n):
    """present[r, c] = edge r -> c is in the graph."""
    adj = torch.zeros(n, n, dtype=torch.bool)
    adj[edge_index[0], edge_index[1]] = True
    return adj


def to_dense_edges(edge_attr, edge_index, n):
    w = torch.zeros(n, n, edge_attr.size(-1), dtype=edge_attr.dtype)
    return w.index_put((edge_index[0], edge_index[1]), edge_attr)


def row_major(edge_index, n):
    """The edges in the storage order of a coalesced ``adj_t`` (row = target, then source)."""
    return edge_index[:, torch.argsort(edge_index[1] * n + edge_index[0])]


def lin(layer, t):
    out = t @ layer.weight.t()
    return out if layer.bias is None else out + layer.bias


def norm(seq, t):
    """GELU -> LayerNorm of a gca_norm module (identity when seq is None)."""
    if seq is None:
        return t
    ln = seq.layer_norm
    return F.layer_norm(F.gelu(t), ln.normalized_shape, ln.weight, ln.bias, ln.eps)


def skip(layer, t):
    return t if layer is None else lin(layer, t)


def dense_correlation(x):
    """GraphGenerator._get_W: W[r, c, d] = xc_r,d xc_c,d / (|xc_r| |xc_c|)."""
    xc = x - x.mean(dim=1, keepdim=True)
    n = xc.norm(dim=1)
    return torch.einsum("rd,cd->rcd", xc, xc) / torch.einsum("r,c->rc", n, n)[..., None]


def dense_attention(conv, x, allowed):
    """MultiHeadDotProduct + utils.softmax: alpha[h, r, c] = exp(s) / (sum_r exp(s) + 1);
    returns (norm(skip(x) + out(att)), alpha)."""
    n = x.size(0)
    h, c = conv.heads, conv.out_channels // conv.heads
    q = lin(conv.lin_q, x).view(n, h, c)
    k = lin(conv.lin_k, x).view(n, h, c)
    v = lin(conv.lin_v, x).view(n, h, c)
    s = torch.einsum("chd,rhd->hrc", q, k) / math.sqrt(c)
    ex = torch.where(allowed[None], s.exp(), torch.zeros_like(s))
    alpha = ex / (ex.sum(dim=1, keepdim=True) + 1.0)
    out = torch.einsum("hrc,rhd->chd", alpha, v).reshape(n, h * c)
    return norm(conv.norm, skip(conv.lin_skip, x) + lin(conv.lin_out, out)), alpha


def dense_edge_to_node(conv, h, w, present):
    """DotAttentionLayer: skip(h_r) + sum_c GELU(Linear(W[r, c])) over the edges (r, c) present."""
    msg = F.gelu(lin(conv.lin, w))
    agg = torch.einsum("rc,rcd->rd", present.to(w.dtype), msg)
    return norm(conv.norm, skip(conv.lin_skip, h) + agg)


def dense_node_to_edge(conv, h, w):
    """Messagepasstoedge + Vanilla_Attention (eval mode: no dropout)."""
    f = F.gelu(lin(conv.lin_node, h))
    q = lin(conv.lin_q, w)
    k = lin(conv.lin_k, f)
    v = lin(conv.lin_v, f)
    scale = math.sqrt(q.size(-1))
    s_r = torch.einsum("rcd,rd->rc", q, k) / scale
    s_c = torch.einsum("rcd,cd->rc", q, k) / scale
    beta = torch.softmax(torch.stack([s_r, s_c], dim=-1), dim=-1)
    att = beta[..., 0, None] * v[:, None, :] + beta[..., 1, None] * v[None, :, :]
    e = norm(conv.norm, skip(conv.lin_skip, w) + att)
    m = conv.mlp
    hid = F.layer_norm(F.gelu(lin(m.lin1, e)), m.norm.normalized_shape, m.norm.weight, m.norm.bias, m.norm.eps)
    return norm(conv.norm, e + lin(m.lin2, hid))


def dense_block(block, x, w, present, allowed):
    """DotAttentionLayer (one norm after each of its three sub-steps) + Messagepasstoedge."""
    h, _ = dense_attention(block.attention, x, allowed)
    h = norm(block.norm, h)
    h = norm(block.norm, dense_edge_to_node(block.edge_to_node, h, w, present))
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
def params(module):
    return [p for p in module.parameters() if p.requires_grad]


def perturb(module, scale=0.1, seed=0):
    """Non-trivial biases and LayerNorm affine parameters (they start at 0 / 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def inputs(seed=0, n=B, d=D):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64).requires_grad_(True)


def assert_grads_match(out_a, out_b, inputs_, seed=0, atol=TOL, rtol=1e-6):
    g = torch.Generator().manual_seed(seed)
    loss_a = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in out_a)
    g = torch.Generator().manual_seed(seed)
    loss_b = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in out_b)
    ga = torch.autograd.grad(loss_a, inputs_, allow_unused=True)
    gb = torch.autograd.grad(loss_b, inputs_, allow_unused=True)
    for x, y in zip(ga, gb):
        assert (x is None) == (y is None)
        if x is not None:
            torch.testing.assert_close(x, y, atol=atol, rtol=rtol)


def sparse_coo(edge_index, n, values=None):
    """``adj_t`` as a coalesced torch.sparse COO tensor (row = target, column = source)."""
    if values is None:
        values = torch.ones(edge_index.size(1))
    return torch.sparse_coo_tensor(edge_index.flip(0), values, (n, n) + tuple(values.shape[1:]),
                                   check_invariants=True).coalesce()


def assert_compiled_equals_eager(module, args, kwargs=None, backend="aot_eager", atol=1e-5):
    """``torch.compile(module, fullgraph=True)`` (no graph break allowed) gives the eager outputs
    and the eager gradients of the floating inputs and of every parameter (float32)."""
    import torch._dynamo

    kwargs = kwargs or {}
    torch._dynamo.reset()

    def run(fn):
        leaves = [a.detach().clone().requires_grad_(True) if torch.is_tensor(a) and a.is_floating_point() else a
                  for a in args]
        out = fn(*leaves, **kwargs)
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
        ins = [a for a in leaves if torch.is_tensor(a) and a.requires_grad] + params(module)
        g = torch.Generator().manual_seed(0)
        loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outs)
        return outs, torch.autograd.grad(loss, ins, allow_unused=True)

    ref_out, ref_grad = run(module)
    got_out, got_grad = run(torch.compile(module, fullgraph=True, backend=backend))
    for a, b in zip(got_out, ref_out):
        torch.testing.assert_close(a, b, atol=atol, rtol=1e-4)
    assert len(got_grad) == len(ref_grad)
    for a, b in zip(got_grad, ref_grad):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, atol=atol, rtol=1e-4)
