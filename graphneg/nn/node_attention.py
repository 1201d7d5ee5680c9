"""Multi-head dot-product node-to-node attention with an extra zero logit (GCA-HNG)."""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter

from graphneg.nn.functional import gather_dot, gather_scale, gca_norm, reset_norm


def softmax_with_zero_logit(src: Tensor, index: Tensor, num_nodes: int) -> Tensor:
    r"""Grouped softmax with one extra, implicit logit of value 0 in every group.

    .. math:: \alpha_e = \frac{\exp(s_e)}{\sum_{e' : \mathrm{index}(e') = \mathrm{index}(e)}
              \exp(s_{e'}) + 1}

    Official code ``scripts/utils.py`` ``softmax`` with ``margin=0``: it subtracts
    ``m = max(0, max_e s_e)`` (the "+1" becomes ``exp(-m)``) for stability. The shift is
    mathematically neutral, so it is taken from detached scores here (no gradient flows through
    the max, exactly as the analytic gradient of the shift is zero).

    Shapes: ``src`` :math:`(E, *)`, ``index`` :math:`(E,)`, output :math:`(E, *)`.
    """
    shift = scatter(src.detach(), index, dim=0, dim_size=num_nodes, reduce="max").clamp_min(0.0)
    shift = shift.index_select(0, index)
    ex = (src - shift).exp()
    denom = scatter(ex, index, dim=0, dim_size=num_nodes, reduce="sum").index_select(0, index)
    return ex / (denom + (-shift).exp())


class NodeAttentionConv(MessagePassing):
    r"""GCA-HNG node-to-node attention: multi-head dot-product attention over the given edges.

    For every target node :math:`i` and head :math:`h` with :math:`C = D / H` channels,

    .. math::
        s^h_{ij} = \frac{\langle W_q^h \mathbf{x}_i, W_k^h \mathbf{x}_j\rangle}{\sqrt{C}},\qquad
        \alpha^h_{ij} = \frac{\exp s^h_{ij}}{\sum_{j' \in \mathcal{N}(i)} \exp s^h_{ij'} + 1},

    .. math::
        \mathbf{x}'_i = \mathrm{norm}\Big(\mathbf{x}_i + W_o\,\big\Vert_{h}
                        \textstyle\sum_{j \in \mathcal{N}(i)} \alpha^h_{ij} W_v^h \mathbf{x}_j\Big),
        \qquad \mathrm{norm} = \mathrm{LayerNorm}\circ\mathrm{GELU}.

    Source: Peng et al., GCA-HNG, Eq. (node-to-node propagation); official code
    ``scripts/models.py`` ``MultiHeadDotProduct`` (queries at the target ``c = edge_index[1]``,
    keys/values at the source ``r = edge_index[0]``, ``scatter_add`` at ``c``) and
    ``scripts/utils.py`` ``softmax`` (the "+1" is the extra zero logit). The official code masks
    same-class pairs inside the softmax with a hard-coded chunked batch layout; here the mask is
    a property of the graph: pass only the other-class edges, or a boolean per-edge
    ``attn_mask`` (``True`` = the edge takes part). Masked edges and absent edges are identical.

    Args:
        channels (int): node feature size :math:`D`.
        heads (int): number of heads :math:`H` (must divide :math:`D`). (default: ``4``)
        norm (torch.nn.Module, optional): the post-residual normalisation; a fresh
            ``GELU -> LayerNorm(D)`` when ``None``. :class:`~graphneg.nn.GCABlock` passes one
            instance shared with the other node sub-steps, as the official code does.
        **kwargs: forwarded to :class:`torch_geometric.nn.MessagePassing`.

    Shapes:
        - **input:** ``x`` :math:`(N, D)`, ``edge_index`` :math:`(2, E)`, optional
          ``attn_mask`` :math:`(E,)` bool
        - **output:** :math:`(N, D)`; with ``return_attention_weights=True`` also
          ``(edge_index', alpha)`` with ``alpha`` :math:`(E', H)` over the edges used.
    """

    def __init__(self, channels: int, heads: int = 4, norm: Optional[nn.Module] = None, **kwargs):
        kwargs.setdefault("aggr", "add")
        super().__init__(node_dim=0, **kwargs)
        if channels < 1 or heads < 1 or channels % heads != 0:
            raise ValueError(
                f"heads must divide channels: got channels={channels}, heads={heads}; "
                "choose e.g. heads=4 for channels=512"
            )
        self.channels = channels
        self.heads = heads
        self.lin_q = nn.Linear(channels, channels)
        self.lin_k = nn.Linear(channels, channels)
        self.lin_v = nn.Linear(channels, channels)
        self.lin_out = nn.Linear(channels, channels)
        self.norm = norm if norm is not None else gca_norm(channels)
        self._alpha: Optional[Tensor] = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform weights and zero biases (official ``MultiHeadDotProduct.reset_parameters``)."""
        super().reset_parameters()
        for lin in (self.lin_q, self.lin_k, self.lin_v, self.lin_out):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
        reset_norm(self.norm)

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: Optional[Tensor] = None,
        attn_mask: Optional[Tensor] = None,
        return_attention_weights: bool = False,
    ) -> Union[Tensor, Tuple[Tensor, Tuple[Tensor, Tensor]]]:
        """``edge_attr`` is accepted for a uniform ``(x, edge_index, edge_attr)`` call and unused."""
        if attn_mask is not None:
            if attn_mask.dtype != torch.bool or attn_mask.shape != (edge_index.size(1),):
                raise ValueError(
                    f"attn_mask must be a bool tensor of shape [E]={edge_index.size(1)}, got "
                    f"{attn_mask.dtype} {tuple(attn_mask.shape)}"
                )
            edge_index = edge_index[:, attn_mask]
        n, h, c = x.size(0), self.heads, self.channels // self.heads
        q = self.lin_q(x).view(n, h, c)
        k = self.lin_k(x).view(n, h, c)
        v = self.lin_v(x).view(n, h, c)
        out = self.propagate(edge_index, q=q, k=k, v=v, size=(n, n)).reshape(n, self.channels)
        out = self.norm(x + self.lin_out(out))
        alpha, self._alpha = self._alpha, None
        if return_attention_weights:
            return out, (edge_index, alpha)
        return out

    def message(self, q: Tensor, k: Tensor, v: Tensor, edge_index_i: Tensor,
                edge_index_j: Tensor, size_i: int) -> Tensor:
        # score = (q_i * k_j).sum(-1), message = alpha * v_j, computed with fused gathers so no
        # [E, D] tensor is kept for backward (graphneg.nn.functional)
        score = gather_dot(q, edge_index_i, k, edge_index_j) / math.sqrt(q.size(-1))  # [E, H]
        alpha = softmax_with_zero_logit(score, edge_index_i, size_i)
        self._alpha = alpha
        return gather_scale(v, edge_index_j, alpha)  # [E, H, C]

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.channels}, heads={self.heads})"
