"""Channel-wise Pearson correlation edge features (GCA-HNG edge initialisation)."""
from __future__ import annotations

from torch import Tensor
from torch_geometric.nn import MessagePassing

from graphneg.nn.functional import gather_mul
from graphneg.nn.inputs import Adj, edge_index_and_attr
from graphneg.validation import check_node_features


class CorrelationEdgeEncoder(MessagePassing):
    r"""Initial edge features of GCA-HNG: the channel-wise split of the Pearson correlation.

    For every edge :math:`j \to i`

    .. math::
        \mathbf{e}_{ij,d} = \frac{\bar{x}_{i,d}\,\bar{x}_{j,d}}
                                 {\lVert\bar{\mathbf{x}}_i\rVert\,\lVert\bar{\mathbf{x}}_j\rVert},
        \qquad \bar{\mathbf{x}}_i = \mathbf{x}_i - \tfrac{1}{D}\textstyle\sum_d x_{i,d},

    so that :math:`\sum_d \mathbf{e}_{ij,d}` is the Pearson correlation of the two vectors
    (Peng et al., GCA-HNG, Sec. 3.2; official code ``scripts/graph_generator.py``
    ``GraphGenerator._get_W``, which builds the dense ``[B, B, D]`` tensor ``W[r, c]``).

    Here the nodes are centred and normalised once (``O(N * D)``) and the product is evaluated
    per edge by indexing (:func:`graphneg.nn.functional.gather_mul`, which keeps only the node
    tensor for backward), so a sparse graph costs ``O(E * D)`` instead of ``O(N^2 * D)``.
    The feature is symmetric, ``e_ij = e_ji``; the official ``W[r, c]`` of edge ``(r, c)`` is
    the feature of the PyG edge ``edge_index[:, e] = (r, c)``.

    Deviation: the norms are clamped at ``eps`` (the official divides by the raw norms, which
    gives NaN for a constant embedding).

    The layer has no parameters; the edge features keep the node feature size
    (``out_channels = in_channels = D``).

    Args:
        eps (float): lower bound of the centred norms. (default: ``1e-12``)

    Shapes:
        - **input:** node features ``x`` :math:`(N, D)`, ``edge_index`` :math:`(2, E)` or a
          sparse adjacency ``adj_t`` :math:`(N, N)` (:mod:`graphneg.nn.inputs`)
        - **output:** edge features :math:`(E, D)`, in ``edge_index``'s order (for a sparse
          adjacency, its storage order: row-major for COO / CSR / ``SparseTensor``)
    """

    def __init__(self, eps: float = 1e-12, **kwargs):
        kwargs.setdefault("aggr", "add")
        super().__init__(node_dim=0, **kwargs)
        self.eps = float(eps)

    def reset_parameters(self) -> None:
        """No learnable parameters (kept for the PyG layer interface)."""

    def forward(self, x: Tensor, edge_index: Adj) -> Tensor:
        check_node_features(x)
        edge_index, _ = edge_index_and_attr(edge_index, x.size(0))
        xc = x - x.mean(dim=-1, keepdim=True)
        xn = xc / xc.norm(dim=-1, keepdim=True).clamp_min(self.eps)
        return self.edge_updater(edge_index, xn=xn, size=(x.size(0), x.size(0)))

    def edge_update(self, xn: Tensor, edge_index_i: Tensor, edge_index_j: Tensor) -> Tensor:
        # == xn_i * xn_j, without keeping the two gathered [E, D] tensors for backward
        return gather_mul(xn, edge_index_i, edge_index_j)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(eps={self.eps})"
