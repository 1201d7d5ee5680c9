"""Small image encoders for tiny images (MNIST-like digits) and the embedding head of every metric-learning
encoder."""
from __future__ import annotations

from typing import Sequence, Union

from torch import Tensor, nn

HEADS = ("batchnorm", "linear")


class EmbeddingHead(nn.Sequential):
    r"""The GCA-HNG embedding head: ``BatchNorm1d(in_features)`` then ``Linear(in_features, out_features)``.

    Source: the official PWenJay/GCA-HNG ``scripts/models.py``, ``Feature_Extractor.fc =
    nn.Sequential(nn.BatchNorm1d(n_mid), nn.Linear(n_mid, embedding_size))`` on the pooled backbone
    feature, without L2 normalisation (``MODEL.NORM: False``). The same module ends
    :class:`SmallCNN`, :class:`~graphneg.models.ResNet50Embedding` and
    :class:`~graphneg.models.GoogLeNetEmbedding`, so the state dict keys are the official ones
    (``fc.0.*`` the BatchNorm1d, ``fc.1.*`` the Linear).

    Args:
        in_features: size ``F`` of the pooled feature.
        out_features: embedding size ``D``.
        norm: ``"batchnorm"`` (official, default) or ``"linear"``: the plain ``Linear`` head (one
            module ``fc.0``), kept for the record (the earlier graphneg ``SmallCNN`` head).

    Why the BatchNorm matters for GCA-HNG: it standardises the pooled feature, which bounds the scale of
    the gradient the GNN's node loss ``J_gce`` sends into the encoder relative to the metric loss's (see
    ``experiments/results/gca_hng_study.md``).

    Shapes:
        - input: ``[N, in_features]``
        - output: ``[N, out_features]``
    """

    def __init__(self, in_features: int, out_features: int, norm: str = "batchnorm") -> None:
        if norm not in HEADS:
            raise ValueError(f"norm must be one of {HEADS} ('batchnorm' is the official GCA-HNG head), got {norm!r}")
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        layers = [nn.BatchNorm1d(in_features)] if norm == "batchnorm" else []
        super().__init__(*layers, nn.Linear(in_features, out_features))
        self.in_features, self.out_features, self.norm = in_features, out_features, norm

    def reset_parameters(self) -> None:
        """Re-initialise both layers (torch defaults: BatchNorm weight 1 / bias 0 / fresh statistics)."""
        for m in self:
            m.reset_parameters()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, norm={self.norm!r}"


class SmallCNN(nn.Module):
    """A 3-block CNN embedding network for small images.

    ``[N, C, H, W] -> [N, embedding_dim]``: three ``conv3x3-BN-ReLU`` blocks (``width``, ``2 width``,
    ``4 width`` channels; the first two followed by 2x2 max-pooling), adaptive average pooling to
    ``pool`` cells, flatten, then the :class:`EmbeddingHead` (``BatchNorm1d`` + ``Linear`` as the official
    GCA-HNG ``Feature_Extractor``; ``head="linear"`` for a plain ``Linear``). With ``embedding_dim=0`` the
    pooled feature is returned (no head: contrastive encoders put a projector on top).
    Embeddings are returned unnormalised (losses normalise where their formula says so).

    Args:
        in_channels: image channels.
        embedding_dim: output size (0: no head).
        width: channels of the first block.
        head: ``"batchnorm"`` (official, default) or ``"linear"``.
        pool: output cells ``(rows, cols)`` of the adaptive average pooling; ``(1, 1)`` (default) is global
            average pooling. ``(1, 2)`` keeps the left and right halves apart, which a two-digit image
            needs to tell ``57`` from ``75`` (global pooling of a 3-layer CNN with a small receptive field
            is nearly invariant to swapping the two digits).
    """

    def __init__(
        self,
        in_channels: int = 1,
        embedding_dim: int = 64,
        width: int = 32,
        head: str = "batchnorm",
        pool: Union[int, Sequence[int]] = (1, 1),
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS} ('batchnorm' is the official GCA-HNG head), got {head!r}")
        pool = (int(pool), int(pool)) if isinstance(pool, int) else tuple(int(p) for p in pool)
        if len(pool) != 2 or min(pool) < 1:
            raise ValueError(f"pool must be a positive int or a (rows, cols) pair of them, e.g. (1, 2), got {pool!r}")
        w = width
        self.in_channels, self.embedding_dim, self.head, self.pool = in_channels, embedding_dim, head, pool
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1, bias=False), nn.BatchNorm2d(4 * w), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(pool), nn.Flatten(),
        )
        self.out_channels = 4 * w * pool[0] * pool[1]
        self.fc = EmbeddingHead(self.out_channels, embedding_dim, head) if embedding_dim else nn.Identity()
        if not embedding_dim:
            self.embedding_dim = self.out_channels

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.size(1) != self.in_channels:
            raise ValueError(
                f"SmallCNN expects images [N, {self.in_channels}, H, W], got shape {tuple(x.shape)}"
            )
        return self.fc(self.features(x))

    def __repr__(self) -> str:
        extra = "" if self.pool == (1, 1) else f", pool={self.pool}"
        return (f"{self.__class__.__name__}(in_channels={self.in_channels}, embedding_dim={self.embedding_dim}, "
                f"head={self.head!r}{extra})")


class Flatten(nn.Module):
    """Identity embedding of raw inputs (``x.flatten(1)``): the raw-pixel baseline."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)


__all__ = ["SmallCNN", "Flatten", "EmbeddingHead"]
