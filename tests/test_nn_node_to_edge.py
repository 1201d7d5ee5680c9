"""NodeToEdgeConv against the dense official Messagepasstoedge + Vanilla_Attention (tests/nn_reference.py)."""
import pytest
import torch
import torch.nn.functional as F
from nn_reference import (B, D, TOL, assert_compiled_equals_eager, assert_grads_match, complete_graph,
                          dense_correlation, dense_node_to_edge, inputs, params, perturb, random_graph,
                          row_major, sparse_coo, to_dense_edges)

from graphneg.nn import NodeToEdgeConv


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("recompute_hidden", [False, True])
def test_node_to_edge_matches_dense(sparse, recompute_hidden):
    torch.manual_seed(0)
    x = inputs(6)
    ei = complete_graph(B)
    if sparse:
        ei = ei[:, torch.tensor([0, 4, 6, 10, 14, 18, 20, 23])]
    w = dense_correlation(inputs(7)).detach().requires_grad_(True)
    conv = perturb(NodeToEdgeConv(D, recompute_hidden=recompute_hidden).double().eval())
    out = conv(x, ei, w[ei[0], ei[1]])
    ref = dense_node_to_edge(conv, x, w)[ei[0], ei[1]]
    torch.testing.assert_close(out, ref, atol=TOL, rtol=0)
    assert_grads_match([out], [ref], [x, w] + params(conv))


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


def test_node_to_edge_named_submodules_and_in_out_edge_channels():
    conv = NodeToEdgeConv(6, D, edge_dim=3, hidden_channels=12).double().eval()
    names = {name for name, _ in conv.named_children()}
    assert {"lin_node", "lin_q", "lin_k", "lin_v", "lin_skip", "mlp", "norm"} <= names
    assert [n for n, _ in conv.mlp.named_children()] == ["lin1", "act", "norm", "lin2"]
    assert [n for n, _ in conv.norm.named_children()] == ["act", "layer_norm"]
    assert repr(conv) == "NodeToEdgeConv(6, 8, edge_dim=3, hidden=12, dropout=0.1)"
    perturb(conv)
    x = inputs(10, d=6)
    ei = random_graph(B, seed=2)
    w = inputs(11, n=B * B, d=3).view(B, B, 3)
    out = conv(x, ei, w[ei[0], ei[1]])
    ref = dense_node_to_edge(conv, x, w)[ei[0], ei[1]]
    assert out.shape == (ei.size(1), D)
    torch.testing.assert_close(out, ref, atol=TOL, rtol=0)
    assert_grads_match([out], [ref], [x] + params(conv))
    lazy = NodeToEdgeConv(-1, D, edge_dim=-1).double().eval()
    out = lazy(x, ei, w[ei[0], ei[1]])  # lin_q (used through its weight) materialised too
    assert lazy.lin_q.weight.shape == (D, 3) and lazy.lin_node.weight.shape == (D, 6)
    torch.testing.assert_close(out, dense_node_to_edge(lazy, x, w)[ei[0], ei[1]], atol=TOL, rtol=0)


@pytest.mark.parametrize("norm", ["tanh", "none"])
def test_node_to_edge_custom_or_no_norm_uses_plain_path(norm):
    torch.manual_seed(2)
    x = inputs(6)
    ei = complete_graph(B)
    w = dense_correlation(inputs(7)).detach()
    own = torch.nn.Sequential(torch.nn.Tanh(), torch.nn.LayerNorm(D)) if norm == "tanh" else False
    conv = perturb(NodeToEdgeConv(D, norm=own).double().eval())
    f = F.gelu(conv.lin_node(x))
    k, v = conv.lin_k(f), conv.lin_v(f)
    e0 = w[ei[0], ei[1]]
    q = conv.lin_q(e0)
    s_j = (q * k[ei[0]]).sum(-1) / D ** 0.5
    s_i = (q * k[ei[1]]).sum(-1) / D ** 0.5
    beta = torch.softmax(torch.stack([s_j, s_i], -1), -1)
    nrm = own if norm == "tanh" else torch.nn.Identity()
    e = nrm(e0 + beta[:, :1] * v[ei[0]] + beta[:, 1:] * v[ei[1]])
    torch.testing.assert_close(conv(x, ei, e0), nrm(e + conv.mlp(e)), atol=1e-12, rtol=0)


