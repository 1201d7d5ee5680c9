"""NodeAttentionConv against the dense official MultiHeadDotProduct + utils.softmax (tests/nn_reference.py)."""
import pytest
import torch
from nn_reference import (B, D, H, LABELS, TOL, assert_compiled_equals_eager, assert_grads_match, complete_graph,
                          dense_adj, dense_attention, inputs, params, perturb, random_graph, row_major, sparse_coo)

from graphneg.nn import NodeAttentionConv


@pytest.mark.parametrize("masked", [False, True])
def test_node_attention_matches_dense(masked):
    torch.manual_seed(0)
    x = inputs()
    ei = complete_graph(B)
    conv = perturb(NodeAttentionConv(D, heads=H).double())
    mask = LABELS[ei[0]] != LABELS[ei[1]] if masked else None
    out, (used, alpha) = conv(x, ei, attn_mask=mask, return_attention_weights=True)
    allowed = dense_adj(ei if mask is None else ei[:, mask], B)
    ref, ref_alpha = dense_attention(conv, x, allowed)
    torch.testing.assert_close(out, ref, atol=TOL, rtol=0)
    assert torch.equal(used, ei)  # weights of every edge, 0 at the masked ones
    torch.testing.assert_close(alpha, ref_alpha[:, ei[0], ei[1]].t(), atol=TOL, rtol=0)
    assert_grads_match([out], [ref], [x] + params(conv))


def test_node_attention_no_weight_between_same_class():
    x = inputs(2)
    ei = complete_graph(B)
    conv = NodeAttentionConv(D, heads=H).double()
    mask = LABELS[ei[0]] != LABELS[ei[1]]
    _, (used, alpha) = conv(x, ei, attn_mask=mask, return_attention_weights=True)
    assert bool((alpha[mask] > 0).all()) and bool((alpha[~mask] == 0).all())
    # extra zero logit: weights of a node sum to strictly less than 1
    sums = torch.zeros(B, H, dtype=alpha.dtype).index_add_(0, used[1], alpha.detach())
    assert bool((sums < 1).all())
    # perturbing a node only moves nodes of other classes
    h0 = conv(x, ei, attn_mask=mask)
    x2 = x.detach().clone()
    x2[2] += 5.0  # node 2 has class 0, like node 0
    h1 = conv(x2, ei, attn_mask=mask)
    changed = (h1 - h0).abs().amax(dim=1) > 1e-9
    assert not bool(changed[0])  # same class as node 2: unaffected
    assert bool(changed[1]) and bool(changed[3]) and bool(changed[4])


def test_node_attention_masked_edges_get_no_gradient_and_equal_absent_edges():
    x = inputs(3)
    ei = complete_graph(B)
    mask = LABELS[ei[0]] != LABELS[ei[1]]
    conv = perturb(NodeAttentionConv(D, heads=H).double())
    a = conv(x, ei, attn_mask=mask)
    b = conv(x, ei[:, mask])
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    assert_grads_match([a], [b], [x] + params(conv), atol=1e-12)


def test_node_attention_sparse_graph_equals_dense_restricted():
    x = inputs(3)
    ei = complete_graph(B)[:, torch.tensor([1, 2, 5, 8, 9, 13, 15, 17, 21, 22])]
    conv = NodeAttentionConv(D, heads=H).double()
    out = conv(x, ei)
    ref, _ = dense_attention(conv, x, dense_adj(ei, B))
    torch.testing.assert_close(out, ref, atol=TOL, rtol=0)
    assert_grads_match([out], [ref], [x] + params(conv))


def test_node_attention_stable_for_large_scores():
    # the official max-shift keeps exp() finite; the formula exp(s)/(sum exp(s)+1) -> ~softmax
    x = inputs(4) * 200
    conv = NodeAttentionConv(D, heads=H).double()
    assert bool(torch.isfinite(conv(x, complete_graph(B))).all())


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_node_attention_on_a_sparse_adjacency(layout):
    x = inputs(5)
    ei = random_graph(B, seed=4)
    adj = sparse_coo(ei, B)
    adj = adj.to_sparse_csr() if layout == "csr" else adj
    conv = perturb(NodeAttentionConv(D, heads=H).double())
    out, (adj_alpha, alpha) = conv(x, adj, return_attention_weights=True)
    ref, ref_alpha = dense_attention(conv, x, dense_adj(ei, B))
    torch.testing.assert_close(out, ref, atol=TOL, rtol=0)
    order = row_major(ei, B)  # the adjacency's storage order
    torch.testing.assert_close(alpha, ref_alpha[:, order[0], order[1]].t(), atol=TOL, rtol=0)
    assert adj_alpha.layout == adj.layout and adj_alpha.shape == (B, B, H)
    torch.testing.assert_close(adj_alpha.to_dense(), ref_alpha.permute(2, 1, 0), atol=TOL, rtol=0)


def test_node_attention_in_out_channels_skip_projection_and_lazy_init():
    x = inputs(6, d=6)
    ei = random_graph(B, seed=5)
    conv = perturb(NodeAttentionConv(6, D, heads=H).double())
    assert conv.lin_skip is not None and repr(conv) == "NodeAttentionConv(6, 8, heads=2)"
    out = conv(x, ei)
    ref, _ = dense_attention(conv, x, dense_adj(ei, B))
    assert out.shape == (B, D)
    torch.testing.assert_close(out, ref, atol=TOL, rtol=0)
    assert_grads_match([out], [ref], [x] + params(conv))
    assert NodeAttentionConv(D, heads=H).lin_skip is None  # official identity residual
    lazy = NodeAttentionConv(-1, D, heads=H).double()
    assert repr(lazy) == "NodeAttentionConv(-1, 8, heads=2)"
    out = lazy(x, ei)  # materialises the weights from x
    assert lazy.lin_q.weight.shape == (D, 6) and lazy.lin_skip.weight.shape == (D, 6)
    torch.testing.assert_close(out, dense_attention(lazy, x, dense_adj(ei, B))[0], atol=TOL, rtol=0)


def test_node_attention_norm_argument_and_reset():
    conv = NodeAttentionConv(D, heads=H, norm=False)
    assert conv.norm is None
    x = inputs(7).float()
    ei = complete_graph(B)
    ref, _ = dense_attention(conv, x, dense_adj(ei, B))  # no norm: the raw residual sum
    torch.testing.assert_close(conv(x, ei), ref, atol=1e-6, rtol=0)
    own = torch.nn.Sequential(torch.nn.Tanh())
    assert NodeAttentionConv(D, heads=H, norm=own).norm is own
    with torch.no_grad():
        conv.lin_q.bias.fill_(3.0)
    conv.reset_parameters()
    assert float(conv.lin_q.bias.detach().abs().max()) == 0.0


def test_node_attention_errors():
    with pytest.raises(ValueError, match="heads must divide out_channels"):
        NodeAttentionConv(10, heads=3)
    conv = NodeAttentionConv(D, heads=H)
    ei = complete_graph(B)
    with pytest.raises(ValueError, match=r"attn_mask must be a bool tensor of shape \[E\] = \[25\]"):
        conv(torch.randn(B, D), ei, attn_mask=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="x must have 8 channels"):
        conv(torch.randn(B, D + 1), ei)


def test_node_attention_compiles_fullgraph_like_eager():
    ei = complete_graph(B)
    mask = LABELS[ei[0]] != LABELS[ei[1]]
    conv = perturb(NodeAttentionConv(D, heads=H))
    assert_compiled_equals_eager(conv, (torch.randn(B, D), ei), dict(attn_mask=mask))
