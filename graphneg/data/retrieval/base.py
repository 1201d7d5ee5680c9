"""The base of the retrieval benchmarks: official transforms, a lazily decoded image list and
:class:`RetrievalDataModule` (C x m training batches, test / query-gallery evaluation loaders).

Each benchmark's reader (:mod:`graphneg.data.retrieval.readers`) overrides :meth:`RetrievalDataModule.read_splits`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from graphneg.data.retrieval.layouts import LAYOUTS, Split, check_first_image, missing_file
from graphneg.data.samplers import MPerClassBatchSampler

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def retrieval_train_transform(image_size: int = 224, scale: Tuple[float, float] = (0.08, 1.0)) -> Callable:
    """Official training transform (``scripts/dataset.py::MetricDataset``, ``is_train=True``)."""
    from torchvision import transforms as T

    return T.Compose([
        T.RandomResizedCrop(image_size, scale=tuple(scale)),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def retrieval_eval_transform(image_size: int = 224, resize: int = 256) -> Callable:
    """Official evaluation transform (``scripts/dataset.py::MetricDataset``, ``is_train=False``)."""
    from torchvision import transforms as T

    return T.Compose([
        T.Resize(resize),
        T.CenterCrop(image_size),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class ImageListDataset(Dataset):
    """``(transform(PIL image), label)`` for a list of image files, decoded lazily in ``__getitem__``.

    Only the paths and labels are held in memory (picklable, so DataLoader workers can be spawned).
    Grey or palette images are converted to RGB, as the official ``Inshop_Dataset``.
    """

    def __init__(self, paths: Sequence[str], labels: Sequence[int], transform: Optional[Callable] = None):
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} image paths but {len(labels)} labels")
        self.paths = [str(p) for p in paths]
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        path = self.paths[i]
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image file {path} is listed by the dataset's index but does not exist")
        with Image.open(path) as im:
            im = im.convert("RGB")
        x = self.transform(im) if self.transform is not None else im
        return x, self.labels[i]


class RetrievalDataModule(L.LightningDataModule):
    """Shared base of the four benchmark DataModules (lazy image lists + C x m training batches).

    Subclasses implement :meth:`read_splits` returning ``{"train": (paths, labels), "test": ...}`` (In-Shop:
    ``"train"``, ``"query"``, ``"gallery"``).

    Args:
        root: the dataset folder (see the subclass for its layout).
        classes_per_batch / samples_per_class: the C x m batch of :class:`MPerClassBatchSampler` (official
            ``NUM_SAMPLED_CLASSES`` / ``NUM_PER_CLASS``).
        eval_batch_size: batch size of the evaluation loaders.
        num_workers: DataLoader worker processes (images decode in the workers).
        seed: seed of the batch sampler (epoch ``e`` uses ``seed + e``).
        image_size: crop size (official 224).
        resize: evaluation resize before the centre crop (official 256).
        scale: ``RandomResizedCrop`` area range (official ``TRAIN.SCALE`` (0.08, 1)).
        pin_memory: pin host memory (default: when CUDA is available).
    """

    name: str = ""

    def __init__(
        self,
        root: str,
        classes_per_batch: int = 27,
        samples_per_class: int = 3,
        eval_batch_size: int = 128,
        num_workers: int = 4,
        seed: int = 0,
        image_size: int = 224,
        resize: int = 256,
        scale: Tuple[float, float] = (0.08, 1.0),
        pin_memory: Optional[bool] = None,
    ) -> None:
        super().__init__()
        if root is None or str(root) == "":
            raise ValueError(f"root must be the dataset folder. Expected layout: {LAYOUTS[self.name]}")
        if image_size < 1 or resize < image_size:
            raise ValueError(f"need 1 <= image_size <= resize, got image_size={image_size}, resize={resize}")
        if not (0.0 < scale[0] <= scale[1] <= 1.0):
            raise ValueError(f"scale must satisfy 0 < scale[0] <= scale[1] <= 1, got {tuple(scale)}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.root = Path(root).expanduser()
        self.classes_per_batch, self.samples_per_class = int(classes_per_batch), int(samples_per_class)
        self.eval_batch_size, self.num_workers, self.seed = int(eval_batch_size), int(num_workers), int(seed)
        self.image_size, self.resize, self.scale = int(image_size), int(resize), tuple(scale)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.splits: Optional[Dict[str, Split]] = None
        self.datasets: Dict[str, ImageListDataset] = {}

    # subclasses -----------------------------------------------------------
    def read_splits(self) -> Dict[str, Split]:
        """``{split: (image paths, contiguous labels)}``; each benchmark's reader overrides this."""
        raise TypeError(f"{type(self).__name__} must override read_splits() (use one of the four readers)")

    @property
    def eval_splits(self) -> Tuple[str, ...]:
        return ("test",)

    # common ---------------------------------------------------------------
    def _ensure_root(self) -> None:
        if not self.root.is_dir():
            raise missing_file(self.name, self.root, "folder")

    #: image channels (graphneg's size protocol, see graphneg.cli)
    in_channels = 3

    @property
    def num_train_classes(self) -> int:
        self._read()
        return len(set(self.splits["train"][1]))

    @property
    def num_classes(self) -> int:
        """Training classes (labels ``0..num_classes-1``), read from the split files: the size the CLI links
        into a generator's, a loss's and the model's ``num_classes`` (graphneg's size protocol)."""
        return self.num_train_classes

    def _read(self) -> Dict[str, Split]:
        if self.splits is None:
            self._ensure_root()
            self.splits = self.read_splits()
            for paths, _ in self.splits.values():
                check_first_image(self.name, paths)
        return self.splits

    def setup(self, stage: Optional[str] = None) -> None:
        if self.datasets:
            return
        splits = self._read()
        train_tf = retrieval_train_transform(self.image_size, self.scale)
        eval_tf = retrieval_eval_transform(self.image_size, self.resize)
        self.datasets = {
            name: ImageListDataset(paths, labels, train_tf if name == "train" else eval_tf)
            for name, (paths, labels) in splits.items()
        }
        self.train_set = self.datasets["train"]
        self.train_eval_set = ImageListDataset(*splits["train"], transform=eval_tf)

    def train_dataloader(self) -> DataLoader:
        sampler = MPerClassBatchSampler(
            self.train_set.labels, self.classes_per_batch, self.samples_per_class, seed=self.seed
        )
        return DataLoader(
            self.train_set, batch_sampler=sampler, num_workers=self.num_workers, pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        # own generator: evaluation leaves the global RNG (training stream) untouched
        return DataLoader(
            dataset, batch_size=self.eval_batch_size, shuffle=False, num_workers=self.num_workers,
            pin_memory=self.pin_memory, generator=torch.Generator().manual_seed(self.seed),
        )

    def val_dataloader(self):
        loaders = [self._eval_loader(self.datasets[s]) for s in self.eval_splits]
        return loaders[0] if len(loaders) == 1 else loaders

    test_dataloader = val_dataloader

    def predict_dataloader(self):
        return self.val_dataloader()

    def train_eval_dataloader(self) -> DataLoader:
        """Training images with the evaluation transform, in order."""
        return self._eval_loader(self.train_eval_set)


__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "ImageListDataset", "RetrievalDataModule", "retrieval_eval_transform",
    "retrieval_train_transform",
]
