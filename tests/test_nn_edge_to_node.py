"""EdgeToNodeConv against the dense official DotAttentionLayer edge -> node step (tests/nn_reference.py)."""
import pytest
import torch
from nn_reference import (B, D, TOL, assert_compiled_equals_eager, assert_grads_match, dense_adj,
                          dense_edge_to_node, inputs, params, perturb, random_graph, row_major, sparse_coo,
                          to_dense_edges)

from graphneg.nn import EdgeToNodeConv


def edge_features(n_edges, d=D, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_edges, d, generator=g, dtype=torch.float64).requires_grad_(True)


def reference(conv, x, ei, e, flow):
    present, w = dense_adj(ei, B), to_dense_edges(e, ei, B)
    if flow == "target_to_source":  # official: node r sums W[r, :] (its out-edges)
        return dense_edge_to_node(conv, x, w, present)
    return dense_edge_to_node(conv, x, w.transpose(0, 1), present.t())  # in-edges: node c sums W[:, c]


@pytest.mark.parametrize("flow", ["target_to_source", "source_to_target"])
def test_edge_to_node_matches_dense(flow):
    x = inputs(5)
    ei = random_graph(B, seed=1)  # asymmetric sparse graph
    e = edge_features(ei.size(1))
    conv = perturb(EdgeToNodeConv(D, flow=flow).double())
    out = conv(x, ei, e)
    ref = reference(conv, x, ei, e, flow)
    torch.testing.assert_close(out, ref, atol=TOL, rtol=0)
    assert_grads_match([out], [ref], [x, e] + params(conv))


def test_edge_to_node_in_out_and_edge_channels():
    x = inputs(6, d=6)
    ei = random_graph(B, seed=2)
    e = edge_features(ei.size(1), d=3)
    conv = perturb(EdgeToNodeConv(6, D, edge_dim=3).double())
    assert repr(conv) == "EdgeToNodeConv(6, 8, edge_dim=3, flow=target_to_source)"
    out = conv(x, ei, e)
    ref = reference(conv, x, ei, e, "target_to_source")
    assert out.shape == (B, D)
    torch.testing.assert_close(out, ref, atol=TOL, rtol=0)
    assert_grads_match([out], [ref], [x, e] + params(conv))
    lazy = EdgeToNodeConv(-1, D, edge_dim=-1).double()
    out = lazy(x, ei, e)  # weights materialised from x and e
    assert lazy.lin.weight.shape == (D, 3) and lazy.lin_skip.weight.shape == (D, 6)
    torch.testing.assert_close(out, reference(lazy, x, ei, e, "target_to_source"), atol=TOL, rtol=0)


@pytest.mark.parametrize("flow", ["target_to_source", "source_to_target"])
@pytest.mark.parametrize("layout", ["coo-values", "csr"])
def test_edge_to_node_on_a_sparse_adjacency(flow, layout):
    """adj_t[i, j] holds edge j -> i; edge features in the adjacency's row-major order (or as its
    2-D values); both flows work (PyG's propagate refuses target_to_source on a sparse input)."""
    x = inputs(7)
    ei = random_graph(B, seed=3)
    e = edge_features(ei.size(1), seed=4)
    order = torch.argsort(ei[1] * B + ei[0])  # row-major order of adj_t
    conv = perturb(EdgeToNodeConv(D, flow=flow).double())
    if layout == "coo-values":  # hybrid COO [N, N, D]: the values are the edge features
        out = conv(x, sparse_coo(ei, B, e))
    else:
        out = conv(x, sparse_coo(ei, B).to_sparse_csr(), e[order])
    ref = reference(conv, x, ei, e, flow)
    torch.testing.assert_close(out, ref, atol=TOL, rtol=0)
    assert_grads_match([out], [ref], [x, e] + params(conv))
    assert torch.equal(row_major(ei, B), ei[:, order])


def test_edge_to_node_wrong_edge_features_name_e_and_n():
    n, d = 30, 16
    ei = random_graph(n, p=0.14, seed=5)
    conv = EdgeToNodeConv(d)
    x = torch.randn(n, d)
    e_count = ei.size(1)
    with pytest.raises(ValueError, match=rf"expected \[E, C\] = \[{e_count}, 16\] for E = {e_count} edges on "
                                         rf"N = 30 nodes, got torch.float32 of shape \(30, 16\)"):
        conv(x, sparse_coo(ei, n), x)  # node features passed as edge features
    with pytest.raises(TypeError, match=rf"edge_attr is required.*E = {e_count} edges on N = 30 nodes"):
        conv(x, sparse_coo(ei, n))  # 1-D sparse values are weights, not edge features
    with pytest.raises(ValueError, match="edge_attr must hold one feature row per edge"):
        conv(x, ei, torch.randn(e_count, d + 1))


def test_edge_to_node_deprecated_edge_channels():
    with pytest.warns(FutureWarning, match="edge_channels=...\\) is deprecated, use edge_dim"):
        conv = EdgeToNodeConv(D, edge_channels=4)
    assert conv.edge_dim == 4 and conv.edge_channels == 4
    with pytest.raises(TypeError, match="pass edge_dim= only"):
        EdgeToNodeConv(D, edge_dim=4, edge_channels=4)


def test_edge_to_node_compiles_fullgraph_like_eager():
    ei = random_graph(B, seed=6)
    conv = perturb(EdgeToNodeConv(D))
    assert_compiled_equals_eager(conv, (torch.randn(B, D), ei, torch.randn(ei.size(1), D)))
