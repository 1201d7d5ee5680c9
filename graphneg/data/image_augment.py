"""Two-view image augmentations for contrastive learning (SimCLR family).

:class:`SimCLRViews` draws two independent random augmentations of one image, the positive pair of
SimCLR (Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020,
Sec. 3 and appendix A) and of HCL (Robinson et al., ICLR 2021; official code ``image/utils.py``,
``train_transform`` and the ``*Pair`` datasets):

1. ``RandomResizedCrop(size, scale=crop_scale)`` (SimCLR: scale ``(0.08, 1)``, aspect ``(3/4, 4/3)``);
2. optional small rotation / translation (``RandomAffine``; only the digit preset uses it);
3. ``RandomHorizontalFlip(0.5)`` (off for digits: a flipped 2 is not a 2);
4. ``RandomApply([ColorJitter(0.8 s, 0.8 s, 0.8 s, 0.2 s)], p=0.8)`` with colour strength ``s``
   (SimCLR appendix A, ``get_color_distortion``; ``s = 0.5`` gives HCL's ``ColorJitter(0.4, 0.4, 0.4,
   0.1)``); for single-channel images only brightness and contrast are jittered;
5. ``RandomGrayscale(p=0.2)`` (RGB only);
6. optional ``GaussianBlur`` with probability ``blur_prob``, kernel ~10% of the image side, sigma in
   ``[0.1, 2]`` (SimCLR appendix A; SimCLR drops it for CIFAR-10 (appendix B.9), HCL keeps a 3x3 blur
   with p = 0.5; the presets follow SimCLR: off for CIFAR, on for STL-10's 96x96 images);
7. ``Normalize(mean, std)``.

Inputs: PIL images, ``uint8`` tensors ``[C, H, W]`` in ``[0, 255]`` or floating tensors ``[C, H, W]`` in
``[0, 1]`` (``torchvision.transforms.v2`` handles all three). The image is converted to a float tensor
*first*, so a PIL image and the equal uint8 tensor give the same views under the same seed. Randomness
comes from torch's global generator: ``torch.manual_seed`` makes the views reproducible, and DataLoader
workers get distinct seeds automatically.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor
from torchvision.transforms import v2

from graphneg.validation import check_channel_stats, check_image_size

__all__ = [
    "SimCLRViews",
    "eval_transform",
    "cifar_views",
    "cifar100_views",
    "stl_views",
    "digit_views",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "STL10_MEAN",
    "STL10_STD",
    "MNIST_MEAN",
    "MNIST_STD",
]

# HCL official code image/utils.py (also leftthomas/SimCLR); HCL uses these for every dataset.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
# Per-channel statistics of the CIFAR-100 training set (commonly used values).
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
# Per-channel statistics of STL-10 (commonly used values).
STL10_MEAN = (0.4467, 0.4398, 0.4066)
STL10_STD = (0.2603, 0.2566, 0.2713)
# MNIST training-set statistics (the PyTorch MNIST example).
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)


def _to_float_image() -> list:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]


class SimCLRViews:
    r"""Draw ``num_views`` (default 2) independent SimCLR augmentations of one image.

    Args:
        size: output side (int) or ``(height, width)``.
        mean, std: per-channel normalisation (see the module's ``*_MEAN`` / ``*_STD`` constants).
        strength: colour-distortion strength ``s`` of SimCLR appendix A: ``ColorJitter(0.8 s, 0.8 s,
            0.8 s, 0.2 s)``; ``0`` disables colour jitter. Default ``0.5`` (= HCL's ``(0.4, 0.4, 0.4,
            0.1)``).
        grayscale: the images have one channel: jitter brightness/contrast only, no random grayscale.
        hflip: random horizontal flip with p = 0.5 (turn off for digits / text).
        crop_scale: area range of ``RandomResizedCrop`` (SimCLR: ``(0.08, 1.0)``).
        crop_ratio: aspect-ratio range of ``RandomResizedCrop``.
        jitter_prob: probability of applying the colour jitter (SimCLR: 0.8).
        grayscale_prob: probability of ``RandomGrayscale`` for RGB images (SimCLR: 0.2).
        blur_prob: probability of a Gaussian blur (kernel ~10% of the side, odd; sigma in [0.1, 2]).
        rotation: maximal rotation in degrees of a ``RandomAffine`` (0: none).
        translate: maximal ``(dx, dy)`` translation fractions of the ``RandomAffine`` (None: none).
        num_views: number of views returned (2 for the usual positive pair).

    Returns (``__call__``): a tuple of ``num_views`` float tensors ``[C, size, size]``.
    """

    def __init__(
        self,
        size,
        mean: Sequence[float],
        std: Sequence[float],
        strength: float = 0.5,
        grayscale: bool = False,
        hflip: bool = True,
        crop_scale: Tuple[float, float] = (0.08, 1.0),
        crop_ratio: Tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        jitter_prob: float = 0.8,
        grayscale_prob: float = 0.2,
        blur_prob: float = 0.0,
        rotation: float = 0.0,
        translate: Optional[Tuple[float, float]] = None,
        num_views: int = 2,
    ) -> None:
        self.size = check_image_size(size)
        self.mean, self.std = check_channel_stats(mean, std)
        if strength < 0:
            raise ValueError(f"strength (colour-distortion strength s) must be >= 0, got {strength}")
        for name, p in (("jitter_prob", jitter_prob), ("grayscale_prob", grayscale_prob),
                        ("blur_prob", blur_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} is a probability and must lie in [0, 1], got {p}")
        lo, hi = crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {crop_scale}")
        if not isinstance(num_views, int) or num_views < 1:
            raise ValueError(f"num_views must be a positive int, got {num_views!r}")
        if grayscale and len(self.mean) != 1:
            raise ValueError(
                f"grayscale=True expects single-channel statistics (e.g. MNIST_MEAN, MNIST_STD), got "
                f"mean={self.mean}"
            )
        self.strength = float(strength)
        self.grayscale = grayscale
        self.hflip = hflip
        self.crop_scale = (float(lo), float(hi))
        self.crop_ratio = tuple(float(r) for r in crop_ratio)
        self.jitter_prob = jitter_prob
        self.grayscale_prob = grayscale_prob
        self.blur_prob = blur_prob
        self.rotation = float(rotation)
        self.translate = None if translate is None else tuple(float(t) for t in translate)
        self.num_views = num_views

        ops = _to_float_image()
        ops.append(v2.RandomResizedCrop(self.size, scale=self.crop_scale, ratio=self.crop_ratio,
                                        antialias=True))
        if self.rotation > 0 or self.translate is not None:
            ops.append(v2.RandomAffine(degrees=self.rotation, translate=self.translate))
        if hflip:
            ops.append(v2.RandomHorizontalFlip(p=0.5))
        s = self.strength
        if s > 0 and jitter_prob > 0:
            if grayscale:
                jitter = v2.ColorJitter(brightness=0.8 * s, contrast=0.8 * s)
            else:
                jitter = v2.ColorJitter(brightness=0.8 * s, contrast=0.8 * s, saturation=0.8 * s,
                                        hue=min(0.2 * s, 0.5))
            ops.append(v2.RandomApply([jitter], p=jitter_prob))
        if not grayscale and grayscale_prob > 0:
            ops.append(v2.RandomGrayscale(p=grayscale_prob))
        if blur_prob > 0:
            kernel = max(3, int(0.1 * min(self.size)) // 2 * 2 + 1)
            ops.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=blur_prob))
        ops += [v2.Normalize(self.mean, self.std), v2.ToPureTensor()]
        #: the one-view pipeline (a ``v2.Compose``), applied ``num_views`` times by ``__call__``
        self.transform = v2.Compose(ops)

    def __call__(self, image) -> Tuple[Tensor, ...]:
        return tuple(self.transform(image) for _ in range(self.num_views))

    def eval_transform(self, resize: bool = False) -> v2.Compose:
        """The matching deterministic transform (tensor + normalisation; ``resize`` to ``size``)."""
        return eval_transform(self.mean, self.std, self.size if resize else None)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(size={self.size}, strength={self.strength}, "
            f"grayscale={self.grayscale}, hflip={self.hflip}, crop_scale={self.crop_scale}, "
            f"blur_prob={self.blur_prob}, rotation={self.rotation}, translate={self.translate}, "
            f"num_views={self.num_views})"
        )


def eval_transform(mean: Sequence[float], std: Sequence[float], size=None) -> v2.Compose:
    """Deterministic evaluation transform: float tensor in [0, 1], optional ``Resize(size)``, normalise.

    As HCL's ``test_transform`` (official code ``image/utils.py``: ``ToTensor`` + ``Normalize``).
    """
    mean, std = check_channel_stats(mean, std)
    ops = _to_float_image()
    if size is not None:
        ops.append(v2.Resize(check_image_size(size), antialias=True))
    ops += [v2.Normalize(mean, std), v2.ToPureTensor()]
    return v2.Compose(ops)


def cifar_views(size: int = 32, strength: float = 0.5, blur_prob: float = 0.0,
                mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD,
                **kwargs) -> SimCLRViews:
    """SimCLR CIFAR-10 views: crop (0.08, 1), flip, jitter s=0.5 (HCL) p=0.8, grayscale p=0.2, no blur.

    SimCLR appendix B.9 omits the blur on CIFAR; pass ``blur_prob=0.5`` for HCL's variant.
    """
    return SimCLRViews(size, mean, std, strength=strength, blur_prob=blur_prob, **kwargs)


def cifar100_views(size: int = 32, strength: float = 0.5, blur_prob: float = 0.0, **kwargs) -> SimCLRViews:
    """As :func:`cifar_views` with CIFAR-100 normalisation statistics."""
    return cifar_views(size, strength, blur_prob, mean=CIFAR100_MEAN, std=CIFAR100_STD, **kwargs)


def stl_views(size: int = 96, strength: float = 0.5, blur_prob: float = 0.5,
              mean: Sequence[float] = STL10_MEAN, std: Sequence[float] = STL10_STD,
              **kwargs) -> SimCLRViews:
    """STL-10 views at the native 96x96 with SimCLR's Gaussian blur (p = 0.5, kernel 9).

    HCL crops STL-10 to 32x32 (its shared ``train_transform``); pass ``size=32`` to reproduce that.
    """
    return SimCLRViews(size, mean, std, strength=strength, blur_prob=blur_prob, **kwargs)


def digit_views(size: int = 28, crop_scale: Tuple[float, float] = (0.6, 1.0), rotation: float = 10.0,
                translate: Optional[Tuple[float, float]] = (0.1, 0.1),
                mean: Sequence[float] = MNIST_MEAN, std: Sequence[float] = MNIST_STD,
                **kwargs) -> SimCLRViews:
    """Views for MNIST-like single-channel digits ``[1, 28, 28]``.

    Reconstructed (no reference recipe for digits in SimCLR/HCL): a milder crop (scale ``(0.6, 1)``, a
    digit must stay recognisable), a small rotation (+-10 deg) and translation (10%), no flip (digits
    are not mirror-symmetric) and no colour distortion (grey strokes on black).
    """
    kwargs.setdefault("strength", 0.0)
    kwargs.setdefault("hflip", False)
    kwargs.setdefault("grayscale", True)
    return SimCLRViews(size, mean, std, crop_scale=crop_scale, rotation=rotation, translate=translate,
                       **kwargs)
