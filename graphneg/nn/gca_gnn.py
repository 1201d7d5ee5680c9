"""The GCA-HNG graph network: correlation edges, L blocks, lambda and node-class heads."""
from __future__ import annotations

import warnings
from typing import NamedTuple, Optional

import torch
from torch import Tensor, nn
from torch_geometric.nn.dense.linear import Linear

from graphneg.nn.correlation import CorrelationEdgeEncoder
from graphneg.nn.functional import batch_norm_linear
from graphneg.nn.gca_block import GCABlock, attention_mask_from_labels
from graphneg.nn.inputs import Adj, edge_index_and_attr
from graphneg.validation import check_edge_features, check_edge_mask, check_node_features


class GCAGNNOutput(NamedTuple):
    """Output of :class:`GCAGNN`.

    Attributes:
        x: node features after the last block ``[N, D]``.
        edge_attr: edge features after the last block ``[E, D]``.
        lam: channel-wise interpolation vectors ``sigmoid(Linear(BN(edge_attr)))`` in
            ``(0, 1)^D``, ``[E, D]``.
        logits: node-classification logits ``Linear(BN(x))``, ``[N, num_classes]``.
    """

    x: Tensor
    edge_attr: Tensor
    lam: Tensor
    logits: Tensor


class GCAGNN(nn.Module):
    r"""GCA-HNG graph network (official ``scripts/models.py`` ``GNNDecoder``, ``reduce=1``).

    .. math::
        \mathbf{e}^{(0)} = \mathrm{Corr}(\mathbf{x}),\quad
        \mathbf{h}^{(0)} = W_{in}\mathbf{x} + \mathbf{b}_{in},\quad
        (\mathbf{h}^{(l)}, \mathbf{e}^{(l)}) = \mathrm{GCABlock}_l(\mathbf{h}^{(l-1)},
        \mathbf{e}^{(l-1)}),

    .. math::
        \boldsymbol{\lambda} = \sigma\big(W_\lambda\,\mathrm{BN}_e(\mathbf{e}^{(L)})
        + \mathbf{b}_\lambda\big),\qquad
        \mathrm{logits} = W_c\,\mathrm{BN}_n(\mathbf{h}^{(L)}) + \mathbf{b}_c.

    The edge correlation features are computed from the *input* ``x`` (official
    ``GraphGenerator.get_graph`` runs on the raw embeddings before ``dim_red``) unless
    ``edge_attr`` is given. Both BatchNorm heads have weight 1, bias 0 and a **frozen bias**
    (``requires_grad=False``), as the official ``bottleneck1/2`` (``weights_init_kaiming`` then
    ``bias.requires_grad_(False)``). The edge BatchNorm normalises over the edges of the graph
    (in sparse graphs over the kept edges only).

    Args:
        dim (int): embedding size :math:`D` (node and edge features keep this size).
        num_classes (int): classes of the node classifier.
        num_layers (int): number of :class:`GCABlock` (official: 2 for CUB/Cars, 1 for
            SOP/In-Shop). (default: ``2``)
        heads (int): attention heads (official: 4 / 2). (default: ``4``)
        hidden_channels (int, optional): FFN hidden size (default ``4 * dim``).
        dropout (float): node-to-edge attention dropout (official ``0.1``).
        recompute_hidden (bool): activation checkpointing of every block's largest activation:
            the ``[E, 4D]`` hidden layer of the edge MLP (passed straight to each block's
            ``NodeToEdgeConv(recompute_hidden=...)``, :func:`graphneg.nn.edge_mlp.edge_mlp_update`)
            is not kept for backward but recomputed there from the block's ``[E, D]`` tensors,
            one extra ``D -> 4D`` product per block (measured: about 5 % more time, a third less
            peak memory in complete mode, ``experiments/results/bench_gca.md``). No random draw
            is repeated, so values and gradients are identical. Fixed at construction (a
            read-only attribute). (default: ``False``)
        checkpoint (bool, optional): deprecated name of ``recompute_hidden`` (it collided with
            :mod:`graphneg.checkpoint`); a ``FutureWarning`` when given.

    Shapes:
        - **input:** ``x`` :math:`(N, D)`, ``edge_index`` :math:`(2, E)` or a sparse adjacency
          ``adj_t`` :math:`(N, N)` (:mod:`graphneg.nn.inputs`), optional ``edge_attr``
          :math:`(E, D)`, ``labels`` :math:`(N,)`, ``attn_mask`` :math:`(E,)`; every per-edge
          tensor in ``edge_index``'s order (a sparse adjacency: its storage order, row-major for
          COO / CSR / ``SparseTensor``)
        - **output:** :class:`GCAGNNOutput` ``(x (N, D), edge_attr (E, D), lam (E, D),
          logits (N, num_classes))``
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        num_layers: int = 2,
        heads: int = 4,
        hidden_channels: Optional[int] = None,
        dropout: float = 0.1,
        recompute_hidden: bool = False,
        checkpoint: Optional[bool] = None,
    ):
        super().__init__()
        if dim < 1 or num_classes < 2 or num_layers < 1:
            raise ValueError(
                f"GCAGNN needs dim >= 1, num_classes >= 2 and num_layers >= 1; got dim={dim}, "
                f"num_classes={num_classes}, num_layers={num_layers}"
            )
        if dim % heads != 0:
            raise ValueError(f"heads must divide dim: got dim={dim}, heads={heads}")
        self.dim = dim
        self.num_classes = num_classes
        self.num_layers = num_layers
        self.heads = heads
        if checkpoint is not None:
            warnings.warn("GCAGNN(checkpoint=...) is deprecated, use recompute_hidden=... (the same setting)",
                          FutureWarning, stacklevel=2)
            recompute_hidden = bool(checkpoint)
        self._recompute_hidden = bool(recompute_hidden)
        self.edge_encoder = CorrelationEdgeEncoder()
        self.lin_in = Linear(dim, dim)
        self.blocks = nn.ModuleList([
            GCABlock(dim, dim, heads, hidden_channels, dropout, recompute_hidden=self._recompute_hidden)
            for _ in range(num_layers)
        ])
        self.edge_bn = nn.BatchNorm1d(dim)
        self.node_bn = nn.BatchNorm1d(dim)
        self.lin_lam = Linear(dim, dim)
        self.classifier = Linear(dim, num_classes)
        self.reset_parameters()

    @property
    def recompute_hidden(self) -> bool:
        """Whether each block recomputes its ``[E, 4D]`` edge-MLP hidden layer in backward
        (the constructor's setting; see the class doc)."""
        return self._recompute_hidden

    @property
    def checkpoint(self) -> bool:
        """Deprecated name of :attr:`recompute_hidden`."""
        warnings.warn("GCAGNN.checkpoint is deprecated, use GCAGNN.recompute_hidden", FutureWarning, stacklevel=2)
        return self._recompute_hidden

    def reset_parameters(self) -> None:
        self.edge_encoder.reset_parameters()
        self.lin_in.reset_parameters()
        for block in self.blocks:
            block.reset_parameters()
        for bn in (self.edge_bn, self.node_bn):
            bn.reset_parameters()  # weight 1, bias 0, running stats reset
            bn.bias.requires_grad_(False)
        self.lin_lam.reset_parameters()
        self.classifier.reset_parameters()

    def forward(
        self,
        x: Tensor,
        edge_index: Adj,
        edge_attr: Optional[Tensor] = None,
        labels: Optional[Tensor] = None,
        attn_mask: Optional[Tensor] = None,
    ) -> GCAGNNOutput:
        check_node_features(x, self.dim)
        n = x.size(0)
        edge_index, edge_attr = edge_index_and_attr(edge_index, n, edge_attr)
        if edge_attr is not None:
            check_edge_features(edge_attr, edge_index.size(1), n, self.dim)
        check_edge_mask(attn_mask, edge_index.size(1))
        if edge_attr is None:
            edge_attr = self.edge_encoder(x, edge_index)
        if attn_mask is None:
            attn_mask = attention_mask_from_labels(edge_index, labels)
        h = self.lin_in(x)
        e = edge_attr
        for block in self.blocks:
            h, e = block(h, edge_index, e, attn_mask=attn_mask)
        # lin(bn(.)) with the BatchNorm folded into the linear layer: the [E, D] normalised edge
        # tensor is never kept for backward (graphneg.nn.functional.batch_norm_linear)
        lam = torch.sigmoid(batch_norm_linear(e, self.edge_bn, self.lin_lam))
        logits = batch_norm_linear(h, self.node_bn, self.classifier)
        return GCAGNNOutput(h, e, lam, logits)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.dim}, num_classes={self.num_classes}, "
                f"num_layers={self.num_layers}, heads={self.heads}"
                f"{', recompute_hidden=True' if self._recompute_hidden else ''})")
