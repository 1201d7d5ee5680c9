"""One GCA-HNG propagation block: node update (attention, edge-to-node, FFN), then edge update."""
from __future__ import annotations

from typing import Optional, Tuple

import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn.dense.linear import Linear

from graphneg.nn.edge_mlp import GCA_NORM_RENAMES, gca_norm, reset_norm
from graphneg.nn.edge_to_node import EdgeToNodeConv
from graphneg.nn.inputs import Adj, edge_index_and_attr, rename_state_dict_keys
from graphneg.nn.node_attention import NodeAttentionConv
from graphneg.nn.node_to_edge import NodeToEdgeConv
from graphneg.validation import check_edge_features, check_edge_mask, check_node_features


def attention_mask_from_labels(edge_index: Tensor, labels: Optional[Tensor]) -> Optional[Tensor]:
    """Boolean ``[E]`` mask of the edges joining nodes of different classes (``None`` without labels)."""
    if labels is None:
        return None
    return labels.index_select(0, edge_index[0]) != labels.index_select(0, edge_index[1])


class GCABlock(nn.Module):
    r"""One GCA-HNG block (official ``MetaLayer(GATNwtwork, Messagepasstoedge)``).

    Node update (official ``DotAttentionLayer``), with one normalisation
    :math:`\mathrm{norm} = \mathrm{LayerNorm}\circ\mathrm{GELU}` **applied after each of its three
    sub-steps** (the official module holds a single ``self.norm`` used three times; kept for
    fidelity: the block owns it as :attr:`norm`, its two node layers are built with
    ``norm=False`` and share no module):

    1. :class:`NodeAttentionConv` over other-class edges: ``h = norm(W_s x + out(att))``;
    2. :class:`EdgeToNodeConv`: ``h = norm(h + sum_{out-edges} GELU(W e))``;
    3. feed-forward ``h = norm(h + W_2 GELU(W_1 h))``, ``D -> 4D -> D`` (:attr:`lin1`, :attr:`lin2`);

    then the edge update :class:`NodeToEdgeConv` on the new node features (its own norm instance,
    used by its two residuals, as the official ``Messagepasstoedge``). The unused official
    ``DotAttentionLayer.update_node`` linear layer (never called) is omitted.

    The attention mask is a property of the graph: with ``attn_mask`` (bool ``[E]``) only those
    edges enter the attention; otherwise with ``labels`` only other-class edges do (the official
    same-class mask); with neither, all edges. The edge-to-node and node-to-edge steps always use
    all edges (as in the official code).

    This composite is a plain :class:`torch.nn.Module` (like PyG's ``MetaLayer``); its three
    propagation steps are :class:`~torch_geometric.nn.MessagePassing` layers.

    Args:
        in_channels (int): input node feature size (``-1``: lazy; the attention's residual is
            then a projection).
        out_channels (int, optional): node and edge output size :math:`D` (default:
            ``in_channels``).
        heads (int): attention heads. (default: ``4``)
        hidden_channels (int, optional): FFN / edge-MLP hidden size (default ``4 * out_channels``).
        dropout (float): dropout on the node-to-edge attention weights (official ``0.1``).
        edge_dim (int, optional): input edge feature size (default: ``out_channels``).
        recompute_hidden (bool): passed to :class:`NodeToEdgeConv` (activation checkpointing of
            its ``[E, hidden]`` edge-MLP layer). (default: ``False``)

    Shapes:
        - **input:** ``x`` :math:`(N, F_{in})`, ``edge_index`` :math:`(2, E)` or a sparse
          adjacency ``adj_t`` :math:`(N, N)`, ``edge_attr`` :math:`(E, F_e)` (edge order as
          in :mod:`graphneg.nn.inputs`), optional ``labels`` :math:`(N,)`, ``attn_mask``
          :math:`(E,)`
        - **output:** ``(x', edge_attr')`` of shapes :math:`(N, D)`, :math:`(E, D)`
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: Optional[int] = None,
        heads: int = 4,
        hidden_channels: Optional[int] = None,
        dropout: float = 0.1,
        edge_dim: Optional[int] = None,
        recompute_hidden: bool = False,
    ):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.heads = heads
        self.hidden_channels = 4 * out_channels if hidden_channels is None else hidden_channels
        self.edge_dim = out_channels if edge_dim is None else edge_dim
        self.norm = gca_norm(out_channels)
        self.attention = NodeAttentionConv(in_channels, out_channels, heads, norm=False)
        self.edge_to_node = EdgeToNodeConv(out_channels, out_channels, self.edge_dim, norm=False)
        self.lin1 = Linear(out_channels, self.hidden_channels)
        self.lin2 = Linear(self.hidden_channels, out_channels)
        self.node_to_edge = NodeToEdgeConv(out_channels, out_channels, self.edge_dim, self.hidden_channels,
                                           dropout=dropout, recompute_hidden=recompute_hidden)
        # state dicts saved while the node layers shared the block's norm hold it three times
        renames = {"norm." + k: "norm." + v for k, v in GCA_NORM_RENAMES.items()}
        renames.update({"attention.norm.": None, "edge_to_node.norm.": None})
        rename_state_dict_keys(self, renames)

    def reset_parameters(self) -> None:
        self.attention.reset_parameters()
        self.edge_to_node.reset_parameters()
        self.lin1.reset_parameters()
        self.lin2.reset_parameters()
        self.node_to_edge.reset_parameters()
        reset_norm(self.norm)

    def forward(
        self,
        x: Tensor,
        edge_index: Adj,
        edge_attr: Optional[Tensor] = None,
        labels: Optional[Tensor] = None,
        attn_mask: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor]:
        check_node_features(x, self.in_channels)
        n = x.size(0)
        edge_index, edge_attr = edge_index_and_attr(edge_index, n, edge_attr)
        check_edge_features(edge_attr, edge_index.size(1), n, self.edge_dim)
        check_edge_mask(attn_mask, edge_index.size(1))
        if attn_mask is None:
            attn_mask = attention_mask_from_labels(edge_index, labels)
        h = self.norm(self.attention(x, edge_index, attn_mask=attn_mask))
        h = self.norm(self.edge_to_node(h, edge_index, edge_attr))
        h = self.norm(h + self.lin2(F.gelu(self.lin1(h))))
        e = self.node_to_edge(h, edge_index, edge_attr)
        return h, e

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, heads={self.heads}, "
                f"hidden={self.hidden_channels})")


__all__ = ["GCABlock", "attention_mask_from_labels"]
