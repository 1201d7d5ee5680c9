"""CorrelationEdgeEncoder against the dense official GraphGenerator._get_W (tests/nn_reference.py)."""
import pytest
import torch
from nn_reference import (B, TOL, assert_compiled_equals_eager, assert_grads_match, complete_graph,
                          dense_correlation, inputs, random_graph, row_major, sparse_coo)

from graphneg.nn import CorrelationEdgeEncoder


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


@pytest.mark.parametrize("layout", ["coo", "csr", "csc"])
def test_correlation_on_a_sparse_adjacency_in_its_storage_order(layout):
    x = inputs(2)
    ei = random_graph(B, seed=3)
    adj = sparse_coo(ei, B)
    if layout == "csr":
        adj = adj.to_sparse_csr()
    elif layout == "csc":
        adj = adj.to_sparse_csc()
    e = CorrelationEdgeEncoder()(x, adj)
    # storage order: adj_t row-major (target, then source); CSC column-major (source, then target)
    order = row_major(ei, B) if layout != "csc" else ei[:, torch.argsort(ei[0] * B + ei[1])]
    torch.testing.assert_close(e, dense_correlation(x)[order[0], order[1]], atol=TOL, rtol=0)


def test_correlation_rejects_bad_inputs():
    enc = CorrelationEdgeEncoder()
    with pytest.raises(ValueError, match=r"x must be a floating tensor of node features \[N, C\]"):
        enc(torch.randn(B), complete_graph(B))
    with pytest.raises(ValueError, match=r"edge_index must have shape \[2, E\]"):
        enc(torch.randn(B, 4), complete_graph(B).t())
    with pytest.raises(TypeError, match="edge_index must hold integer node indices"):
        enc(torch.randn(B, 4), complete_graph(B).float())
    with pytest.raises(ValueError, match=r"sparse adjacency must have size \[N, N\] = \[5, 5\]"):
        enc(torch.randn(B, 4), sparse_coo(complete_graph(6), 6))


def test_correlation_compiles_fullgraph_like_eager():
    x = torch.randn(B, 6)
    assert_compiled_equals_eager(CorrelationEdgeEncoder(), (x, random_graph(B)))


@pytest.mark.slow
def test_correlation_compiles_with_inductor_like_eager():
    """The default backend (inductor, C++ code generation; about 30 s on 2 busy cores: slow)."""
    x = torch.randn(B, 6)
    assert_compiled_equals_eager(CorrelationEdgeEncoder(), (x, random_graph(B)), backend="inductor")
