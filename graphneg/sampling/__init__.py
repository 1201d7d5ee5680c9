"""Negative scoring and sampling: the UnReMix scores (similarity, uncertainty, representativeness)."""
from graphneg.sampling.unremix import (
    UnReMixScores,
    density_scores,
    mix_scores,
    normalize_scores,
    representativeness_scores,
    similarity_scores,
    uncertainty_scores,
    unremix_scores,
)

__all__ = [
    "UnReMixScores", "unremix_scores", "similarity_scores", "uncertainty_scores", "density_scores",
    "representativeness_scores", "normalize_scores", "mix_scores",
]
