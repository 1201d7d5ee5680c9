r"""Reductions shared by the metric losses, with pytorch-metric-learning's names and contracts.

Source: pytorch-metric-learning ``reducers/`` (``MeanReducer``: mean of all per-element losses;
``AvgNonZeroReducer``: mean of the positive ones, 0 when none). graphneg's losses keep their
per-element losses in a dense tensor with a boolean ``keep`` mask of the elements that exist (pairs,
triplets, anchors), so a reducer is ``reducer(losses, keep) -> scalar``: no boolean indexing, no host
sync. An empty selection gives a 0 that is still attached to the graph (PML returns ``sum(emb * 0)``).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional

from torch import Tensor, nn

__all__ = ["BaseReducer", "MeanReducer", "AvgNonZeroReducer", "masked_mean"]


def masked_mean(values: Tensor, keep: Optional[Tensor] = None) -> Tensor:
    """Mean of ``values`` over ``keep`` (all when ``None``); 0, still attached to the graph, when empty."""
    if keep is None:
        return values.mean() if values.numel() else values.sum()
    total = (values * keep.to(values.dtype)).sum()
    return total / keep.sum().clamp(min=1).to(values.dtype)


class BaseReducer(nn.Module, ABC):
    """``reducer(losses, keep=None) -> scalar`` over the elements where ``keep`` is ``True``."""

    @abstractmethod
    def forward(self, losses: Tensor, keep: Optional[Tensor] = None) -> Tensor:
        """The reduced loss; each reducer defines it."""


class MeanReducer(BaseReducer):
    """Mean of the kept per-element losses (PML ``MeanReducer``)."""

    def forward(self, losses: Tensor, keep: Optional[Tensor] = None) -> Tensor:
        return masked_mean(losses, keep)


class AvgNonZeroReducer(BaseReducer):
    """Mean of the kept per-element losses that are ``> 0`` (PML ``AvgNonZeroReducer``, i.e.
    ``ThresholdReducer(low=0)``); 0 when none is."""

    def forward(self, losses: Tensor, keep: Optional[Tensor] = None) -> Tensor:
        nonzero = losses.detach() > 0
        return masked_mean(losses, nonzero if keep is None else keep & nonzero)
