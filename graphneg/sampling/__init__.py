"""Negative scoring and sampling: the UnReMix scores (similarity, uncertainty, representativeness)."""
from graphneg.sampling.unremix import (
    REPRESENTATIVENESS,
    UNCERTAINTY,
    UnReMixScores,
    candidate_representativeness,
    density_scores,
    diversity_scores,
    mix_scores,
    normalize_scores,
    representativeness_scores,
    similarity_scores,
    uncertainty_scores,
    unremix_components,
    unremix_scores,
)

__all__ = [
    "UnReMixScores", "unremix_scores", "similarity_scores", "uncertainty_scores", "density_scores",
    "diversity_scores", "candidate_representativeness", "representativeness_scores", "normalize_scores",
    "mix_scores", "unremix_components", "REPRESENTATIVENESS", "UNCERTAINTY",
]
