"""Node-to-edge propagation of GCA-HNG (edge attends to its two end nodes)."""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.nn.dense.linear import Linear

from graphneg.nn.edge_mlp import GCA_NORM_RENAMES, edge_mlp_update, is_gca_norm, reset_norm, resolve_norm
from graphneg.nn.functional import gather_dot, gather_scale
from graphneg.nn.inputs import Adj, edge_index_and_attr, initialize_lazy, rename_state_dict_keys
from graphneg.validation import check_edge_features, check_hyperparameter, check_node_features


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
        \mathbf{e}' = \mathrm{norm}(W_s\mathbf{e} + \mathbf{a}),\qquad
        \mathbf{e}'' = \mathrm{norm}\big(\mathbf{e}' + \mathrm{MLP}(\mathbf{e}')\big),

    :math:`\mathrm{MLP} = \mathrm{Linear}(D, 4D) \to \mathrm{GELU} \to \mathrm{LayerNorm}(4D)
    \to \mathrm{Linear}(4D, D)` (sub-modules ``mlp.lin1``, ``mlp.act``, ``mlp.norm``,
    ``mlp.lin2``) and :math:`\mathrm{norm} = \mathrm{LayerNorm}\circ\mathrm{GELU}`, one instance
    used for both residuals; :math:`D` = ``out_channels``, :math:`W_s = I` when
    ``edge_dim == out_channels`` (official) and a learned bias-free projection otherwise.

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
        in_channels (int): node feature size; ``-1`` for lazy initialisation.
        out_channels (int, optional): output edge feature size :math:`D` (default:
            ``in_channels``).
        edge_dim (int, optional): input edge feature size (default: ``out_channels``, as in
            GCA-HNG; ``-1`` for lazy initialisation, then the edge residual is a projection).
        hidden_channels (int, optional): MLP hidden size (default: ``4 * out_channels``).
        dropout (float): dropout on the two attention weights (official: ``0.1``).
        norm (torch.nn.Module or bool, optional): normalisation of both residuals; ``None`` or
            ``True``: a fresh ``GELU -> LayerNorm(D)`` (the fused path); ``False``: none; or a
            module of this layer's own (the plain composition of modules).
        recompute_hidden (bool): keep no ``[E, hidden]`` activation of the edge MLP for backward
            and recompute it there (activation checkpointing of the largest edge tensor, one
            extra ``D -> hidden`` product; identical values and gradients). Only for the standard
            norm (the fused path, :func:`graphneg.nn.edge_mlp.edge_mlp_update`).
            (default: ``False``)
        **kwargs: forwarded to :class:`torch_geometric.nn.MessagePassing`.

    Shapes:
        - **input:** ``x`` :math:`(N, F_{in})`, ``edge_index`` :math:`(2, E)` or a sparse
          adjacency ``adj_t`` :math:`(N, N)`, ``edge_attr`` :math:`(E, F_e)` in ``edge_index``'s
          order (for a sparse adjacency: its storage order, row-major for COO / CSR /
          ``SparseTensor``; or ``None`` to use 2-D sparse values)
        - **output:** edge features :math:`(E, D)`, in the same edge order
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: Optional[int] = None,
        edge_dim: Optional[int] = None,
        hidden_channels: Optional[int] = None,
        dropout: float = 0.1,
        norm: Union[nn.Module, bool, None] = None,
        recompute_hidden: bool = False,
        **kwargs,
    ):
        kwargs.setdefault("aggr", "add")
        super().__init__(node_dim=0, **kwargs)
        out_channels = in_channels if out_channels is None else out_channels
        if out_channels < 1:
            raise ValueError(f"out_channels must be a positive size, got {out_channels} "
                             "(pass out_channels explicitly with in_channels=-1)")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.edge_dim = out_channels if edge_dim is None else edge_dim
        self.hidden_channels = 4 * out_channels if hidden_channels is None else hidden_channels
        self.dropout = check_hyperparameter(dropout, "dropout", 0.0, 1.0, max_inclusive=False,
                                            hint="the probability of zeroing an attention weight")
        self.recompute_hidden = bool(recompute_hidden)
        glorot = dict(weight_initializer="glorot", bias_initializer="zeros")
        self.lin_node = Linear(in_channels, out_channels)
        self.lin_q = Linear(self.edge_dim, out_channels, **glorot)
        self.lin_k = Linear(out_channels, out_channels, **glorot)
        self.lin_v = Linear(out_channels, out_channels, **glorot)
        self.lin_skip = (None if self.edge_dim == out_channels
                         else Linear(self.edge_dim, out_channels, bias=False, weight_initializer="glorot"))
        self.mlp = nn.Sequential(OrderedDict(
            lin1=Linear(out_channels, self.hidden_channels),
            act=nn.GELU(),
            norm=nn.LayerNorm(self.hidden_channels),
            lin2=Linear(self.hidden_channels, out_channels),
        ))
        self.norm = resolve_norm(norm, out_channels)
        renames = {"norm." + k: "norm." + v for k, v in GCA_NORM_RENAMES.items()}
        renames.update({"mlp.0.": "mlp.lin1.", "mlp.2.": "mlp.norm.", "mlp.3.": "mlp.lin2."})
        rename_state_dict_keys(self, renames)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: default ``Linear`` for ``node_to_edge`` and the MLP, Xavier q/k/v."""
        super().reset_parameters()
        for module in (self.lin_node, self.lin_q, self.lin_k, self.lin_v, self.lin_skip,
                       self.mlp.lin1, self.mlp.norm, self.mlp.lin2):
            if module is not None:
                module.reset_parameters()
        reset_norm(self.norm)

    def forward(self, x: Tensor, edge_index: Adj, edge_attr: Optional[Tensor] = None) -> Tensor:
        check_node_features(x, self.in_channels)
        n = x.size(0)
        edge_index, edge_attr = edge_index_and_attr(edge_index, n, edge_attr)
        check_edge_features(edge_attr, edge_index.size(1), n, self.edge_dim)
        initialize_lazy(self.lin_q, edge_attr)  # its weight is used directly below
        f = F.gelu(self.lin_node(x))
        k = self.lin_k(f)
        # <W_q e + b_q, k_u> = <e, W_q^T k_u> + <b_q, k_u>: the query projection is folded into
        # the (node-level) keys, so no [E, F_e] x [F_e, D] product is needed for the edges
        k_folded = k @ self.lin_q.weight  # [N, F_e]
        k_bias = k @ self.lin_q.bias  # [N]
        att = self.edge_updater(
            edge_index, edge_attr=edge_attr, kq=k_folded, kb=k_bias, v=self.lin_v(f), size=(n, n),
        )
        s1 = (edge_attr if self.lin_skip is None else self.lin_skip(edge_attr)) + att
        if not is_gca_norm(self.norm, self.out_channels):  # a custom norm (or none): the plain composition
            norm = nn.Identity() if self.norm is None else self.norm
            e = norm(s1)
            return norm(e + self.mlp(e))
        # == e = norm(s1); norm(e + mlp(e)), fused: keeps 2 [E, D] + 1 [E, 4D] tensor for
        # backward instead of ~6 + 3 (graphneg.nn.edge_mlp.edge_mlp_update)
        ln_n, mlp = self.norm.layer_norm, self.mlp
        return edge_mlp_update(
            s1, ln_n.weight, ln_n.bias, ln_n.eps, mlp.lin1.weight, mlp.lin1.bias,
            mlp.norm.weight, mlp.norm.bias, mlp.norm.eps, mlp.lin2.weight, mlp.lin2.bias,
            recompute_hidden=self.recompute_hidden and torch.is_grad_enabled(),
        )

    def edge_update(self, edge_attr: Tensor, kq: Tensor, kb: Tensor, v: Tensor,
                    edge_index_i: Tensor, edge_index_j: Tensor) -> Tensor:
        # s_u = <W_q e + b_q, k_u> / sqrt(D), att = sum_u beta_u v_u for u in {j, i}; fused
        # gathers keep no gathered [E, D] tensor for backward (graphneg.nn.functional)
        scale = 1.0 / math.sqrt(v.size(-1))
        s_j = (gather_dot(edge_attr, None, kq, edge_index_j) + kb.index_select(0, edge_index_j)) * scale
        s_i = (gather_dot(edge_attr, None, kq, edge_index_i) + kb.index_select(0, edge_index_i)) * scale
        beta = torch.softmax(torch.stack([s_j, s_i], dim=-1), dim=-1)  # [E, 2]
        beta = F.dropout(beta, p=self.dropout, training=self.training)
        return gather_scale(v, edge_index_j, beta[:, 0]) + gather_scale(v, edge_index_i, beta[:, 1])

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, edge_dim={self.edge_dim}, "
                f"hidden={self.hidden_channels}, dropout={self.dropout})")
