"""Edge-to-node propagation of GCA-HNG."""
from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing

from graphneg.nn.functional import gca_norm, reset_norm


class EdgeToNodeConv(MessagePassing):
    r"""GCA-HNG edge-to-node update: every node sums the transformed features of its edges.

    .. math::
        \mathbf{x}'_r = \mathrm{norm}\Big(\mathbf{x}_r +
                        \sum_{e = (r, c)} \mathrm{GELU}(W \mathbf{e}_{e} + \mathbf{b})\Big),
        \qquad \mathrm{norm} = \mathrm{LayerNorm}\circ\mathrm{GELU}.

    Source: official code ``scripts/models.py`` ``DotAttentionLayer.forward``
    (``scatter_add(GELU(edge_to_node(edge_attr)), edge_index[:, 0])``). The official sum runs over
    ``r = edge_index[0]``, which in PyG's convention is the *source* of the edge: a node sums its
    **out-edges**. This is PyG's ``flow="target_to_source"`` (aggregation at ``edge_index[0]``), the
    default here. Pass ``flow="source_to_target"`` to sum over in-edges instead (the two coincide
    on graphs whose edge features are symmetric, e.g. GCA-HNG's complete or symmetrised graphs).

    Args:
        channels (int): node feature size :math:`D`.
        edge_channels (int, optional): edge feature size (default: ``channels``).
        norm (torch.nn.Module, optional): post-residual normalisation; a fresh
            ``GELU -> LayerNorm(D)`` when ``None`` (:class:`~graphneg.nn.GCABlock` shares one).
        flow (str): ``"target_to_source"`` (official: out-edges) or ``"source_to_target"``.
        **kwargs: forwarded to :class:`torch_geometric.nn.MessagePassing`.

    Shapes:
        - **input:** ``x`` :math:`(N, D)`, ``edge_index`` :math:`(2, E)`,
          ``edge_attr`` :math:`(E, D_e)`
        - **output:** :math:`(N, D)`
    """

    def __init__(
        self,
        channels: int,
        edge_channels: Optional[int] = None,
        norm: Optional[nn.Module] = None,
        flow: str = "target_to_source",
        **kwargs,
    ):
        kwargs.setdefault("aggr", "add")
        super().__init__(node_dim=0, flow=flow, **kwargs)
        self.channels = channels
        self.edge_channels = channels if edge_channels is None else edge_channels
        self.lin = nn.Linear(self.edge_channels, channels)
        self.norm = norm if norm is not None else gca_norm(channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch default ``Linear`` init (official ``edge_to_node.reset_parameters()``)."""
        super().reset_parameters()
        self.lin.reset_parameters()
        reset_norm(self.norm)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        if edge_attr is None or edge_attr.size(0) != edge_index.size(1):
            raise ValueError(
                "edge_attr must hold one feature row per edge: expected "
                f"[{edge_index.size(1)}, {self.edge_channels}], got "
                f"{None if edge_attr is None else tuple(edge_attr.shape)}"
            )
        n = x.size(0)
        agg = self.propagate(edge_index, edge_attr=edge_attr, size=(n, n))
        return self.norm(x + agg)

    def message(self, edge_attr: Tensor) -> Tensor:
        return F.gelu(self.lin(edge_attr))

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.edge_channels}, {self.channels}, "
                f"flow={self.flow})")
