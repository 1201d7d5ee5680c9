"""Combining and seeding augmentations: :class:`Identity`, :class:`RandomChoice` (one augmentation drawn
per graph), :class:`TwoViews` (GraphCL's pair of views) with :func:`collate_views`, and
:func:`reseed_augmentations` (one seed per augmentation inside a nested transform)."""
from __future__ import annotations

import copy
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch_geometric.data import Batch, Data
from torch_geometric.transforms import BaseTransform, Compose

from graphneg.data.graph_augment.base import GraphAugmentation

__all__ = ["Identity", "RandomChoice", "TwoViews", "collate_views", "reseed_augmentations"]


class Identity(BaseTransform):
    """No augmentation (GraphCL's ``none``): returns the graph unchanged."""

    def forward(self, data: Data) -> Data:
        return data


class RandomChoice(GraphAugmentation):
    r"""Apply one augmentation drawn at random per call (GraphCL's ``random2/3/4`` options).

    Source: GraphCL official code (``unsupervised_TU/aug.py``: ``random4`` draws uniformly among
    node dropping, edge perturbation, subgraph and attribute masking for every graph).

    Args:
        transforms (list of callables): the candidates.
        probs (list of float, optional): their probabilities (uniform by default).
        generator (torch.Generator, optional), seed (int, optional): random stream of the choice
            (each candidate keeps its own stream).
    """

    def __init__(self, transforms: Sequence[Callable], probs: Optional[Sequence[float]] = None,
                 generator: Optional[torch.Generator] = None, seed: Optional[int] = None):
        super().__init__(generator, seed)
        transforms = list(transforms)
        if len(transforms) == 0:
            raise ValueError("RandomChoice needs at least one transform")
        if probs is None:
            probs = [1.0 / len(transforms)] * len(transforms)
        probs = torch.as_tensor(list(probs), dtype=torch.float64)
        if probs.numel() != len(transforms) or bool((probs < 0).any()) or float(probs.sum()) <= 0:
            raise ValueError(
                f"RandomChoice probs must be {len(transforms)} non-negative numbers with a positive "
                f"sum, got {probs.tolist()}"
            )
        self.transforms = transforms
        self.probs = probs / probs.sum()

    def forward(self, data: Data) -> Data:
        idx = int(torch.multinomial(self.probs.float(), 1, generator=self.generator))
        return self.transforms[idx](data)

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"{self.__class__.__name__}([{inner}], probs={[round(p, 4) for p in self.probs.tolist()]})"


class TwoViews(BaseTransform):
    r"""Return two independently augmented views ``(aug1(data), aug2(data))`` of one graph.

    GraphCL (You et al., NeurIPS 2020) Eq. (1)-(3): two augmentations ``t_i, t_j`` are applied to the
    same graph and the two views form the positive pair. ``aug2=None`` reuses ``aug1`` (its random
    stream advances between the two calls, so the views differ). Each view is built from its own
    shallow copy of the input, so one view never sees the other's changes. Pair with
    :func:`collate_views` in a DataLoader.
    """

    def __init__(self, aug1: Callable, aug2: Optional[Callable] = None):
        if not callable(aug1) or (aug2 is not None and not callable(aug2)):
            raise ValueError("TwoViews needs callable augmentations (PyG transforms)")
        self.aug1 = aug1
        self.aug2 = aug2 if aug2 is not None else aug1

    def forward(self, data: Data) -> Tuple[Data, Data]:
        return self.aug1(copy.copy(data)), self.aug2(copy.copy(data))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.aug1!r}, {self.aug2!r})"


def collate_views(pairs: Sequence[Tuple[Data, Data]]) -> Tuple[Batch, Batch]:
    """DataLoader ``collate_fn`` for :class:`TwoViews` items: ``[(a_1, b_1), ...]`` ->
    ``(Batch(a_1, ...), Batch(b_1, ...))``; graph ``g`` of both batches comes from the same item."""
    pairs = list(pairs)
    if len(pairs) == 0:
        raise ValueError("collate_views got an empty list of pairs")
    if not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in pairs):
        raise ValueError(
            "collate_views expects (view1, view2) pairs: set TwoViews(aug1, aug2) as the dataset transform"
        )
    first = Batch.from_data_list([p[0] for p in pairs])
    second = Batch.from_data_list([p[1] for p in pairs])
    return first, second


def _iter_augmentations(transform) -> List[GraphAugmentation]:
    """All :class:`GraphAugmentation` objects inside ``transform`` (Compose, RandomChoice, TwoViews),
    each once, in depth-first order."""
    found: List[GraphAugmentation] = []
    seen = set()

    def visit(t):
        if t is None or id(t) in seen:
            return
        seen.add(id(t))
        if isinstance(t, GraphAugmentation):
            found.append(t)
        if isinstance(t, (Compose, RandomChoice)):
            for sub in t.transforms:
                visit(sub)
        if isinstance(t, TwoViews):
            visit(t.aug1)
            visit(t.aug2)

    visit(transform)
    return found


def reseed_augmentations(transform, seed: int) -> int:
    """Give every augmentation inside ``transform`` its own seed ``seed + 0, seed + 1, ...``
    (depth-first order) and return how many were reseeded.

    Use in a DataLoader ``worker_init_fn`` with the worker's seed, so workers draw different
    augmentations, reproducibly for a seeded DataLoader ``generator``.
    """
    augs = _iter_augmentations(transform)
    for k, aug in enumerate(augs):
        aug.reseed(int(seed) + k)
    return len(augs)
