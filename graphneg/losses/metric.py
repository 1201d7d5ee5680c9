r"""Metric-learning losses: the public names in one place.

The losses live one family a file on the :class:`~graphneg.losses.base.BaseMetricLoss` contract
(:mod:`graphneg.losses.base`): :class:`~graphneg.losses.npair.NPairLoss`,
:class:`~graphneg.losses.multi_similarity.MultiSimilarityLoss`,
:class:`~graphneg.losses.triplet.TripletMarginLoss`, :class:`~graphneg.losses.proxy_anchor.ProxyAnchorLoss`;
shared distances in :mod:`graphneg.losses.distances`, reductions in :mod:`graphneg.losses.reducers`.
This module re-exports them (``from graphneg.losses.metric import NPairLoss`` keeps working);
:func:`~graphneg.losses.pml.synthetic_indices_tuple`, which feeds synthetic negatives to a
pytorch-metric-learning loss, lives in :mod:`graphneg.losses.pml`.
"""
from __future__ import annotations

from graphneg.losses.base import (  # noqa: F401  (public here too)
    BaseMetricLoss, PairBlock, SyntheticNegatives, check_synthetic, pair_block,
)
from graphneg.losses.multi_similarity import MultiSimilarityLoss
from graphneg.losses.npair import NPairLoss
from graphneg.losses.proxy_anchor import ProxyAnchorLoss
from graphneg.losses.triplet import TripletMarginLoss
from graphneg.ops.labels import next_positive_index, rank_in_class  # noqa: F401  (public here too)

__all__ = [
    "BaseMetricLoss",
    "NPairLoss",
    "MultiSimilarityLoss",
    "TripletMarginLoss",
    "ProxyAnchorLoss",
    "PairBlock",
    "SyntheticNegatives",
    "pair_block",
    "next_positive_index",
    "rank_in_class",
    "check_synthetic",
]
