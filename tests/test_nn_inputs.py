"""graphneg.nn.inputs: every adjacency form PyG layers accept becomes one [2, E] edge_index in the
adjacency's storage order (checked against the edge list written here), and the layers give the
same result on each form."""
import pytest
import torch
from nn_reference import B, D, dense_adj, inputs, perturb, random_graph, row_major, sparse_coo
from torch_geometric.typing import WITH_TORCH_SPARSE, SparseTensor

from graphneg.nn import EdgeToNodeConv
from graphneg.nn.inputs import edge_index_and_attr, is_sparse_adjacency

if WITH_TORCH_SPARSE:
    def make_sparse_tensor(ei, n, value=None):
        return SparseTensor(row=ei[1], col=ei[0], value=value, sparse_sizes=(n, n))
else:
    class _SparseTensorStandIn(SparseTensor):
        """torch_sparse is not installed: a stand-in with the torch_sparse.SparseTensor methods the
        layers call (``coo()`` in row-major order, ``sparse_sizes()``, ``set_value``)."""

        def __init__(self, row, col, value, sparse_sizes):
            order = torch.argsort(row * sparse_sizes[1] + col)
            self._row, self._col = row[order], col[order]
            self._value = None if value is None else value[order]
            self._sizes = sparse_sizes

        def coo(self):
            return self._row, self._col, self._value

        def sparse_sizes(self):
            return self._sizes

        def set_value(self, value, layout=None):
            return _SparseTensorStandIn(self._row, self._col, value, self._sizes)

    def make_sparse_tensor(ei, n, value=None):
        return _SparseTensorStandIn(ei[1], ei[0], value, (n, n))


def test_edge_index_and_attr_orders_and_values():
    ei = random_graph(B, seed=11)
    e = torch.randn(ei.size(1), 3)
    assert edge_index_and_attr(ei, B, e)[0] is ei  # a [2, E] tensor passes through
    rm = row_major(ei, B)
    order = torch.argsort(ei[1] * B + ei[0])
    crow = torch.cat([torch.zeros(1, dtype=torch.long), torch.bincount(rm[1], minlength=B).cumsum(0)])
    csr = torch.sparse_csr_tensor(crow, rm[0], e[order], (B, B, 3), check_invariants=True)  # hybrid CSR
    for adj in (sparse_coo(ei, B, e), csr, make_sparse_tensor(ei, B, e)):
        assert is_sparse_adjacency(adj)
        got, attr = edge_index_and_attr(adj, B)
        assert torch.equal(got, rm) and got.dtype == torch.long
        torch.testing.assert_close(attr, e[order])  # 2-D values are the edge features
    got, attr = edge_index_and_attr(sparse_coo(ei, B), B)  # 1-D values are weights, not features
    assert torch.equal(got, rm) and attr is None
    # an uncoalesced COO tensor (duplicate-free, unsorted) is coalesced first
    perm = torch.randperm(ei.size(1), generator=torch.Generator().manual_seed(0))
    raw = torch.sparse_coo_tensor(ei[:, perm].flip(0), e[perm], (B, B, 3), check_invariants=True)
    assert not raw.is_coalesced()
    got, attr = edge_index_and_attr(raw, B)
    assert torch.equal(got, rm)
    torch.testing.assert_close(attr, e[order])


@pytest.mark.parametrize("form", ["SparseTensor", "coo-uncoalesced"])
def test_layer_gives_the_same_result_on_every_form(form):
    x = inputs(1)
    ei = random_graph(B, seed=12)
    e = inputs(2, n=ei.size(1))
    conv = perturb(EdgeToNodeConv(D).double())
    ref = conv(x, ei, e)
    if form == "SparseTensor":
        out = conv(x, make_sparse_tensor(ei, B, e))
    else:
        out = conv(x, torch.sparse_coo_tensor(ei.flip(0), e, (B, B, D), check_invariants=True))
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    assert dense_adj(ei, B).sum() == ei.size(1)
