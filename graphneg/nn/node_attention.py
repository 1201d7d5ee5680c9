"""Multi-head dot-product node-to-node attention with an extra zero logit (GCA-HNG)."""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.utils import scatter

from graphneg.nn.edge_mlp import GCA_NORM_RENAMES, reset_norm, resolve_norm
from graphneg.nn.functional import gather_dot, gather_scale
from graphneg.nn.inputs import Adj, edge_index_and_attr, is_sparse_adjacency, rename_state_dict_keys, sparse_with_values
from graphneg.validation import check_edge_mask, check_node_features


def softmax_with_zero_logit(src: Tensor, index: Tensor, num_nodes: int, mask: Optional[Tensor] = None) -> Tensor:
    r"""Grouped softmax with one extra, implicit logit of value 0 in every group.

    .. math:: \alpha_e = \frac{\exp(s_e)}{\sum_{e' : \mathrm{index}(e') = \mathrm{index}(e)}
              \exp(s_{e'}) + 1}

    Official code ``scripts/utils.py`` ``softmax`` with ``margin=0``: it subtracts
    ``m = max(0, max_e s_e)`` (the "+1" becomes ``exp(-m)``) for stability. The shift is
    mathematically neutral, so it is taken from detached scores here (no gradient flows through
    the max, exactly as the analytic gradient of the shift is zero).

    With a bool ``mask`` (:math:`(E,)`) only the entries where it is ``True`` take part: the
    others get weight 0 and no gradient, exactly as if they were absent (their scores are set to
    :math:`-\infty` before the exponential; no data-dependent shape, so no host sync).

    Shapes: ``src`` :math:`(E, *)`, ``index`` :math:`(E,)`, ``mask`` :math:`(E,)`, output
    :math:`(E, *)`.
    """
    if mask is not None:
        src = src.masked_fill(~mask.view((-1,) + (1,) * (src.dim() - 1)), float("-inf"))
    shift = scatter(src.detach(), index, dim=0, dim_size=num_nodes, reduce="max").clamp_min(0.0)
    shift = shift.index_select(0, index)
    ex = (src - shift).exp()
    denom = scatter(ex, index, dim=0, dim_size=num_nodes, reduce="sum").index_select(0, index)
    return ex / (denom + (-shift).exp())


