"""Edge-to-node propagation of GCA-HNG."""
from __future__ import annotations

from typing import Optional, Union

import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.nn.dense.linear import Linear

from graphneg.nn.edge_mlp import GCA_NORM_RENAMES, reset_norm, resolve_norm
from graphneg.nn.inputs import Adj, edge_index_and_attr, rename_state_dict_keys, renamed_argument
from graphneg.validation import check_edge_features, check_node_features


class EdgeToNodeConv(MessagePassing):
    r"""GCA-HNG edge-to-node update: every node sums the transformed features of its edges.

    .. math::
        \mathbf{x}'_r = \mathrm{norm}\Big(W_s\mathbf{x}_r +
                        \sum_{e = (r, c)} \mathrm{GELU}(W \mathbf{e}_{e} + \mathbf{b})\Big),
        \qquad \mathrm{norm} = \mathrm{LayerNorm}\circ\mathrm{GELU},

    with :math:`W_s = I` when ``in_channels == out_channels`` (the official residual) and a
    learned bias-free projection otherwise.

    Source: official code ``scripts/models.py`` ``DotAttentionLayer.forward``
    (``scatter_add(GELU(edge_to_node(edge_attr)), edge_index[:, 0])``). The official sum runs over
    ``r = edge_index[0]``, which in PyG's convention is the *source* of the edge: a node sums its
    **out-edges**. This is PyG's ``flow="target_to_source"`` (aggregation at ``edge_index[0]``), the
    default here. Pass ``flow="source_to_target"`` to sum over in-edges instead (the two coincide
    on graphs whose edge features are symmetric, e.g. GCA-HNG's complete or symmetrised graphs).
    Both flows accept a sparse adjacency (it is turned into ``edge_index`` first,
    :mod:`graphneg.nn.inputs`; PyG's own ``propagate`` refuses ``target_to_source`` there).

    Args:
        in_channels (int): input node feature size; ``-1`` for lazy initialisation (then the
            residual is a learned projection).
        out_channels (int, optional): output node feature size (default: ``in_channels``).
        edge_dim (int, optional): edge feature size (default: ``out_channels``, as in GCA-HNG;
            ``-1`` for lazy initialisation).
        norm (torch.nn.Module or bool, optional): post-residual normalisation; ``None`` or
            ``True``: a fresh ``GELU -> LayerNorm(out_channels)``; ``False``: none
            (:class:`~graphneg.nn.GCABlock` applies its own); or a module of this layer's own.
        flow (str): ``"target_to_source"`` (official: out-edges) or ``"source_to_target"``.
        **kwargs: forwarded to :class:`torch_geometric.nn.MessagePassing`
            (``edge_channels=`` is the deprecated name of ``edge_dim``).

    Shapes:
        - **input:** ``x`` :math:`(N, F_{in})`, ``edge_index`` :math:`(2, E)` or a sparse
          adjacency ``adj_t`` :math:`(N, N)`, ``edge_attr`` :math:`(E, F_e)` in ``edge_index``'s
          order (for a sparse adjacency: its storage order, row-major for COO / CSR /
          ``SparseTensor``; or ``None`` to use 2-D sparse values)
        - **output:** :math:`(N, F_{out})`
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: Optional[int] = None,
        edge_dim: Optional[int] = None,
        norm: Union[nn.Module, bool, None] = None,
        flow: str = "target_to_source",
        **kwargs,
    ):
        edge_dim = renamed_argument(kwargs, "edge_channels", "edge_dim", edge_dim, type(self).__name__)
        kwargs.setdefault("aggr", "add")
        super().__init__(node_dim=0, flow=flow, **kwargs)
        self.in_channels = in_channels
        self.out_channels = in_channels if out_channels is None else out_channels
        if self.out_channels < 1:
            raise ValueError(f"out_channels must be a positive size, got {self.out_channels} "
                             "(pass out_channels explicitly with in_channels=-1)")
        self.edge_dim = self.out_channels if edge_dim is None else edge_dim
        self.lin = Linear(self.edge_dim, self.out_channels)
        self.lin_skip = (None if in_channels == self.out_channels
                         else Linear(in_channels, self.out_channels, bias=False, weight_initializer="glorot"))
        self.norm = resolve_norm(norm, self.out_channels)
        rename_state_dict_keys(self, {"norm." + k: "norm." + v for k, v in GCA_NORM_RENAMES.items()})
        self.reset_parameters()

    @property
    def edge_channels(self) -> int:
        """Deprecated name of :attr:`edge_dim`."""
        return self.edge_dim

    def reset_parameters(self) -> None:
        """PyTorch default ``Linear`` init (official ``edge_to_node.reset_parameters()``)."""
        super().reset_parameters()
        self.lin.reset_parameters()
        if self.lin_skip is not None:
            self.lin_skip.reset_parameters()
        reset_norm(self.norm)

    def forward(self, x: Tensor, edge_index: Adj, edge_attr: Optional[Tensor] = None) -> Tensor:
        check_node_features(x, self.in_channels)
        n = x.size(0)
        edge_index, edge_attr = edge_index_and_attr(edge_index, n, edge_attr)
        check_edge_features(edge_attr, edge_index.size(1), n, self.edge_dim)
        agg = self.propagate(edge_index, edge_attr=edge_attr, size=(n, n))
        out = (x if self.lin_skip is None else self.lin_skip(x)) + agg
        return out if self.norm is None else self.norm(out)

    def message(self, edge_attr: Tensor) -> Tensor:
        return F.gelu(self.lin(edge_attr))

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
                f"edge_dim={self.edge_dim}, flow={self.flow})")
