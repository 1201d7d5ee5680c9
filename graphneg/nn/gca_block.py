"""One GCA-HNG propagation block: node update (attention, edge-to-node, FFN), then edge update."""
from __future__ import annotations

from typing import Optional, Tuple

import torch.nn.functional as F
from torch import Tensor, nn

from graphneg.nn.edge_to_node import EdgeToNodeConv
from graphneg.nn.functional import gca_norm
from graphneg.nn.node_attention import NodeAttentionConv
from graphneg.nn.node_to_edge import NodeToEdgeConv


def attention_mask_from_labels(edge_index: Tensor, labels: Optional[Tensor]) -> Optional[Tensor]:
    """Boolean ``[E]`` mask of the edges joining nodes of different classes (``None`` without labels)."""
    if labels is None:
        return None
    return labels.index_select(0, edge_index[0]) != labels.index_select(0, edge_index[1])


class GCABlock(nn.Module):
    r"""One GCA-HNG block (official ``MetaLayer(GATNwtwork, Messagepasstoedge)``).

    Node update (official ``DotAttentionLayer``), with one normalisation
    :math:`\mathrm{norm} = \mathrm{LayerNorm}\circ\mathrm{GELU}` **shared by its three sub-steps**
    (the official module holds a single ``self.norm`` used three times; kept for fidelity):

    1. :class:`NodeAttentionConv` over other-class edges: ``h = norm(x + out(att))``;
    2. :class:`EdgeToNodeConv`: ``h = norm(h + sum_{out-edges} GELU(W e))``;
    3. feed-forward ``h = norm(h + W_2 GELU(W_1 h))``, ``D -> 4D -> D``;

    then the edge update :class:`NodeToEdgeConv` on the new node features (its own norm instance,
    shared by its two residuals, as the official ``Messagepasstoedge``). The unused official
    ``DotAttentionLayer.update_node`` linear layer (never called) is omitted.

    The attention mask is a property of the graph: with ``attn_mask`` (bool ``[E]``) only those
    edges enter the attention; otherwise with ``labels`` only other-class edges do (the official
    same-class mask); with neither, all edges. The edge-to-node and node-to-edge steps always use
    all edges (as in the official code).

    This composite is a plain :class:`torch.nn.Module` (like PyG's ``MetaLayer``); its three
    propagation steps are :class:`~torch_geometric.nn.MessagePassing` layers.

    Args:
        channels (int): feature size :math:`D` of nodes and edges.
        heads (int): attention heads. (default: ``4``)
        hidden_channels (int, optional): FFN / edge-MLP hidden size (default ``4 * channels``).
        dropout (float): dropout on the node-to-edge attention weights (official ``0.1``).

    Shapes:
        - **input:** ``x`` :math:`(N, D)`, ``edge_index`` :math:`(2, E)`,
          ``edge_attr`` :math:`(E, D)`, optional ``labels`` :math:`(N,)`, ``attn_mask``
          :math:`(E,)`
        - **output:** ``(x', edge_attr')`` of shapes :math:`(N, D)`, :math:`(E, D)`
    """

    def __init__(
        self,
        channels: int,
        heads: int = 4,
        hidden_channels: Optional[int] = None,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.channels = channels
        self.heads = heads
        self.hidden_channels = 4 * channels if hidden_channels is None else hidden_channels
        self.norm = gca_norm(channels)
        self.attention = NodeAttentionConv(channels, heads, norm=self.norm)
        self.edge_to_node = EdgeToNodeConv(channels, norm=self.norm)
        self.lin1 = nn.Linear(channels, self.hidden_channels)
        self.lin2 = nn.Linear(self.hidden_channels, channels)
        self.node_to_edge = NodeToEdgeConv(channels, self.hidden_channels, dropout=dropout)

    def reset_parameters(self) -> None:
        self.attention.reset_parameters()
        self.edge_to_node.reset_parameters()
        self.lin1.reset_parameters()
        self.lin2.reset_parameters()
        self.node_to_edge.reset_parameters()

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor,
        labels: Optional[Tensor] = None,
        attn_mask: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor]:
        if attn_mask is None:
            attn_mask = attention_mask_from_labels(edge_index, labels)
        h = self.attention(x, edge_index, attn_mask=attn_mask)
        h = self.edge_to_node(h, edge_index, edge_attr)
        h = self.norm(h + self.lin2(F.gelu(self.lin1(h))))
        e = self.node_to_edge(h, edge_index, edge_attr)
        return h, e

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.channels}, heads={self.heads}, "
                f"hidden={self.hidden_channels})")


__all__ = ["GCABlock", "attention_mask_from_labels"]
