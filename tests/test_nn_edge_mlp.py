"""The fused edge MLP of NodeToEdgeConv (graphneg.nn.edge_mlp) against the plain composition of
PyTorch modules (official Messagepasstoedge tail): values, gradients, memory (saved tensors),
no graph break under torch.compile, and mixed precision."""
import pytest
import torch
from nn_reference import B, D, complete_graph, perturb

from graphneg.nn import NodeToEdgeConv
from graphneg.nn.edge_mlp import edge_mlp_update, gca_norm, is_gca_norm, resolve_norm


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


def test_fused_edge_mlp_update_with_frozen_parameters():
    """Parameters without requires_grad get no gradient; the others equal the module composition."""
    g = torch.Generator().manual_seed(5)
    s1 = torch.randn(7, 4, generator=g, dtype=torch.float64, requires_grad=True)
    norm = torch.nn.Sequential(torch.nn.GELU(), torch.nn.LayerNorm(4)).double()
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.GELU(), torch.nn.LayerNorm(6),
                              torch.nn.Linear(6, 4)).double()
    norm[1].weight.requires_grad_(False)
    mlp[0].bias.requires_grad_(False)
    params = [norm[1].weight, norm[1].bias, mlp[0].weight, mlp[0].bias, mlp[2].weight, mlp[2].bias,
              mlp[3].weight, mlp[3].bias]
    out = edge_mlp_update(s1, params[0], params[1], 1e-5, params[2], params[3], params[4], params[5], 1e-5,
                          params[6], params[7], chunk_size=3)
    e = norm(s1)
    ref = norm(e + mlp(e))
    want = [s1] + [p for p in params if p.requires_grad]
    for a, b in zip(torch.autograd.grad(out.sum(), want), torch.autograd.grad(ref.sum(), want)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_edge_mlp_compiles_fullgraph_without_autograd_grad():
    """The recompute-hidden backward is plain tensor code: dynamo traces forward and backward
    with fullgraph=True (it used to break on torch.autograd.grad inside the backward)."""
    import torch._dynamo

    torch._dynamo.reset()
    g = torch.Generator().manual_seed(6)
    s1 = torch.randn(9, 4, generator=g, requires_grad=True)
    ws = [torch.randn(4, generator=g) + 1, torch.randn(4, generator=g), torch.randn(6, 4, generator=g),
          torch.randn(6, generator=g), torch.randn(6, generator=g) + 1, torch.randn(6, generator=g),
          torch.randn(4, 6, generator=g), torch.randn(4, generator=g)]
    ws = [w.requires_grad_(True) for w in ws]

    def f(t, *p):
        return edge_mlp_update(t, p[0], p[1], 1e-5, p[2], p[3], p[4], p[5], 1e-5, p[6], p[7],
                               chunk_size=4, recompute_hidden=True)

    explain = torch._dynamo.explain(f)(s1, *ws)
    assert explain.graph_break_count == 0 and explain.graph_count == 1
    out = torch.compile(f, fullgraph=True, backend="aot_eager")(s1, *ws)
    ref = f(s1, *ws)
    torch.testing.assert_close(out, ref)
    for a, b in zip(torch.autograd.grad(out.sum(), [s1] + ws), torch.autograd.grad(ref.sum(), [s1] + ws)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("recompute_hidden", [True, False])
@pytest.mark.parametrize("backward_inside", [True, False])
def test_node_to_edge_under_bf16_autocast_close_to_float32(recompute_hidden, backward_inside):
    # forward under CPU bf16 autocast, backward inside the autocast region (as Lightning's manual_backward
    # runs it) or after it; reference: the same layer in float32 without autocast. With the hidden layer
    # kept (recompute_hidden=False) the backward inside autocast used to fail with "expected scalar type
    # Float but found BFloat16" (autocast cast the backward's products to bf16 next to float32 kernels).
    torch.manual_seed(0)
    conv = perturb(NodeToEdgeConv(D, recompute_hidden=recompute_hidden)).eval()
    x = torch.randn(B, D)
    ei = complete_graph(B)
    e = torch.randn(ei.size(1), D)

    def forward():
        xx, ee = x.clone().requires_grad_(True), e.clone().requires_grad_(True)
        out = conv(xx, ei, ee)
        return out, [xx, ee] + list(conv.parameters())

    def backward(out, leaves):
        return torch.autograd.grad(out.float().pow(2).sum(), leaves)

    out, leaves = forward()
    ref, ref_g = out.float(), backward(out, leaves)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, leaves = forward()
        g = backward(out, leaves) if backward_inside else None
    g = g if backward_inside else backward(out, leaves)
    out = out.float()
    torch.testing.assert_close(out, ref, atol=0.1, rtol=0.05)
    for a, b in zip(g, ref_g):
        assert a.dtype == b.dtype == torch.float32 and bool(torch.isfinite(a).all())
    flat, ref_flat = torch.cat([a.flatten() for a in g]), torch.cat([b.flatten() for b in ref_g])
    assert float((flat - ref_flat).norm()) <= 0.05 * float(ref_flat.norm())  # bf16 rounding only


def test_norm_helpers():
    n = gca_norm(4)
    assert is_gca_norm(n, 4) and not is_gca_norm(n, 5) and resolve_norm(None, 4) is not n
    assert resolve_norm(False, 4) is None and resolve_norm(n, 4) is n and is_gca_norm(resolve_norm(True, 4), 4)
    assert not is_gca_norm(torch.nn.Sequential(torch.nn.GELU(approximate="tanh"), torch.nn.LayerNorm(4)), 4)
    with pytest.raises(TypeError, match="norm must be a torch.nn.Module, True"):
        resolve_norm("layer", 4)
