r"""Distances shared by the metric losses, with pytorch-metric-learning's names and contracts.

Source: pytorch-metric-learning ``distances/`` (``BaseDistance``, ``DotProductSimilarity``,
``CosineSimilarity``, ``LpDistance``): a distance maps ``(query [B, D], ref [R, D])`` to a matrix
``[B, R]``; ``is_inverted`` says whether larger means closer (similarities) and :meth:`margin` measures
"how much closer ``y`` is than ``x``" in either case, so a loss is written once for both kinds.
Only what graphneg's losses use is implemented (no ``power``, no recorded statistics).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BaseDistance", "DotProductSimilarity", "CosineSimilarity", "LpDistance"]


class BaseDistance(nn.Module, ABC):
    """Pairwise distance / similarity ``mat = distance(query, ref)`` (``ref`` defaults to ``query``).

    Args:
        normalize_embeddings (bool): L2-normalise the inputs first (PML default ``True``).
        p (int): the norm of :class:`LpDistance` (and of the normalisation, as in PML).
        is_inverted (bool): ``True`` for similarities (larger = closer).
    """

    def __init__(self, normalize_embeddings: bool = True, p: float = 2, is_inverted: bool = False):
        super().__init__()
        self.normalize_embeddings, self.p, self.is_inverted = bool(normalize_embeddings), p, bool(is_inverted)

    def maybe_normalize(self, x: Tensor) -> Tensor:
        return F.normalize(x, p=self.p, dim=-1) if self.normalize_embeddings else x

    def forward(self, query: Tensor, ref: Optional[Tensor] = None) -> Tensor:
        q = self.maybe_normalize(query)
        r = q if ref is None else self.maybe_normalize(ref)
        return self.compute_mat(q, r)

    def pairwise(self, query: Tensor, ref: Tensor) -> Tensor:
        """Row-wise ``d(query[i], ref[i])`` ``[N]`` (PML ``pairwise_distance`` after normalisation)."""
        return self.pairwise_distance(self.maybe_normalize(query), self.maybe_normalize(ref))

    @abstractmethod
    def compute_mat(self, query: Tensor, ref: Tensor) -> Tensor:
        """The ``[M, N]`` matrix of ``d(query[i], ref[j])`` on normalised inputs; each distance defines it."""

    @abstractmethod
    def pairwise_distance(self, query: Tensor, ref: Tensor) -> Tensor:
        """Row-wise ``d(query[i], ref[i])`` ``[N]`` on normalised inputs; each distance defines it."""

    def margin(self, x: Tensor, y) -> Tensor:
        """How much closer ``y`` is than ``x``: ``x - y`` for distances, ``y - x`` for similarities."""
        return y - x if self.is_inverted else x - y

    def smallest_dist(self, x: Tensor, y: Tensor) -> Tensor:
        """Element-wise the closer of two values (``max`` for similarities)."""
        return torch.maximum(x, y) if self.is_inverted else torch.minimum(x, y)

    def extra_repr(self) -> str:
        return f"normalize_embeddings={self.normalize_embeddings}, p={self.p}"


class DotProductSimilarity(BaseDistance):
    """Inner products ``<q, r>`` (PML ``DotProductSimilarity``; ``normalize_embeddings`` default ``True``
    as in PML; :class:`graphneg.losses.NPairLoss` uses it with ``normalize_embeddings=False``)."""

    def __init__(self, normalize_embeddings: bool = True, p: float = 2):
        super().__init__(normalize_embeddings=normalize_embeddings, p=p, is_inverted=True)

    def compute_mat(self, query: Tensor, ref: Tensor) -> Tensor:
        return query @ ref.transpose(-1, -2)

    def pairwise_distance(self, query: Tensor, ref: Tensor) -> Tensor:
        return (query * ref).sum(dim=-1)


class CosineSimilarity(DotProductSimilarity):
    """Cosine similarity: inner products of L2-normalised vectors (PML ``CosineSimilarity``)."""

    def __init__(self):
        super().__init__(normalize_embeddings=True, p=2)


class LpDistance(BaseDistance):
    r"""``||q - r||_p`` (PML ``LpDistance``, default L2-normalised inputs, ``p = 2``).

    For ``p = 2`` the matrix is :math:`\sqrt{\max(\|q\|^2 + \|r\|^2 - 2\langle q, r\rangle, 10^{-12})}`:
    equal to ``torch.cdist`` up to the clamp, and with a finite gradient at coinciding points (the
    masked self-pairs of a batch), where ``sqrt``'s derivative is infinite. Other ``p`` use ``torch.cdist``.
    """

    def __init__(self, normalize_embeddings: bool = True, p: float = 2):
        super().__init__(normalize_embeddings=normalize_embeddings, p=p, is_inverted=False)

    def compute_mat(self, query: Tensor, ref: Tensor) -> Tensor:
        if self.p == 2:
            sq = query.pow(2).sum(-1)[:, None] + ref.pow(2).sum(-1)[None, :] - 2.0 * (query @ ref.transpose(-1, -2))
            return sq.clamp(min=1e-12).sqrt()
        return torch.cdist(query, ref, p=self.p)

    def pairwise_distance(self, query: Tensor, ref: Tensor) -> Tensor:
        if self.p == 2:
            return (query - ref).pow(2).sum(-1).clamp(min=1e-12).sqrt()
        return torch.linalg.vector_norm(query - ref, ord=self.p, dim=-1)
