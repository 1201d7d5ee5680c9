"""MLP projection head ``g(h)`` for contrastive learning.

SimCLR (Chen et al., ICML 2020, Sec. 2.1, eq. ``z = g(h) = W2 relu(W1 h)``) maps the encoder
representation ``h`` to the space where the contrastive loss is applied; HCL's image code
(Robinson et al., ICLR 2021; official code ``image/model.py``, ``Model.g``) uses
``Linear(2048, 512, bias=False) -> BatchNorm1d(512) -> ReLU -> Linear(512, feature_dim=128)``.
:class:`MLPProjector` generalises this to ``num_layers`` linear layers; the defaults reproduce HCL's
head (with ``in_dim=512`` for ResNet-18, ``2048`` for ResNet-50).

The output is not normalised: the contrastive losses normalise (cosine similarity) themselves.
"""
from __future__ import annotations

from torch import Tensor, nn

__all__ = ["MLPProjector"]


class MLPProjector(nn.Module):
    r"""Projection head: ``num_layers - 1`` blocks ``Linear -> [BatchNorm1d] -> ReLU``, then ``Linear``.

    With ``batch_norm=True`` the hidden linear layers have no bias (the BatchNorm shift replaces it,
    as in HCL's ``Linear(2048, 512, bias=False)``); the last layer always has a bias.

    Args:
        in_dim: encoder feature size (512 for ResNet-18, 2048 for ResNet-50).
        hidden_dim: width of the hidden layers (HCL: 512).
        out_dim: projection size (HCL / SimCLR-CIFAR: 128).
        num_layers: number of linear layers, ``>= 1``; ``1`` is a linear projection.
        batch_norm: BatchNorm1d after each hidden linear layer.

    Shapes:
        - input: ``[N, in_dim]``
        - output: ``[N, out_dim]``
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 512,
        out_dim: int = 128,
        num_layers: int = 2,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim),
                            ("num_layers", num_layers)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"MLPProjector: {name} must be a positive int, got {value!r}")
        self.in_dim = in_dim
        self.hidden_dim = hidden_dim
        self.out_dim = out_dim
        self.num_layers = num_layers
        self.batch_norm = batch_norm

        layers = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(dim, hidden_dim, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim, bias=True))
        self.net = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Reset every linear layer (PyTorch default init) and BatchNorm (weight 1, bias 0, stats)."""
        for m in self.net:
            if isinstance(m, (nn.Linear, nn.BatchNorm1d)):
                m.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.size(-1) != self.in_dim:
            raise ValueError(
                f"MLPProjector expects features of shape [N, {self.in_dim}], got {tuple(x.shape)}; set "
                "in_dim to the encoder's out_channels and flatten its output (x.flatten(1))"
            )
        return self.net(x)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_dim}, {self.out_dim}, hidden_dim={self.hidden_dim}, "
            f"num_layers={self.num_layers}, batch_norm={self.batch_norm})"
        )
