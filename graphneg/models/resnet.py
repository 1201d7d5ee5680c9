"""CIFAR-style ResNet encoders for contrastive learning on small images.

The ImageNet ResNet (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016) opens with a
7x7 stride-2 convolution and a 3x3 stride-2 max-pool, which shrinks a 32x32 CIFAR image to 8x8 before the
first residual stage. SimCLR's CIFAR-10 experiments (Chen et al., ICML 2020, appendix B.9: "we replace
the first 7x7 Conv of stride 2 with 3x3 Conv of stride 1, and also remove the first max pooling
operation") and HCL's image code (Robinson et al., ICLR 2021; official code ``image/model.py``, class
``Model``: ``conv1`` swapped for a 3x3 stride-1 convolution, ``MaxPool2d`` and the final ``Linear``
dropped) use this "CIFAR stem". The residual stages are torchvision's
:class:`~torchvision.models.resnet.BasicBlock` / :class:`~torchvision.models.resnet.Bottleneck` stacks,
unchanged; no pretrained weights are used or downloaded.

Output: the global-average-pooled feature ``[N, out_channels]`` (``fc`` is an identity), i.e. the
representation ``h`` on which SimCLR/HCL evaluate kNN and linear probes; put a
:class:`graphneg.models.projector.MLPProjector` on top for the contrastive loss.
"""
from __future__ import annotations

from typing import List, Type, Union

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

__all__ = ["CifarResNet", "resnet18", "resnet50"]


class CifarResNet(ResNet):
    r"""ResNet with a CIFAR stem (3x3 stride-1 first convolution, no max-pool) and no classifier.

    Args:
        block: :class:`~torchvision.models.resnet.BasicBlock` (ResNet-18/34) or
            :class:`~torchvision.models.resnet.Bottleneck` (ResNet-50/101/152).
        layers: number of blocks per stage, e.g. ``[2, 2, 2, 2]`` for ResNet-18.
        in_channels: image channels (3 for RGB, 1 for grey digits).
        cifar_stem: ``True`` (default) uses the 3x3 stride-1 stem without max-pool of SimCLR-CIFAR /
            HCL; ``False`` keeps torchvision's ImageNet stem (7x7 stride 2 + max-pool), useful for
            large images.
        zero_init_residual: zero-initialise the last BN of each residual branch (Goyal et al. 2017), as
            torchvision's option of the same name.

    Shapes:
        - input: images ``[N, in_channels, H, W]`` (any ``H, W >= 1``; the pooling is adaptive)
        - output: features ``[N, out_channels]`` with ``out_channels = 512 * block.expansion``
    """

    def __init__(
        self,
        block: Type[Union[BasicBlock, Bottleneck]],
        layers: List[int],
        in_channels: int = 3,
        cifar_stem: bool = True,
        zero_init_residual: bool = False,
    ) -> None:
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(
                f"in_channels must be a positive int (3 for RGB, 1 for greyscale), got {in_channels!r}"
            )
        super().__init__(block, layers, zero_init_residual=zero_init_residual)
        self.in_channels = in_channels
        self.cifar_stem = cifar_stem
        self.zero_init_residual = zero_init_residual
        self.arch = f"resnet{self._depth(block, layers)}"
        if cifar_stem:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        elif in_channels != 3:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.fc = nn.Identity()
        self.out_channels = 512 * block.expansion
        self.reset_parameters()

    @staticmethod
    def _depth(block, layers: List[int]) -> int:
        per_block = 2 if block is BasicBlock else 3
        return per_block * sum(layers) + 2

    def reset_parameters(self) -> None:
        """Re-initialise all weights with torchvision's ResNet scheme.

        Kaiming-normal (fan-out, ReLU) convolutions, BatchNorm weight 1 / bias 0, and, with
        ``zero_init_residual``, zero last-BN weight in every residual branch (torchvision
        ``ResNet.__init__``).
        """
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
        if self.zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck) and m.bn3.weight is not None:
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock) and m.bn2.weight is not None:
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.size(1) != self.in_channels:
            raise ValueError(
                f"{self.arch} expects images of shape [N, {self.in_channels}, H, W], got "
                f"{tuple(x.shape)}; build the encoder with in_channels={x.size(1) if x.dim() == 4 else '?'}"
                " or add the channel dimension (x.unsqueeze(1) for [N, H, W] greyscale images)"
            )
        return super().forward(x)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.arch}, in_channels={self.in_channels}, "
            f"out_channels={self.out_channels}, cifar_stem={self.cifar_stem})"
        )


def resnet18(in_channels: int = 3, cifar_stem: bool = True, zero_init_residual: bool = False) -> CifarResNet:
    """ResNet-18 encoder (BasicBlock, ``[2, 2, 2, 2]``), CIFAR stem, output ``[N, 512]``.

    The SimCLR / HCL CIFAR backbone (HCL's default is ResNet-50; UnReMix and most CIFAR baselines use
    ResNet-18). Randomly initialised; no weights are downloaded.
    """
    return CifarResNet(BasicBlock, [2, 2, 2, 2], in_channels, cifar_stem, zero_init_residual)


def resnet50(in_channels: int = 3, cifar_stem: bool = True, zero_init_residual: bool = False) -> CifarResNet:
    """ResNet-50 encoder (Bottleneck, ``[3, 4, 6, 3]``), CIFAR stem, output ``[N, 2048]``.

    HCL's image encoder (official code ``image/model.py``: torchvision ``resnet50`` with the CIFAR stem).
    Randomly initialised; no weights are downloaded.
    """
    return CifarResNet(Bottleneck, [3, 4, 6, 3], in_channels, cifar_stem, zero_init_residual)
