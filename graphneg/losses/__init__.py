"""Losses: metric losses taking ``(embeddings, labels)`` (optionally synthetic negatives) and
contrastive losses taking two views ``(z1, z2)`` (optionally labels)."""
from graphneg.losses.metric import MultiSimilarityLoss, NPairLoss, ProxyAnchorLoss, TripletMarginLoss
from graphneg.losses.pml import PMLInputs, synthetic_indices_tuple
from graphneg.losses.contrastive import DCLLoss, DebiasedContrastiveLoss, HCLLoss, InfoNCELoss, UnReMixLoss

__all__ = [
    "MultiSimilarityLoss", "NPairLoss", "ProxyAnchorLoss", "TripletMarginLoss",
    "InfoNCELoss", "DebiasedContrastiveLoss", "DCLLoss", "HCLLoss", "UnReMixLoss", "PMLInputs",
    "synthetic_indices_tuple",
]
