"""Node-to-edge propagation of GCA-HNG (edge attends to its two end nodes)."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing

from graphneg.nn.functional import (
    edge_mlp_update, gather_dot, gather_scale, gca_norm, reset_norm,
)


class NodeToEdgeConv(MessagePassing):
    r"""GCA-HNG node-to-edge update: each edge attends to its two end nodes, then an edge MLP.

    With :math:`\mathbf{f} = \mathrm{GELU}(W_n \mathbf{x} + \mathbf{b}_n)` and, for the edge
    :math:`e = (j \to i)` with feature :math:`\mathbf{e}`, single-head attention over the two keys
    :math:`\{\mathbf{f}_j, \mathbf{f}_i\}`:

    .. math::
        s_u = \frac{\langle W_q\mathbf{e}, W_k\mathbf{f}_u\rangle}{\sqrt{D}},\quad
        \beta_u = \mathrm{softmax}_{u\in\{i,j\}}(s_u),\quad
        \mathbf{a} = \textstyle\sum_{u\in\{i,j\}} \mathrm{drop}(\beta_u)\, W_v \mathbf{f}_u,

    .. math::
        \mathbf{e}' = \mathrm{norm}(\mathbf{e} + \mathbf{a}),\qquad
        \mathbf{e}'' = \mathrm{norm}\big(\mathbf{e}' + \mathrm{MLP}(\mathbf{e}')\big),

    :math:`\mathrm{MLP} = \mathrm{Linear}(D, 4D) \to \mathrm{GELU} \to \mathrm{LayerNorm}(4D)
    \to \mathrm{Linear}(4D, D)` and :math:`\mathrm{norm} = \mathrm{LayerNorm}\circ\mathrm{GELU}`,
    one instance used for both residuals.

    Source: official code ``scripts/models.py`` ``Messagepasstoedge`` with ``Vanilla_Attention``
    (single head, scale :math:`\sqrt{D}`, dropout 0.1 on the attention weights, Xavier-uniform
    q/k/v with zero bias; ``node_to_edge`` and the MLP keep PyTorch's default init). The official
    code applies ``W_k, W_v`` to the gathered ``[E, 2, D]`` keys; the linear maps commute with the
    gather, so they are applied once per node here (``O(N D^2)`` instead of ``O(E D^2)``), and the
    query projection is folded into the keys, :math:`\langle W_q\mathbf{e} + \mathbf{b}_q,
    \mathbf{k}\rangle = \langle \mathbf{e}, W_q^\top\mathbf{k}\rangle +
    \langle\mathbf{b}_q, \mathbf{k}\rangle`, which removes the official ``[E, D] x [D, D]``
    query product (same values).
    Implemented with :meth:`~torch_geometric.nn.MessagePassing.edge_updater`; the result is
    symmetric in the two end nodes.

    Args:
        channels (int): node and edge feature size :math:`D`.
        hidden_channels (int, optional): MLP hidden size (default: ``4 * channels``).
        dropout (float): dropout on the two attention weights (official: ``0.1``).
        norm (torch.nn.Module, optional): normalisation shared by both residuals; a fresh
            ``GELU -> LayerNorm(D)`` when ``None``.
        recompute_hidden (bool): keep no ``[E, hidden]`` activation of the edge MLP for backward
            and recompute it there (activation checkpointing of the largest edge tensor, one
            extra ``D -> hidden`` product; identical values and gradients). Only for the standard
            norm (the fused path, :func:`graphneg.nn.functional.edge_mlp_update`).
            (default: ``False``)
        **kwargs: forwarded to :class:`torch_geometric.nn.MessagePassing`.

    Shapes:
        - **input:** ``x`` :math:`(N, D)`, ``edge_index`` :math:`(2, E)`,
          ``edge_attr`` :math:`(E, D)`
        - **output:** edge features :math:`(E, D)`
    """

    def __init__(
        self,
        channels: int,
        hidden_channels: Optional[int] = None,
        dropout: float = 0.1,
        norm: Optional[nn.Module] = None,
        recompute_hidden: bool = False,
        **kwargs,
    ):
        kwargs.setdefault("aggr", "add")
        super().__init__(node_dim=0, **kwargs)
        self.recompute_hidden = bool(recompute_hidden)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.channels = channels
        self.hidden_channels = 4 * channels if hidden_channels is None else hidden_channels
        self.dropout = float(dropout)
        self.lin_node = nn.Linear(channels, channels)
        self.lin_q = nn.Linear(channels, channels)
        self.lin_k = nn.Linear(channels, channels)
        self.lin_v = nn.Linear(channels, channels)
        self.mlp = nn.Sequential(
            nn.Linear(channels, self.hidden_channels),
            nn.GELU(),
            nn.LayerNorm(self.hidden_channels),
            nn.Linear(self.hidden_channels, channels),
        )
        self.norm = norm if norm is not None else gca_norm(channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: default ``Linear`` for ``node_to_edge`` and the MLP, Xavier q/k/v."""
        super().reset_parameters()
        self.lin_node.reset_parameters()
        for module in self.mlp:
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        for lin in (self.lin_q, self.lin_k, self.lin_v):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
        reset_norm(self.norm)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        if edge_attr is None or edge_attr.shape != (edge_index.size(1), self.channels):
            raise ValueError(
                "edge_attr must have shape [E, D] = "
                f"[{edge_index.size(1)}, {self.channels}], got "
                f"{None if edge_attr is None else tuple(edge_attr.shape)}"
            )
        f = F.gelu(self.lin_node(x))
        k = self.lin_k(f)
        # <W_q e + b_q, k_u> = <e, W_q^T k_u> + <b_q, k_u>: the query projection is folded into
        # the (node-level) keys, so no [E, D] x [D, D] product is needed for the edges
        k_folded = k @ self.lin_q.weight  # [N, D]
        k_bias = k @ self.lin_q.bias  # [N]
        att = self.edge_updater(
            edge_index, edge_attr=edge_attr, kq=k_folded, kb=k_bias, v=self.lin_v(f),
            size=(x.size(0), x.size(0)),
        )
        if not self._fusable():  # a custom norm: the plain composition
            e = self.norm(edge_attr + att)
            return self.norm(e + self.mlp(e))
        # == e = norm(edge_attr + att); norm(e + mlp(e)), fused: keeps 2 [E, D] + 1 [E, 4D] tensor
        # for backward instead of ~6 + 3 (graphneg.nn.functional.edge_mlp_update)
        ln_n, ln_h = self.norm[1], self.mlp[2]
        return edge_mlp_update(
            edge_attr + att, ln_n.weight, ln_n.bias, ln_n.eps, self.mlp[0].weight, self.mlp[0].bias,
            ln_h.weight, ln_h.bias, ln_h.eps, self.mlp[3].weight, self.mlp[3].bias,
            recompute_hidden=self.recompute_hidden and torch.is_grad_enabled(),
        )

    def _fusable(self) -> bool:
        """``norm`` is the standard ``GELU -> LayerNorm(D)`` (affine, erf GELU), as built here."""
        norm = self.norm
        return (isinstance(norm, nn.Sequential) and len(norm) == 2
                and type(norm[0]) is nn.GELU and norm[0].approximate == "none"
                and type(norm[1]) is nn.LayerNorm and norm[1].weight is not None
                and norm[1].bias is not None and norm[1].normalized_shape == (self.channels,))

    def edge_update(self, edge_attr: Tensor, kq: Tensor, kb: Tensor, v: Tensor,
                    edge_index_i: Tensor, edge_index_j: Tensor) -> Tensor:
        # s_u = <W_q e + b_q, k_u> / sqrt(D), att = sum_u beta_u v_u for u in {j, i}; fused
        # gathers keep no gathered [E, D] tensor for backward (graphneg.nn.functional)
        scale = 1.0 / math.sqrt(edge_attr.size(-1))
        s_j = (gather_dot(edge_attr, None, kq, edge_index_j) + kb.index_select(0, edge_index_j)) * scale
        s_i = (gather_dot(edge_attr, None, kq, edge_index_i) + kb.index_select(0, edge_index_i)) * scale
        beta = torch.softmax(torch.stack([s_j, s_i], dim=-1), dim=-1)  # [E, 2]
        beta = F.dropout(beta, p=self.dropout, training=self.training)
        return gather_scale(v, edge_index_j, beta[:, 0]) + gather_scale(v, edge_index_i, beta[:, 1])

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.channels}, hidden={self.hidden_channels}, "
                f"dropout={self.dropout})")
