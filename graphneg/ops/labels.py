"""Label helpers on batch order (ground floor): the within-class order of a mini-batch, computed once."""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["next_positive_index", "rank_in_class"]


def _class_runs(labels: Tensor):
    """Stable sort by label: ``order`` (batch rows grouped by class, batch order kept within a
    class), and per sorted position the position where its class starts and whether it ends the
    class. The one place the within-class order of a batch is computed."""
    n = labels.numel()
    idx = torch.arange(n, device=labels.device)
    order = torch.sort(labels, stable=True).indices
    ls = labels[order]
    boundary = ls[1:] != ls[:-1]
    is_start = torch.cat([boundary.new_ones(1), boundary])
    is_end = torch.cat([boundary, boundary.new_ones(1)])
    start = torch.cummax(torch.where(is_start, idx, torch.zeros_like(idx)), dim=0).values
    return order, idx, start, is_end


def next_positive_index(labels: Tensor) -> Tensor:
    """For each sample, the next sample of its class in batch order, cyclically (itself if alone).

    Vectorised: a stable sort by label groups each class in batch order; each sorted position points
    to the following one, the last of a group to the group's first. With the official GCA-HNG layout
    (``m`` chunks of one sample per class, same class order in each chunk) this is "chunk ``j`` pairs
    with chunk ``j + 1`` (mod ``m``)", as in ``scripts/loss.py`` ``NpairLoss`` and
    ``scripts/models.py`` ``GeneralPulling`` (the positive that sets ``d+`` in GCA-HNG's generator).
    """
    if labels.numel() == 0:
        return labels.new_zeros(0, dtype=torch.long)
    order, idx, start, is_end = _class_runs(labels)
    nxt = torch.where(is_end, start, idx + 1)
    out = torch.empty_like(order)
    out[order] = order[nxt]
    return out


def rank_in_class(labels: Tensor) -> Tensor:
    """Occurrence number of each sample within its class in batch order (0, 1, ...) ``[B]``.

    In the official GCA-HNG chunked layout this is the chunk index of the sample (used by
    :func:`graphneg.nn.chain_weights`, whose draws are shared per chunk).
    """
    if labels.numel() == 0:
        return labels.new_zeros(0, dtype=torch.long)
    order, idx, start, _ = _class_runs(labels)
    out = torch.empty_like(order)
    out[order] = idx - start
    return out
