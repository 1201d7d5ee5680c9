"""Small image encoders for tiny images (MNIST-like digits) and embedding heads."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class SmallCNN(nn.Module):
    """A 3-block CNN embedding network for small images.

    ``[N, C, H, W] -> [N, embedding_dim]``: three ``conv3x3-BN-ReLU`` blocks (32, 64, 128 channels; the
    first two followed by 2x2 max-pooling), global average pooling, then ``Linear(128, embedding_dim)``.
    Embeddings are returned unnormalised (losses normalise where their formula says so).
    """

    def __init__(self, in_channels: int = 1, embedding_dim: int = 64, width: int = 32) -> None:
        super().__init__()
        w = width
        self.in_channels, self.embedding_dim = in_channels, embedding_dim
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1, bias=False), nn.BatchNorm2d(4 * w), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.out_channels = 4 * w
        self.fc = nn.Linear(4 * w, embedding_dim) if embedding_dim else nn.Identity()
        if not embedding_dim:
            self.embedding_dim = self.out_channels

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.size(1) != self.in_channels:
            raise ValueError(
                f"SmallCNN expects images [N, {self.in_channels}, H, W], got shape {tuple(x.shape)}"
            )
        return self.fc(self.features(x))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(in_channels={self.in_channels}, embedding_dim={self.embedding_dim})"


class Flatten(nn.Module):
    """Identity embedding of raw inputs (``x.flatten(1)``): the raw-pixel baseline."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)


__all__ = ["SmallCNN", "Flatten"]
