"""GCABlock against the dense official MetaLayer(GATNwtwork, Messagepasstoedge) (tests/nn_reference.py)."""
import pytest
import torch
from nn_reference import (B, D, H, LABELS, TOL, assert_compiled_equals_eager, assert_grads_match, complete_graph,
                          dense_adj, dense_block, dense_correlation, inputs, params, perturb, random_graph,
                          row_major, sparse_coo)

from graphneg.nn import GCABlock


def test_block_shares_no_module_between_layers():
    block = GCABlock(D, heads=H)
    assert block.attention.norm is None and block.edge_to_node.norm is None  # the block applies its norm
    assert block.node_to_edge.norm is not None and block.node_to_edge.norm is not block.norm
    layers = [block.attention, block.edge_to_node, block.node_to_edge]
    for i, a in enumerate(layers):
        for b in layers[i + 1:]:
            assert not {id(m) for m in a.modules()} & {id(m) for m in b.modules()}
        assert not {id(m) for m in a.modules()} & {id(m) for m in block.norm.modules()}
    named = [name for name, _ in block.named_parameters(remove_duplicate=False)]
    assert len(named) == len(list(block.parameters()))  # every parameter has one name
    assert repr(block) == "GCABlock(8, 8, heads=2, hidden=32)"


@pytest.mark.parametrize("use_mask_arg", [False, True])
def test_block_matches_dense(use_mask_arg):
    torch.manual_seed(1)
    x = inputs(10)
    ei = complete_graph(B)
    w = dense_correlation(inputs(11)).detach().requires_grad_(True)
    block = perturb(GCABlock(D, heads=H).double().eval())
    mask = LABELS[ei[0]] != LABELS[ei[1]]
    if use_mask_arg:
        h, e = block(x, ei, w[ei[0], ei[1]], attn_mask=mask)
    else:
        h, e = block(x, ei, w[ei[0], ei[1]], labels=LABELS)
    rh, re = dense_block(block, x, w, dense_adj(ei, B), dense_adj(ei[:, mask], B))
    torch.testing.assert_close(h, rh, atol=TOL, rtol=0)
    torch.testing.assert_close(e, re[ei[0], ei[1]], atol=TOL, rtol=0)
    assert_grads_match([h, e], [rh, re[ei[0], ei[1]]], [x, w] + params(block))


def test_block_in_out_channels_and_sparse_adjacency():
    x = inputs(12, d=6)
    ei = random_graph(B, seed=2)
    w = dense_correlation(inputs(13)).detach().requires_grad_(True)
    block = perturb(GCABlock(6, D, heads=H, hidden_channels=12).double().eval())
    order = row_major(ei, B)
    h, e = block(x, sparse_coo(ei, B, w[ei[0], ei[1]]), labels=LABELS)  # edge features as sparse values
    allowed = dense_adj(ei, B) & (LABELS[:, None] != LABELS[None, :])
    rh, re = dense_block(block, x, w, dense_adj(ei, B), allowed)
    assert h.shape == (B, D) and e.shape == (ei.size(1), D)
    torch.testing.assert_close(h, rh, atol=TOL, rtol=0)
    torch.testing.assert_close(e, re[order[0], order[1]], atol=TOL, rtol=0)  # the adjacency's order
    assert_grads_match([h, e], [rh, re[order[0], order[1]]], [x, w] + params(block))


def test_block_loads_state_dicts_saved_with_the_shared_norm():
    """Before, the block's norm was also stored under attention.norm and edge_to_node.norm, with
    numbered sub-module names; such a state dict still loads and gives the same outputs."""
    block = perturb(GCABlock(D, heads=H).double().eval())
    old = {}
    for key, value in block.state_dict().items():
        for new, was in (("mlp.lin1.", "mlp.0."), ("mlp.norm.", "mlp.2."), ("mlp.lin2.", "mlp.3."),
                         ("norm.layer_norm.", "norm.1.")):
            key = key.replace(new, was)
        old[key] = value
        if key.startswith("norm.1."):
            for layer in ("attention", "edge_to_node"):
                old[f"{layer}.{key}"] = value
    fresh = GCABlock(D, heads=H).double().eval()
    fresh.load_state_dict(old)
    x, ei = inputs(3), complete_graph(B)
    e = inputs(4, n=ei.size(1))
    for a, b in zip(fresh(x, ei, e, labels=LABELS), block(x, ei, e, labels=LABELS)):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_block_errors():
    block = GCABlock(D, heads=H)
    ei = complete_graph(B)
    with pytest.raises(ValueError, match=r"attn_mask must be a bool tensor of shape \[E\] = \[25\]"):
        block(torch.randn(B, D), ei, torch.randn(25, D), attn_mask=torch.ones(B, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"expected \[E, C\] = \[25, 8\] for E = 25 edges on N = 5 nodes"):
        block(torch.randn(B, D), ei, torch.randn(B, D))


def test_block_compiles_fullgraph_like_eager():
    ei = complete_graph(B)
    block = perturb(GCABlock(D, heads=H)).eval()
    assert_compiled_equals_eager(block, (torch.randn(B, D), ei, torch.randn(ei.size(1), D)), dict(labels=LABELS))


def test_block_lazy_in_channels():
    x = inputs(14, d=6)
    ei = complete_graph(B)
    w = dense_correlation(inputs(15)).detach()
    block = GCABlock(-1, D, heads=H).double().eval()
    h, e = block(x, ei, w[ei[0], ei[1]], labels=LABELS)  # the attention's weights materialise from x
    assert block.attention.lin_q.weight.shape == (D, 6) and h.shape == (B, D)
    rh, re = dense_block(block, x, w, dense_adj(ei, B), dense_adj(ei, B) & (LABELS[:, None] != LABELS[None, :]))
    torch.testing.assert_close(h, rh, atol=TOL, rtol=0)
    torch.testing.assert_close(e, re[ei[0], ei[1]], atol=TOL, rtol=0)
