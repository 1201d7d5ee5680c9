"""Losses: metric losses taking ``(embeddings, labels)`` (optionally synthetic negatives) and
contrastive losses taking two views ``(z1, z2)`` (optionally labels)."""
from graphneg.losses.metric import MultiSimilarityLoss, NPairLoss, ProxyAnchorLoss, TripletMarginLoss
from graphneg.losses.pml import PMLInputs, pml_inputs, synthetic_indices_tuple
from graphneg.losses.gca_hng import (
    GCAHNGLoss, GCAHNGMetricLoss, GCAHNGObjective, diversity_loss, generator_diagnostics, generator_loss, node_loss,
)
from graphneg.losses.contrastive import DCLLoss, DebiasedContrastiveLoss, HCLLoss, InfoNCELoss, UnReMixLoss

__all__ = [
    "MultiSimilarityLoss", "NPairLoss", "ProxyAnchorLoss", "TripletMarginLoss",
    "InfoNCELoss", "DebiasedContrastiveLoss", "DCLLoss", "HCLLoss", "UnReMixLoss", "PMLInputs",
    "synthetic_indices_tuple", "pml_inputs", "GCAHNGObjective", "GCAHNGLoss", "GCAHNGMetricLoss", "generator_loss",
    "node_loss", "diversity_loss", "generator_diagnostics",
]
