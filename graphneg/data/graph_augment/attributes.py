"""GraphCL's attribute masking (:class:`AttributeMask`, with GRACE's feature-channel masking as
``mode="feature"``)."""
from __future__ import annotations

from typing import Optional

import torch
from torch_geometric.data import Data

from graphneg.data.graph_augment.base import GraphAugmentation
from graphneg.validation import check_hyperparameter, check_single_graph

__all__ = ["AttributeMask"]


class AttributeMask(GraphAugmentation):
    r"""Mask the features of a fraction ``p`` of the nodes (GraphCL "attribute masking").

    Source: GraphCL (You et al., NeurIPS 2020) Sec. 3.1: "attribute masking prompts models to recover
    masked vertex attributes using their context information". The paper does not fix the mask
    value and the official code uses several:

    * ``fill="zero"`` (default): the masked rows become zeros (the mask token of GraphCL's
      ``transferLearning_MoleculeNet`` code and of most re-implementations);
    * ``fill="mean"``: the mean feature row of the graph (official
      ``semisupervised_TU/pre-training/tu_dataset.py`` ``mask_nodes``);
    * ``fill="gaussian"``: i.i.d. ``N(0.5, 0.5^2)`` entries (official ``unsupervised_TU/aug.py``
      ``mask_nodes``, the setting of GraphCL's unsupervised TU experiments).

    ``mode="node"`` (default, GraphCL) masks ``floor(p N)`` whole feature rows drawn without
    replacement; ``mode="feature"`` instead zeroes ``floor(p F)`` feature channels for every node
    (the feature masking of GRACE, Zhu et al. 2020, Sec. 3.2; ``fill`` must be ``"zero"`` there).
    The input ``x`` is never modified in place.

    Args:
        p (float): fraction of rows (or channels) to mask, in ``[0, 1]``.
        mode (str): ``"node"`` or ``"feature"``.
        fill (str): ``"zero"``, ``"mean"`` or ``"gaussian"``.
        generator (torch.Generator, optional), seed (int, optional): random stream.

    Shapes:
        ``x=[N, F]`` -> ``x=[N, F]``; the graph structure is unchanged.
    """

    MODES = ("node", "feature")
    FILLS = ("zero", "mean", "gaussian")

    def __init__(self, p: float = 0.2, mode: str = "node", fill: str = "zero",
                 generator: Optional[torch.Generator] = None, seed: Optional[int] = None):
        super().__init__(generator, seed)
        self.p = check_hyperparameter(p, "p", 0.0, 1.0, owner="AttributeMask")
        if mode not in self.MODES:
            raise ValueError(f"AttributeMask mode must be one of {self.MODES}, got {mode!r}")
        if fill not in self.FILLS:
            raise ValueError(f"AttributeMask fill must be one of {self.FILLS}, got {fill!r}")
        if mode == "feature" and fill != "zero":
            raise ValueError("AttributeMask(mode='feature') zeroes channels: use fill='zero'")
        self.mode, self.fill = mode, fill

    def forward(self, data: Data) -> Data:
        check_single_graph(data, "AttributeMask")
        x = data.x
        if x is None:
            raise ValueError(
                "AttributeMask needs node features data.x; add them first, e.g. "
                "torch_geometric.transforms.OneHotDegree(max_degree) for graphs without attributes"
            )
        if x.dim() != 2:
            raise ValueError(f"AttributeMask expects data.x of shape [N, F], got {tuple(x.shape)}")
        n, f = x.shape
        device = x.device
        if self.mode == "feature":
            k = int(self.p * f)
            if k == 0:
                return data
            cols = self._randperm(f, device)[:k]
            keep = torch.ones(f, dtype=x.dtype, device=device)
            keep[cols] = 0
            data.x = x * keep
            return data
        k = int(self.p * n)
        if k == 0:
            return data
        rows = self._randperm(n, device)[:k]
        out = x.clone()
        if self.fill == "zero":
            out[rows] = 0
        elif self.fill == "mean":
            out[rows] = x.float().mean(dim=0).to(x.dtype)
        else:
            out[rows] = (0.5 + 0.5 * self._randn((k, f), device)).to(x.dtype)
        data.x = out
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(p={self.p}, mode={self.mode!r}, fill={self.fill!r})"
