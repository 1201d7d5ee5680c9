"""GCAGNN against the dense official GNNDecoder (tests/nn_reference.py)."""
import pytest
import torch
from nn_reference import (B, D, H, LABELS, TOL, assert_compiled_equals_eager, assert_grads_match, complete_graph,
                          dense_adj, dense_gnn, inputs, params, perturb, row_major, sparse_coo)

from graphneg.nn import GCAGNN


def symmetric_graph():
    adj = dense_adj(complete_graph(B), B) & ~torch.tensor(
        [[0, 1, 0, 0, 1], [1, 0, 0, 1, 0], [0, 0, 0, 1, 1], [0, 1, 1, 0, 0], [1, 0, 1, 0, 0]], dtype=torch.bool)
    return adj.nonzero().t()  # row-major (source, target) order


@pytest.mark.parametrize("graph", ["complete", "sparse", "sparse-adjacency"])
def test_gnn_matches_dense(graph):
    torch.manual_seed(2)
    x = inputs(12)
    ei = complete_graph(B) if graph == "complete" else symmetric_graph()
    gnn = perturb(GCAGNN(D, num_classes=3, num_layers=2, heads=H, dropout=0.0).double().train())
    if graph == "sparse-adjacency":  # adj_t as CSR; the edges come back in its row-major order
        out = gnn(x, sparse_coo(ei, B).to_sparse_csr(), labels=LABELS)
        ei = row_major(ei, B)
    else:
        out = gnn(x, ei, labels=LABELS)
    present = dense_adj(ei, B)
    allowed = present & (LABELS[:, None] != LABELS[None, :])
    rh, rw, rlam, rlogits = dense_gnn(gnn, x, present, allowed)
    order = torch.argsort(ei[0] * B + ei[1])  # dense w[present] is row-major in (source, target)
    torch.testing.assert_close(out.x, rh, atol=TOL, rtol=0)
    torch.testing.assert_close(out.edge_attr, rw[ei[0], ei[1]], atol=TOL, rtol=0)
    torch.testing.assert_close(out.lam[order], rlam, atol=TOL, rtol=0)
    torch.testing.assert_close(out.logits, rlogits, atol=TOL, rtol=0)
    assert bool((out.lam > 0).all()) and bool((out.lam < 1).all())
    assert_grads_match([out.lam[order], out.logits], [rlam, rlogits], [x] + params(gnn))


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
    assert repr(gnn.blocks[0].attention) == "NodeAttentionConv(8, 8, heads=2)"


def test_gnn_recompute_hidden_passed_down_and_checkpoint_deprecated():
    gnn = GCAGNN(D, num_classes=3, num_layers=2, heads=H, recompute_hidden=True)
    assert gnn.recompute_hidden and all(b.node_to_edge.recompute_hidden for b in gnn.blocks)
    assert repr(gnn).endswith("recompute_hidden=True)")
    with pytest.raises(AttributeError):
        gnn.recompute_hidden = False  # fixed at construction
    assert not any(b.node_to_edge.recompute_hidden for b in GCAGNN(D, 3, heads=H).blocks)
    with pytest.warns(FutureWarning, match=r"GCAGNN\(checkpoint=...\) is deprecated, use recompute_hidden"):
        old = GCAGNN(D, num_classes=3, num_layers=2, heads=H, checkpoint=True)
    assert all(b.node_to_edge.recompute_hidden for b in old.blocks)
    with pytest.warns(FutureWarning, match="GCAGNN.checkpoint is deprecated"):
        assert old.checkpoint is True
    # same values and gradients as without recomputation
    plain = GCAGNN(D, num_classes=3, num_layers=2, heads=H, dropout=0.0).double()
    ckpt = GCAGNN(D, num_classes=3, num_layers=2, heads=H, dropout=0.0, recompute_hidden=True).double()
    ckpt.load_state_dict(plain.state_dict())
    x, ei = inputs(5), complete_graph(B)
    a, b = plain(x, ei, labels=LABELS), ckpt(x, ei, labels=LABELS)
    torch.testing.assert_close(a.lam, b.lam, atol=0, rtol=0)
    ga = torch.autograd.grad(a.lam.sum() + a.logits.sum(), [x] + params(plain))
    gb = torch.autograd.grad(b.lam.sum() + b.logits.sum(), [x] + params(ckpt))
    for u, v in zip(ga, gb):
        torch.testing.assert_close(u, v, atol=1e-12, rtol=1e-12)


def test_gnn_errors():
    with pytest.raises(ValueError, match="heads must divide"):
        GCAGNN(10, num_classes=3, heads=4)
    with pytest.raises(ValueError, match="x must have 8 channels"):
        GCAGNN(D, num_classes=3, heads=H)(torch.randn(B, D + 1), complete_graph(B))
    with pytest.raises(ValueError, match=r"edge_attr must hold one feature row per edge.*E = 25 edges on N = 5"):
        GCAGNN(D, num_classes=3, heads=H)(torch.randn(B, D), complete_graph(B), edge_attr=torch.randn(B, D))


def test_gnn_compiles_fullgraph_like_eager():
    gnn = GCAGNN(D, num_classes=3, num_layers=1, heads=H, recompute_hidden=True, dropout=0.0).train()
    assert_compiled_equals_eager(gnn, (torch.randn(B, D), complete_graph(B)), dict(labels=LABELS))


@pytest.mark.slow
def test_gnn_compiles_with_inductor_like_eager():
    """In float64: inductor's fused float32 kernels round differently (7e-5 on a gradient after 2 blocks)."""
    gnn = GCAGNN(D, num_classes=3, num_layers=2, heads=H, recompute_hidden=True, dropout=0.0).double().train()
    assert_compiled_equals_eager(gnn, (inputs(21), complete_graph(B)), dict(labels=LABELS), backend="inductor",
                                 atol=1e-10)
