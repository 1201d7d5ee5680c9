"""Synthetic negatives in pytorch-metric-learning form: a reference set and an indices tuple.

pytorch-metric-learning (PML) losses take ``loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)``
(``BaseMetricLossFunction.forward``); anchors index ``embeddings``, positives and negatives index
``ref_emb``. :func:`synthetic_indices_tuple` writes graphneg's synthetic negatives (``neg_embeddings``,
``neg_labels``, ``anchor_index``, e.g. from :class:`graphneg.nn.GCAHNG`) in that form;
:func:`pml_inputs` does it for a :class:`graphneg.nn.GeneratedNegatives`.

Miner-safe: a synthetic negative is a negative of its own anchor only. Its row of ``ref_labels`` is a
class id that no real sample has (``max(labels) + 1 + k``), so a PML miner run on
``(embeddings, labels, ref_emb, ref_labels)`` can never pair a synthetic negative with an anchor as a
*positive* (with the source class as label, a ``MultiSimilarityMiner`` made most of its positive pairs
from synthetic negatives). The exact pair sets are in ``indices_tuple``; the source classes stay in
``neg_labels`` / ``GeneratedNegatives.labels``.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from graphneg.losses.base import SyntheticNegatives, check_synthetic
from graphneg.validation import check_embeddings, check_labels

__all__ = ["PMLInputs", "synthetic_indices_tuple", "pml_inputs"]


class PMLInputs(NamedTuple):
    """Synthetic negatives in pytorch-metric-learning form (see :func:`synthetic_indices_tuple`)."""

    ref_emb: Tensor
    ref_labels: Tensor
    indices_tuple: Tuple[Tensor, ...]


def synthetic_indices_tuple(
    embeddings: Tensor,
    labels: Tensor,
    neg_embeddings: Tensor,
    neg_labels: Tensor,
    anchor_index: Tensor,
    kind: str = "pairs",
    neg_mask: Optional[Tensor] = None,
) -> PMLInputs:
    r"""Feed synthetic negatives to a pytorch-metric-learning loss: a reference set and an indices tuple.

    The reference set is the real batch followed by the synthetic negatives,
    ``ref_emb = cat([embeddings, neg_embeddings])`` (``[B + M, D]``), ``ref_labels = cat([labels,
    max(labels) + 1 + arange(M)])``: each synthetic negative gets a class id of its own that no real
    sample has, so that a miner never takes it for a positive (module docstring). The
    indices tuple follows pytorch-metric-learning's convention for ``ref_emb`` (anchors index
    ``embeddings``, positives and negatives index ``ref_emb``) and encodes the same pair sets as
    graphneg's losses with synthetic negatives (module docstring): the positives of anchor ``a``
    are the real same-class samples ``j != a``, its negatives are exactly its synthetic negatives
    ``B + k`` with ``anchor_index[k] = a``.

    * ``kind="pairs"``: ``(a1, p, a2, n)``, for pair losses (``MultiSimilarityLoss``,
      ``ContrastiveLoss``, ``NTXentLoss``, ...).
    * ``kind="triplets"``: ``(a, p, n)``, every positive of ``a`` with every synthetic negative of
      ``a``, for ``TripletMarginLoss``.

    Usage (``neg`` from :class:`graphneg.nn.GCAHNG`; ``pml_inputs(neg)`` is a shortcut)::

        t = synthetic_indices_tuple(emb, labels, neg.x, neg.labels, neg.anchor_index)
        loss = pml_losses.MultiSimilarityLoss()(emb, labels, t.indices_tuple, t.ref_emb, t.ref_labels)

    With every anchor having a positive (m-per-class batches, ``m >= 2``) this equals
    ``graphneg.losses.MultiSimilarityLoss(mining=False)(emb, labels, neg.x, neg.labels,
    neg.anchor_index)``, and pytorch-metric-learning's ``TripletMarginLoss`` on the triplets equals
    ``TripletMarginLoss(mining="all", reduction="nonzero")`` (``tests/test_generator.py`` checks this
    against loops over the tuple). Building the tuple has data-dependent sizes (like a miner).

    ``neg_mask`` (optional bool ``[M]``, the padded layout of :class:`graphneg.nn.GCAHNG` on CUDA): only
    the rows where it is ``True`` are synthetic negatives. They are compacted first (``nonzero``: one
    host sync, which the tuple's data-dependent length needs anyway), so the result equals the call on
    ``neg_embeddings[neg_mask], neg_labels[neg_mask], anchor_index[neg_mask]``.
    """
    if kind not in ("pairs", "triplets"):
        raise ValueError(f"kind must be 'pairs' or 'triplets', got {kind!r}")
    check_embeddings(embeddings)
    labels = check_labels(labels, embeddings.size(0)).to(embeddings.device)
    synth = check_synthetic(embeddings, labels, neg_embeddings, neg_labels, anchor_index, neg_mask)
    if synth.mask is not None:  # compact the padded layout: one host sync (the tuple's length is data-dependent)
        rows = synth.mask.nonzero().squeeze(1)
        synth = SyntheticNegatives(*(t.index_select(0, rows) for t in synth[:3]))
    n, device = embeddings.size(0), embeddings.device
    m = synth.anchor_index.numel()
    same = labels[:, None] == labels[None, :]
    pos_a, pos_p = (same & ~torch.eye(n, dtype=torch.bool, device=device)).nonzero(as_tuple=True)
    neg_n = torch.arange(n, n + m, device=device)
    if kind == "pairs":
        tup: Tuple[Tensor, ...] = (pos_a, pos_p, synth.anchor_index, neg_n)
    else:
        # every (positive of a, synthetic negative of a): positives are sorted by anchor
        count = torch.bincount(pos_a, minlength=n)
        start = torch.cumsum(count, 0) - count
        reps = count.index_select(0, synth.anchor_index)
        g = torch.repeat_interleave(torch.arange(m, device=device), reps)
        offset = torch.arange(g.numel(), device=device) - torch.repeat_interleave(
            torch.cumsum(reps, 0) - reps, reps)
        a = synth.anchor_index.index_select(0, g)
        tup = (a, pos_p.index_select(0, start.index_select(0, a) + offset), neg_n.index_select(0, g))
    own = labels.max() + 1 + torch.arange(m, device=device, dtype=labels.dtype)  # no real sample's class
    return PMLInputs(torch.cat([embeddings, synth.x]), torch.cat([labels, own]), tup)


def pml_inputs(negatives, kind: str = "pairs") -> PMLInputs:
    """:func:`synthetic_indices_tuple` for the output of :class:`graphneg.nn.GCAHNG` (a
    :class:`graphneg.nn.GeneratedNegatives`), on the batch the generator ran on (``negatives.graph``,
    the global batch when the generator gathers across processes)::

        out = gen(emb, labels)
        t = pml_inputs(out)
        loss = pml_losses.MultiSimilarityLoss()(out.graph.x, out.graph.y, t.indices_tuple, t.ref_emb, t.ref_labels)

    A padded output (``negatives.mask``, bool ``[M]``, when present and not ``None``) is compacted to its
    real rows first (see ``neg_mask`` of :func:`synthetic_indices_tuple`).
    """
    graph = negatives.graph
    return synthetic_indices_tuple(graph.x, graph.y, negatives.x, negatives.labels, negatives.anchor_index, kind,
                                   neg_mask=getattr(negatives, "mask", None))