def test_node_to_edge_loads_state_dicts_with_the_old_numbered_names():
    conv = perturb(NodeToEdgeConv(D).double().eval())
    old = {}
    for key, value in conv.state_dict().items():  # the names before the sub-modules were named
        for new, was in (("mlp.lin1.", "mlp.0."), ("mlp.norm.", "mlp.2."), ("mlp.lin2.", "mlp.3."),
                         ("norm.layer_norm.", "norm.1.")):
            key = key.replace(new, was)
        old[key] = value
    fresh = NodeToEdgeConv(D).double().eval()
    fresh.load_state_dict(old)
    x, ei = inputs(3), complete_graph(B)
    e = inputs(4, n=ei.size(1))
    torch.testing.assert_close(fresh(x, ei, e), conv(x, ei, e), atol=0, rtol=0)
    # a custom Sequential norm keeps its own numbered names
    own = NodeToEdgeConv(D, norm=torch.nn.Sequential(torch.nn.Tanh(), torch.nn.LayerNorm(D)))
    own.load_state_dict(own.state_dict())


@pytest.mark.parametrize("layout", ["coo-values", "csr"])
def test_node_to_edge_on_a_sparse_adjacency_returns_its_storage_order(layout):
    x = inputs(12)
    ei = random_graph(B, seed=7)
    w = dense_correlation(inputs(13)).detach().requires_grad_(True)
    conv = perturb(NodeToEdgeConv(D).double().eval())
    order = row_major(ei, B)
    if layout == "coo-values":
        out = conv(x, sparse_coo(ei, B, w[ei[0], ei[1]]))
    else:
        out = conv(x, sparse_coo(ei, B).to_sparse_csr(), w[order[0], order[1]])
    ref = dense_node_to_edge(conv, x, w)[order[0], order[1]]
    torch.testing.assert_close(out, ref, atol=TOL, rtol=0)
    assert_grads_match([out], [ref], [x, w] + params(conv))


def test_node_to_edge_errors():
    with pytest.raises(ValueError, match=r"dropout must be a finite number in \[0, 1\)"):
        NodeToEdgeConv(D, dropout=1.0)
    ei = complete_graph(B)
    with pytest.raises(ValueError, match=r"expected \[E, C\] = \[25, 8\] for E = 25 edges on N = 5 nodes"):
        NodeToEdgeConv(D)(torch.randn(B, D), ei, torch.randn(ei.size(1), D + 1))


@pytest.mark.parametrize("recompute_hidden", [False, True])
def test_node_to_edge_compiles_fullgraph_like_eager(recompute_hidden):
    """The fused edge MLP's backward (also with recompute_hidden) is traced without a graph break."""
    ei = random_graph(B, seed=8)
    conv = perturb(NodeToEdgeConv(D, recompute_hidden=recompute_hidden)).eval()
    assert_compiled_equals_eager(conv, (torch.randn(B, D), ei, torch.randn(ei.size(1), D)))


@pytest.mark.slow
@pytest.mark.parametrize("recompute_hidden", [False, True])
def test_node_to_edge_compiles_with_inductor_like_eager(recompute_hidden):
    """The default backend (inductor) too (about 100 s on 2 busy cores: slow)."""
    ei = random_graph(B, seed=9)
    conv = perturb(NodeToEdgeConv(D, recompute_hidden=recompute_hidden)).eval()
    assert_compiled_equals_eager(conv, (torch.randn(B, D), ei, torch.randn(ei.size(1), D)), backend="inductor")
