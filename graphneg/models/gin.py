"""GIN graph encoder with concatenated per-layer readouts (InfoGraph / GraphCL encoder)."""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import Tensor
from torch.nn import BatchNorm1d, Linear, ModuleList, ReLU, Sequential
from torch_geometric.nn import GINConv, global_add_pool, global_max_pool, global_mean_pool

__all__ = ["GINEncoder"]

_POOLS = {"sum": global_add_pool, "mean": global_mean_pool, "max": global_max_pool}


class GINEncoder(torch.nn.Module):
    r"""Graph Isomorphism Network encoder returning graph-level embeddings.

    Layer ``l`` (Xu et al., "How Powerful are Graph Neural Networks?", ICLR 2019, Eq. 4.1, with
    ``eps = 0``):

    .. math::
        \mathbf{h}_i^{(l)} = \mathrm{BN}\Big(\mathrm{ReLU}\big(\mathrm{MLP}^{(l)}
        \big(\mathbf{h}_i^{(l-1)} + \textstyle\sum_{j \in \mathcal{N}(i)} \mathbf{h}_j^{(l-1)}\big)
        \big)\Big),\qquad \mathrm{MLP} = \mathrm{Linear} \to \mathrm{ReLU} \to \mathrm{Linear}

    and the graph embedding concatenates the pooled output of every layer,

    .. math::
        \mathbf{h}_G = \big[\, \mathrm{POOL}(\{\mathbf{h}_i^{(1)}\}) \,\|\, \cdots \,\|\,
        \mathrm{POOL}(\{\mathbf{h}_i^{(L)}\}) \,\big],

    as in InfoGraph (Sun et al., ICLR 2020, Eq. 3-4) and GraphCL's unsupervised TU encoder; the
    layer order (GINConv, ReLU, then BatchNorm) follows their official code (HCL
    ``graph/gin.py`` ``Encoder``, a copy of InfoGraph's). Sum pooling is the default (GIN's
    injective readout).

    Args:
        in_channels (int, optional): node feature size ``F``; ``None`` (default): the layers are made
            later by :meth:`build` (``GraphContrastiveModule.setup()`` passes the DataModule's
            ``num_features``).
        hidden_channels (int): width ``H`` of every layer (InfoGraph / HCL: 32).
        num_layers (int): number of GIN layers ``L`` (HCL's TU runs: 3).
        pooling (str): ``"sum"``, ``"mean"`` or ``"max"`` readout.
        train_eps (bool): learn GIN's ``eps`` (default ``False``: ``eps = 0`` as the references).

    Shapes:
        - **input:** node features ``[N, F]``, ``edge_index [2, E]``, ``batch [N]`` (optional,
          all zeros = one graph)
        - **output:** graph embeddings ``[G, H * L]``; with ``return_node_embeddings=True`` also the
          concatenated node embeddings ``[N, H * L]`` (InfoGraph's local features).
    """

    def __init__(self, in_channels: Optional[int] = None, hidden_channels: int = 32, num_layers: int = 3,
                 pooling: str = "sum", train_eps: bool = False):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("hidden_channels", hidden_channels),
                            ("num_layers", num_layers)):
            if name == "in_channels" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GINEncoder {name} must be a positive integer, got {value!r}")
        if pooling not in _POOLS:
            raise ValueError(f"GINEncoder pooling must be one of {tuple(_POOLS)}, got {pooling!r}")
        self.in_channels: Optional[int] = None
        self.hidden_channels = hidden_channels
        self.num_layers = num_layers
        self.pooling = pooling
        self.train_eps = bool(train_eps)
        self.out_channels = hidden_channels * num_layers
        self.convs = ModuleList()
        self.norms = ModuleList()
        self.act = ReLU()
        if in_channels is not None:
            self.build(in_channels)

    def build(self, in_channels: int) -> "GINEncoder":
        """Create the layers for node features of size ``in_channels`` (an encoder made with
        ``in_channels=None`` has none yet).

        :class:`graphneg.models.GraphContrastiveModule` calls this in its ``setup()`` with the
        DataModule's ``num_features``, so YAML configs need not repeat ``in_channels`` (issue 12: a
        jsonargparse link into the encoder's ``init_args`` is rejected by jsonargparse 4.53 whenever the
        encoder ``class_path`` is a function). The layers' initial weights are then drawn at setup, after
        the other modules', so a run differs in its random initialisation (not in the architecture) from
        one with ``in_channels`` given explicitly. Calling it on a built encoder is an error.
        """
        if self.in_channels is not None:
            raise ValueError(f"GINEncoder already has its layers (in_channels={self.in_channels}); build() "
                             "is only for an encoder created with in_channels=None")
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"GINEncoder in_channels must be a positive integer, got {in_channels!r}")
        self.in_channels = in_channels
        for layer in range(self.num_layers):
            first = in_channels if layer == 0 else self.hidden_channels
            mlp = Sequential(Linear(first, self.hidden_channels), ReLU(),
                             Linear(self.hidden_channels, self.hidden_channels))
            self.convs.append(GINConv(mlp, train_eps=self.train_eps))
            self.norms.append(BatchNorm1d(self.hidden_channels))
        self.reset_parameters()
        return self

    def reset_parameters(self) -> None:
        for conv in self.convs:
            conv.reset_parameters()
        for norm in self.norms:
            norm.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, batch: Optional[Tensor] = None,
                num_graphs: Optional[int] = None, return_node_embeddings: bool = False
                ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """Encode the graphs of a mini-batch.

        Args:
            x: node features ``[N, F]``.
            edge_index: ``[2, E]`` (source, target).
            batch: graph id of every node ``[N]`` (``None``: a single graph).
            num_graphs: number of graphs ``G`` (read from ``batch`` when omitted; passing it avoids
                a device synchronisation).
            return_node_embeddings: also return the ``[N, H * L]`` node embeddings.
        """
        if x is None:
            raise ValueError(
                "GINEncoder needs node features x; for graphs without attributes add one-hot degrees "
                "(torch_geometric.transforms.OneHotDegree) or use graphneg.data.tu.TUDataModule"
            )
        if self.in_channels is None:
            raise ValueError(
                "GINEncoder was made with in_channels=None and has no layers yet: call "
                "encoder.build(dataset.num_features) or train it in graphneg.models.GraphContrastiveModule, "
                "whose setup() builds it from the DataModule's num_features"
            )
        if x.dim() != 2 or x.size(-1) != self.in_channels:
            raise ValueError(
                f"GINEncoder expects node features of shape [N, {self.in_channels}] (in_channels), got "
                f"{tuple(x.shape)}; build the encoder with in_channels=dataset.num_features"
            )
        if batch is None:
            batch = x.new_zeros(x.size(0), dtype=torch.long)
            num_graphs = 1
        pool = _POOLS[self.pooling]
        h = x if x.is_floating_point() else x.float()
        nodes, graphs = [], []
        for conv, norm in zip(self.convs, self.norms):
            h = norm(self.act(conv(h, edge_index)))
            nodes.append(h)
            graphs.append(pool(h, batch, num_graphs))
        g = torch.cat(graphs, dim=-1)
        if return_node_embeddings:
            return g, torch.cat(nodes, dim=-1)
        return g

    def forward_data(self, data, return_node_embeddings: bool = False
                     ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """Encode a :class:`~torch_geometric.data.Batch` (or a single ``Data``): uses its ``x``,
        ``edge_index``, ``batch`` and ``num_graphs``."""
        batch = getattr(data, "batch", None)
        num_graphs = getattr(data, "num_graphs", None) if batch is not None else None
        return self.forward(data.x, data.edge_index, batch, num_graphs=num_graphs,
                            return_node_embeddings=return_node_embeddings)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.hidden_channels}, "
                f"num_layers={self.num_layers}, pooling={self.pooling!r}, "
                f"out_channels={self.out_channels})")
