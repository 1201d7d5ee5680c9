"""Negative scoring and sampling: the UnReMix scores (similarity, uncertainty, representativeness).

UnReMix (Tabassum et al., arXiv 2206.01197) publishes only its abstract and an overview figure: every
formula here is a reconstruction (see :mod:`graphneg.sampling.unremix` and
:mod:`graphneg.sampling.representativeness`).
"""
from graphneg.sampling.representativeness import (
    REPRESENTATIVENESS,
    candidate_representativeness,
    density_scores,
    diversity_scores,
    neighbour_similarities,
    pair_groups,
    representativeness_scores,
    representativeness_vector,
)
from graphneg.validation import check_neighbours
from graphneg.sampling.unremix import (
    UNCERTAINTY,
    UnReMixScores,
    mix_scores,
    normalize_scores,
    similarity_scores,
    uncertainty_scores,
    unremix_components,
    unremix_scores,
)

__all__ = [
    "UnReMixScores", "unremix_scores", "similarity_scores", "uncertainty_scores", "density_scores",
    "diversity_scores", "candidate_representativeness", "representativeness_scores", "normalize_scores",
    "mix_scores", "unremix_components", "representativeness_vector", "neighbour_similarities",
    "pair_groups", "check_neighbours", "REPRESENTATIVENESS", "UNCERTAINTY",
]
