"""Losses: metric losses on one pytorch-metric-learning-style contract (:class:`BaseMetricLoss`:
``loss(embeddings, labels, indices_tuple=None, ref_emb=None, ref_labels=None, *, neg_embeddings=None,
neg_labels=None, anchor_index=None, neg_mask=None)``; ``neg_mask`` ``[M]`` bool marks the real rows of
padded synthetic negatives, see :mod:`graphneg.losses.base`) with shared distances and reducers, GCA-HNG's
losses and training objective (:class:`GCAHNGObjective`), and contrastive losses taking two views
``(z1, z2)`` (optionally labels)."""
from graphneg.losses import distances, reducers
from graphneg.losses.base import BaseMetricLoss
from graphneg.losses.distances import CosineSimilarity, DotProductSimilarity, LpDistance
from graphneg.losses.multi_similarity import MultiSimilarityLoss
from graphneg.losses.npair import NPairLoss
from graphneg.losses.proxy_anchor import ProxyAnchorLoss
from graphneg.losses.reducers import AvgNonZeroReducer, MeanReducer
from graphneg.losses.triplet import TripletMarginLoss
from graphneg.losses.pml import PMLInputs, pml_inputs, synthetic_indices_tuple
from graphneg.losses.gca_hng import (
    GCAHNGLoss, GCAHNGMetricLoss, GCAHNGObjective, diversity_loss, generator_diagnostics, generator_loss, node_loss,
)
from graphneg.losses.contrastive import DCLLoss, DebiasedContrastiveLoss, HCLLoss, InfoNCELoss, UnReMixLoss

__all__ = [
    "BaseMetricLoss", "MultiSimilarityLoss", "NPairLoss", "ProxyAnchorLoss", "TripletMarginLoss",
    "distances", "reducers", "CosineSimilarity", "DotProductSimilarity", "LpDistance", "MeanReducer",
    "AvgNonZeroReducer",
    "InfoNCELoss", "DebiasedContrastiveLoss", "DCLLoss", "HCLLoss", "UnReMixLoss", "PMLInputs",
    "synthetic_indices_tuple", "pml_inputs", "GCAHNGObjective", "GCAHNGLoss", "GCAHNGMetricLoss", "generator_loss",
    "node_loss", "diversity_loss", "generator_diagnostics",
]
