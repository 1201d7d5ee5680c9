"""The base class of the graph augmentations: :class:`GraphAugmentation` owns an augmentation's random
stream (``generator`` or ``seed``) and draws its random numbers on the generator's device (see the
package docstring, "Randomness")."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor
from torch_geometric.transforms import BaseTransform

__all__ = ["GraphAugmentation"]


class GraphAugmentation(BaseTransform):
    """Base class: owns the random stream (``generator`` or ``seed``) of an augmentation."""

    def __init__(self, generator: Optional[torch.Generator] = None, seed: Optional[int] = None):
        if generator is not None and seed is not None:
            raise ValueError("pass either generator or seed, not both")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        self.seed = seed
        self.generator = generator
        if seed is not None:
            self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Restart the random stream from ``seed`` (keeps the generator's device)."""
        device = self.generator.device if self.generator is not None else "cpu"
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(int(seed))
        self.seed = int(seed)

    # random helpers: drawn on the generator's device, returned on ``device``
    def _gen_device(self, device: torch.device) -> torch.device:
        return self.generator.device if self.generator is not None else device

    def _randperm(self, n: int, device: torch.device) -> Tensor:
        out = torch.randperm(n, generator=self.generator, device=self._gen_device(device))
        return out.to(device)

    def _randint(self, low: int, high: int, size: Tuple[int, ...], device: torch.device) -> Tensor:
        out = torch.randint(low, high, size, generator=self.generator, device=self._gen_device(device))
        return out.to(device)

    def _rand(self, size: Tuple[int, ...], device: torch.device) -> Tensor:
        return torch.rand(size, generator=self.generator, device=self._gen_device(device)).to(device)

    def _randn(self, size: Tuple[int, ...], device: torch.device) -> Tensor:
        return torch.randn(size, generator=self.generator, device=self._gen_device(device)).to(device)