class NodeAttentionConv(MessagePassing):
    r"""GCA-HNG node-to-node attention: multi-head dot-product attention over the given edges.

    For every target node :math:`i` and head :math:`h` with :math:`C = F_{out} / H` channels,

    .. math::
        s^h_{ij} = \frac{\langle W_q^h \mathbf{x}_i, W_k^h \mathbf{x}_j\rangle}{\sqrt{C}},\qquad
        \alpha^h_{ij} = \frac{\exp s^h_{ij}}{\sum_{j' \in \mathcal{N}(i)} \exp s^h_{ij'} + 1},

    .. math::
        \mathbf{x}'_i = \mathrm{norm}\Big(W_s\mathbf{x}_i + W_o\,\big\Vert_{h}
                        \textstyle\sum_{j \in \mathcal{N}(i)} \alpha^h_{ij} W_v^h \mathbf{x}_j\Big),
        \qquad \mathrm{norm} = \mathrm{LayerNorm}\circ\mathrm{GELU},

    with :math:`W_s = I` when ``in_channels == out_channels`` (the official residual) and a
    learned bias-free projection otherwise (as PyG's ``TransformerConv`` ``lin_skip``).

    Source: Peng et al., GCA-HNG, Eq. (node-to-node propagation); official code
    ``scripts/models.py`` ``MultiHeadDotProduct`` (queries at the target ``c = edge_index[1]``,
    keys/values at the source ``r = edge_index[0]``, ``scatter_add`` at ``c``) and
    ``scripts/utils.py`` ``softmax`` (the "+1" is the extra zero logit). The official code masks
    same-class pairs inside the softmax with a hard-coded chunked batch layout; here the mask is
    a property of the graph: pass only the other-class edges, or a boolean per-edge
    ``attn_mask`` (``True`` = the edge takes part). Masked edges and absent edges give the same
    output; masking costs no host sync (the edges are kept, with weight 0).

    Args:
        in_channels (int): input node feature size; ``-1`` for lazy initialisation (then the
            residual is a learned projection, since the size is unknown at construction).
        out_channels (int, optional): output size :math:`F_{out}` (default: ``in_channels``).
        heads (int): number of heads :math:`H` (must divide ``out_channels``). (default: ``4``)
        norm (torch.nn.Module or bool, optional): the post-residual normalisation; ``None`` or
            ``True``: a fresh ``GELU -> LayerNorm(F_out)``; ``False``: none (the raw residual
            sum; :class:`~graphneg.nn.GCABlock` applies its own norm, shared by its node
            sub-steps as in the official code); or a module of this layer's own.
        **kwargs: forwarded to :class:`torch_geometric.nn.MessagePassing`.

    Shapes:
        - **input:** ``x`` :math:`(N, F_{in})`, ``edge_index`` :math:`(2, E)` or a sparse
          adjacency ``adj_t`` :math:`(N, N)` (:mod:`graphneg.nn.inputs`), optional
          ``attn_mask`` :math:`(E,)` bool (in ``edge_index``'s order)
        - **output:** :math:`(N, F_{out})`; with ``return_attention_weights=True`` also
          ``(edge_index, alpha)``, ``alpha`` :math:`(E, H)` for every edge (0 where masked);
          for a sparse input the adjacency with ``alpha`` as values, as PyG's ``GATConv``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: Optional[int] = None,
        heads: int = 4,
        norm: Union[nn.Module, bool, None] = None,
        **kwargs,
    ):
        kwargs.setdefault("aggr", "add")
        super().__init__(node_dim=0, **kwargs)
        out_channels = in_channels if out_channels is None else out_channels
        if out_channels < 1 or heads < 1 or out_channels % heads != 0:
            raise ValueError(
                f"heads must divide out_channels: got out_channels={out_channels}, heads={heads}; "
                "choose e.g. heads=4 for out_channels=512"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.heads = heads
        glorot = dict(weight_initializer="glorot", bias_initializer="zeros")
        self.lin_q = Linear(in_channels, out_channels, **glorot)
        self.lin_k = Linear(in_channels, out_channels, **glorot)
        self.lin_v = Linear(in_channels, out_channels, **glorot)
        self.lin_out = Linear(out_channels, out_channels, **glorot)
        self.lin_skip = (None if in_channels == out_channels
                         else Linear(in_channels, out_channels, bias=False, weight_initializer="glorot"))
        self.norm = resolve_norm(norm, out_channels)
        rename_state_dict_keys(self, {"norm." + k: "norm." + v for k, v in GCA_NORM_RENAMES.items()})
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform weights and zero biases (official ``MultiHeadDotProduct.reset_parameters``)."""
        super().reset_parameters()
        for lin in (self.lin_q, self.lin_k, self.lin_v, self.lin_out, self.lin_skip):
            if lin is not None:
                lin.reset_parameters()
        reset_norm(self.norm)

    def forward(
        self,
        x: Tensor,
        edge_index: Adj,
        edge_attr: Optional[Tensor] = None,
        attn_mask: Optional[Tensor] = None,
        return_attention_weights: bool = False,
    ) -> Union[Tensor, Tuple[Tensor, Tuple[Adj, Tensor]]]:
        """``edge_attr`` is accepted for a uniform ``(x, edge_index, edge_attr)`` call and unused."""
        check_node_features(x, self.in_channels)
        n = x.size(0)
        adj = edge_index
        edge_index, _ = edge_index_and_attr(edge_index, n)
        check_edge_mask(attn_mask, edge_index.size(1))
        h, c = self.heads, self.out_channels // self.heads
        q = self.lin_q(x).view(n, h, c)
        k = self.lin_k(x).view(n, h, c)
        v = self.lin_v(x).view(n, h, c)
        alpha = self.edge_updater(edge_index, q=q, k=k, mask=attn_mask, size=(n, n))  # [E, H]
        out = self.propagate(edge_index, v=v, alpha=alpha, size=(n, n)).reshape(n, self.out_channels)
        out = self.lin_out(out) + (x if self.lin_skip is None else self.lin_skip(x))
        if self.norm is not None:
            out = self.norm(out)
        if return_attention_weights:
            return out, (sparse_with_values(adj, alpha) if is_sparse_adjacency(adj) else edge_index, alpha)
        return out

    def edge_update(self, q: Tensor, k: Tensor, mask: Optional[Tensor], edge_index_i: Tensor,
                    edge_index_j: Tensor, size_i: int) -> Tensor:
        # score = (q_i * k_j).sum(-1) by a fused gather (no [E, H, C] tensor kept for backward)
        score = gather_dot(q, edge_index_i, k, edge_index_j) / math.sqrt(q.size(-1))  # [E, H]
        return softmax_with_zero_logit(score, edge_index_i, size_i, mask)

    def message(self, v: Tensor, alpha: Tensor, edge_index_j: Tensor) -> Tensor:
        return gather_scale(v, edge_index_j, alpha)  # alpha * v_j, [E, H, C]

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, heads={self.heads})"
