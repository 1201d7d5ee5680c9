"""What :class:`graphneg.nn.GCAHNG` returns: the synthetic negatives (:class:`GeneratedNegatives`) and the
(anchor, real negative) pairs they are made from (:class:`NegativePairs`), in the compact or the padded
layout (static shapes, ``mask``), and the conversion between them.

Peng et al., "Globally Correlation-Aware Hard Negative Generation" (IJCV / arXiv 2024); official code
github.com/PWenJay/GCA-HNG ``scripts/models.py`` ``GeneralPulling`` (which returns the ``B * C`` generated
rows in a fixed layout; the padded layout here is its static-shape analogue with a mask).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional

from torch import Tensor
from torch_geometric.data import Data

from graphneg.nn.gca_gnn import GCAGNNOutput

__all__ = ["GeneratedNegatives", "NegativePairs"]


class NegativePairs(NamedTuple):
    """The ``P`` (anchor, real negative) pairs the synthetic negatives are made from.

    Pair ``p`` is the graph edge ``edge[p]`` (``anchor -> negative``, official edge ``(r, c)``), one
    per edge joining two classes. Attributes, all ``[P]`` except ``x``:

    * ``anchor``, ``negative``: rows of the embeddings (``edge_index[:, edge]``);
    * ``edge``: the column of ``edge_index``, so ``lambda_an = gnn.lam[edge]``;
    * ``group``: the row of :attr:`GeneratedNegatives.x` the pair is mixed into;
    * ``weight``: its convex mixing weight (ones when ``rw=None``);
    * ``hard``: ``d+ < d-`` (``False``: the real negative itself was returned);
    * ``x``: the generated negative before mixing ``[P, D]`` (``None`` with random weighting
      unless ``return_pairs=True``; equal to :attr:`GeneratedNegatives.x` when ``rw=None``).
    * ``valid``: ``None`` when the pairs are exactly the anchor -> negative edges (compact layout);
      in the padded layout (``static_shapes``) the pairs are *all* ``E`` edges and ``valid`` ``[E]``
      marks those joining two classes; the others have ``weight`` 0, ``hard`` ``False`` and ``group``
      equal to the number of rows of :attr:`GeneratedNegatives.x` (no row).
    """

    anchor: Tensor
    negative: Tensor
    edge: Tensor
    group: Tensor
    weight: Tensor
    hard: Tensor
    x: Optional[Tensor]
    valid: Optional[Tensor] = None


@dataclass
class GeneratedNegatives:
    """Output of :meth:`GCAHNG.forward`.

    Attributes:
        x: ``G`` synthetic negatives ``[G, D]``. Without random weighting (``rw=None``) row ``g``
            is pair ``g``; with it, row ``g`` mixes the pairs with ``pairs.group == g`` (one row
            per anchor and other class present among its negatives).
        labels: their class, the class of the real negatives they come from ``[G]``.
        anchor_index: the anchor (row of the embeddings) of each synthetic negative ``[G]``.
        pairs: per-pair details (:class:`NegativePairs`).
        graph: the batch graph the generator ran on, ``Data(x=embeddings, y=labels,
            edge_index)`` (``graph.x`` is the input tensor itself, not a copy).
        gnn: the :class:`~graphneg.nn.GCAGNNOutput` on that graph: ``lam`` ``[E, D]``
            (interpolation vectors, never detached here), node ``logits`` ``[B, num_classes]``.
        mask: ``None`` (compact layout: every row is a synthetic negative) or, in the padded layout
            (``GCAHNG(static_shapes=True)``, the default on CUDA), ``[G]`` bool: ``True`` for the real
            rows, which come first and in the compact layout's order; the padding rows after them hold
            zeros in ``x`` and 0 in ``labels`` / ``anchor_index``. ``G`` is then a static bound
            (``E`` without random weighting, else ``min(E, B * min(num_classes - 1, B - 1))``), so the
            step needs no host sync; :meth:`compact` drops the padding (one sync).

    ``x, labels, anchor_index`` go straight into a graphneg metric loss
    (``loss(out.graph.x, out.graph.y, neg_embeddings=out.x, neg_labels=out.labels,
    anchor_index=out.anchor_index)``); :func:`graphneg.losses.pml_inputs` gives the
    pytorch-metric-learning form. The training objective built on it is
    :class:`graphneg.losses.GCAHNGObjective`. In the padded layout pass ``neg_mask=out.mask`` too (every
    graphneg metric loss takes it; the objective and :func:`graphneg.losses.pml_inputs` do this).
    """

    x: Tensor
    labels: Tensor
    anchor_index: Tensor
    pairs: NegativePairs
    graph: Data
    gnn: GCAGNNOutput
    mask: Optional[Tensor] = None

    def compact(self) -> "GeneratedNegatives":
        """The compact layout: the real rows and pairs only (``mask`` and ``pairs.valid`` ``None``); itself
        when already compact. Reads the number of rows on the host (one sync); in a training step
        prefer passing ``mask`` to the loss."""
        if self.mask is None and self.pairs.valid is None:
            return self
        pairs = self.pairs
        if pairs.valid is not None:
            keep = pairs.valid.nonzero().view(-1)
            pairs = NegativePairs(*(v.index_select(0, keep) if isinstance(v, Tensor) else v for v in pairs[:-1]),
                                  valid=None)
        x, labels, anchor = self.x, self.labels, self.anchor_index
        if self.mask is not None:
            rows = self.mask.nonzero().view(-1)
            x, labels, anchor = x.index_select(0, rows), labels.index_select(0, rows), anchor.index_select(0, rows)
        return GeneratedNegatives(x=x, labels=labels, anchor_index=anchor, pairs=pairs, graph=self.graph,
                                  gnn=self.gnn, mask=None)

    def detach(self) -> "GeneratedNegatives":
        """The same negatives with every tensor detached (no copy; frees the autograd graph), e.g. to
        keep a batch's output for epoch-end histograms."""
        def det(v):
            return v.detach() if isinstance(v, Tensor) else v

        graph = Data(x=self.graph.x.detach(), y=self.graph.y, edge_index=self.graph.edge_index,
                     num_nodes=self.graph.num_nodes)
        gnn = type(self.gnn)(*(det(v) for v in self.gnn))
        pairs = NegativePairs(*(det(v) for v in self.pairs))
        return GeneratedNegatives(x=self.x.detach(), labels=self.labels, anchor_index=self.anchor_index,
                                  pairs=pairs, graph=graph, gnn=gnn, mask=self.mask)
