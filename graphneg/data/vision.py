"""LightningDataModules for contrastive learning on CIFAR-10, CIFAR-100 and STL-10 (offline).

The protocol is HCL's (Robinson et al., ICLR 2021; official code ``image/utils.py`` ``get_dataset`` and
``image/main.py``), itself SimCLR's:

* **contrastive training** (``train_dataloader``): the training images (STL-10: ``train+unlabeled``,
  105k images) through :class:`~graphneg.data.image_augment.SimCLRViews`; each batch is
  ``(view1, view2, label)`` (STL-10's unlabeled images carry label ``-1``); shuffled, ``drop_last``;
* **memory bank / probe set** (``memory_dataloader``): the labelled training images with the
  deterministic evaluation transform, ``(image, label)``: the kNN bank and the linear-probe training
  set (HCL's ``memory_data``);
* **evaluation** (``val_dataloader`` / ``test_dataloader``): the official test split, ``(image,
  label)``. CIFAR/STL have no validation split; like HCL, the online kNN monitor uses the test split.
  With ``val_with_memory=True`` ``val_dataloader`` returns ``[memory_loader, test_loader]``
  (``dataloader_idx`` 0 = bank, 1 = queries) so a LightningModule can build the bank inside its
  validation loop.

Data never comes from the network: torchvision datasets are built with ``download=False``, and the
expected folder is checked first; when files are missing a :class:`FileNotFoundError` names the layout
and how to get it (download the archive on a machine with network access and extract it under
``root``). ``verify_checksums=False`` skips torchvision's MD5 checks (for re-packed or small custom copies
in the official format): the files are then read by :class:`CIFARFiles` / :class:`STL10Files`, which
decode the official formats the same way as torchvision (public APIs only, no torchvision internals);
CIFAR's pickles through a restricted unpickler (:func:`load_cifar_batch`), so an unchecked file cannot
run code.
"""
from __future__ import annotations

import os
import pickle
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.datasets import CIFAR10, CIFAR100, STL10

from graphneg.data.image_augment import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    STL10_MEAN,
    STL10_STD,
    SimCLRViews,
    cifar100_views,
    cifar_views,
    eval_transform,
    stl_views,
)

__all__ = [
    "TwoViewDataset",
    "VisionContrastiveDataModule",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "STL10DataModule",
]


class TwoViewDataset(Dataset):
    """Wrap an ``(image, label)`` dataset: item ``i`` becomes ``(view1, view2, label)``.

    ``views`` is called once per item and must return two tensors (e.g. :class:`SimCLRViews`), as
    HCL's ``CIFAR10Pair`` / ``STL10Pair`` (official code ``image/utils.py``) apply the random transform
    twice to the same image.
    """

    def __init__(self, dataset: Dataset, views: Callable) -> None:
        self.dataset = dataset
        self.views = views

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        views = self.views(image)
        if len(views) != 2:
            raise ValueError(f"views must return two augmented tensors, got {len(views)}; use num_views=2")
        return views[0], views[1], label


# --- the official files read directly (verify_checksums=False) ---------------------------------------

#: the globals an official CIFAR python batch may name: NumPy's array reconstruction (Python 2 and 3 module
#: names, protocol 5's buffer form) and the byte-string codec of protocol-2 pickles written by Python 3
_CIFAR_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol 5
    ("_codecs", "encode"),
})


class _CIFARUnpickler(pickle.Unpickler):
    """An unpickler that builds only what the CIFAR format needs (dicts, lists, strings, numbers and NumPy
    arrays); any other global (``os.system``, ``builtins.eval``, a class with ``__reduce__`` ...) is an
    error, so a crafted batch file cannot run code."""

    def __init__(self, file, path: str) -> None:
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(
                f"{self.path}: not a CIFAR batch file: it asks to load {module}.{name}, which the CIFAR format "
                "never contains (a pickle that would run code, or another kind of file); graphneg refuses it. "
                "Use the official files from https://www.cs.toronto.edu/~kriz/cifar.html"
            )
        return super().find_class(module, name)


def load_cifar_batch(path: str) -> dict:
    """One CIFAR python batch / meta file read with a restricted unpickler (:class:`_CIFARUnpickler`): the
    file can only produce dicts, lists, strings, numbers and NumPy arrays; nothing in it is executed."""
    with open(path, "rb") as f:
        try:
            entry = _CIFARUnpickler(f, path).load()
        except (EOFError, ValueError, TypeError) as err:
            raise ValueError(f"{path}: not a CIFAR batch file ({type(err).__name__}: {err}); the file is truncated "
                             "or of another kind") from None
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: not a CIFAR batch file (holds a {type(entry).__name__}, expected a dict)")
    return entry


class CIFARFiles(Dataset):
    """CIFAR-10/100 python-pickle files read without torchvision's MD5 check (``verify_checksums=False``).

    Without the checksum nothing vouches for the files' origin, and the format is a Python pickle, which can
    run code when loaded with ``pickle.load``. So the files are read with a restricted unpickler
    (:func:`load_cifar_batch`) that only builds the dicts, lists, strings and NumPy arrays of the format: a
    planted payload is refused with an error naming the file, never run.

    Format (https://www.cs.toronto.edu/~kriz/cifar.html): each file a pickled dict whose ``data`` is
    ``[N, 3072]`` uint8 (the R, G, B planes of a 32x32 image, row-major) and whose ``labels`` (CIFAR-10) or
    ``fine_labels`` (CIFAR-100) hold the class ids; the meta file's ``label_names`` / ``fine_label_names``
    the class names. Items are ``(PIL image, label)``, the same as torchvision's ``CIFAR10`` / ``CIFAR100``
    (which read the same files the same way after checking their MD5 sums).
    """

    def __init__(self, folder: str, files: Sequence[str], meta_file: str, meta_key: str,
                 transform: Optional[Callable] = None) -> None:
        data, labels = [], []
        for name in files:
            entry = load_cifar_batch(os.path.join(folder, name))
            data.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
        self.data = np.concatenate(data).transpose(0, 2, 3, 1)  # [N, 32, 32, 3]
        self.targets = [int(t) for t in labels]
        self.classes = load_cifar_batch(os.path.join(folder, meta_file))[meta_key]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        image = Image.fromarray(self.data[index])
        return (self.transform(image) if self.transform is not None else image), self.targets[index]


class STL10Files(Dataset):
    """STL-10 binary files read without torchvision's MD5 check (``verify_checksums=False``).

    Format (https://cs.stanford.edu/~acoates/stl10/): ``<split>_X.bin`` uint8 images ``[N, 3, 96, 96]``
    stored column-major (hence the transposition of the two spatial axes), ``<split>_y.bin`` uint8 labels
    1..10 (stored 1-based; items carry 0..9), no labels for ``unlabeled`` (items carry ``-1``). Items are
    ``(PIL image, label)`` as torchvision's ``STL10``. ``split``: ``train``, ``test``, ``unlabeled`` or
    ``train+unlabeled``.
    """

    def __init__(self, folder: str, split: str, transform: Optional[Callable] = None) -> None:
        parts = {"train+unlabeled": ("train", "unlabeled")}.get(split, (split,))
        images, labels = [], []
        for part in parts:
            x = np.fromfile(os.path.join(folder, f"{part}_X.bin"), dtype=np.uint8).reshape(-1, 3, 96, 96)
            images.append(np.transpose(x, (0, 1, 3, 2)))
            if part == "unlabeled":
                labels.append(np.full(x.shape[0], -1, dtype=np.int64))
            else:
                labels.append(np.fromfile(os.path.join(folder, f"{part}_y.bin"), dtype=np.uint8).astype(np.int64) - 1)
        self.data, self.labels = np.concatenate(images), np.concatenate(labels)
        names = os.path.join(folder, "class_names.txt")
        self.classes = open(names).read().split() if os.path.isfile(names) else None
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = Image.fromarray(np.transpose(self.data[index], (1, 2, 0)))
        return (self.transform(image) if self.transform is not None else image), int(self.labels[index])


# --- DataModules ----------------------------------------------------------------------------------

class VisionContrastiveDataModule(LightningDataModule):
    """Shared base of the offline image DataModules (see the module docstring for the protocol).

    Subclasses set the class attributes (``display_name``, ``folder``, ``required_files``,
    ``archive_url``, ``num_classes``, ``mean``, ``std``) and implement :meth:`_dataset`.

    Args:
        root: directory that contains the dataset's extracted folder (e.g. ``<root>/cifar-10-batches-py``).
        batch_size: contrastive batch size (HCL: 256); each batch holds ``2 * batch_size`` views.
        num_workers: DataLoader workers (default ``min(4, os.cpu_count())``).
        views: two-view transform for training (default: the dataset's SimCLR preset).
        eval_batch_size: batch size of the memory / test loaders (default ``2 * batch_size``).
        pin_memory: pin host memory (default: when CUDA is available).
        drop_last: drop the last incomplete training batch (HCL: True; keeps the negative count fixed).
        verify_checksums: let torchvision check the official MD5 sums (default); ``False`` for custom copies:
            nothing then vouches for the files, so CIFAR's pickles are read by a restricted unpickler
            that builds only arrays, lists and strings (:func:`load_cifar_batch`: a planted payload is
            refused, never run).
        memory_size: use a fixed random subset of this many training images as kNN bank / probe set
            (``None``: all of them), drawn with ``seed``.
        val_with_memory: ``val_dataloader`` returns ``[memory_loader, test_loader]``.
        seed: seed of the ``memory_size`` subset.
    """

    display_name: str = ""
    folder: str = ""
    required_files: Tuple[str, ...] = ()
    archive_url: str = ""
    num_classes: int = 0
    mean: Tuple[float, ...] = ()
    std: Tuple[float, ...] = ()

    def __init__(
        self,
        root: str,
        batch_size: int = 256,
        num_workers: Optional[int] = None,
        views: Optional[SimCLRViews] = None,
        eval_batch_size: Optional[int] = None,
        pin_memory: Optional[bool] = None,
        drop_last: bool = True,
        verify_checksums: bool = True,
        memory_size: Optional[int] = None,
        val_with_memory: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if eval_batch_size is not None and (not isinstance(eval_batch_size, int) or eval_batch_size < 1):
            raise ValueError(f"eval_batch_size must be a positive int or None, got {eval_batch_size!r}")
        if num_workers is not None and (not isinstance(num_workers, int) or num_workers < 0):
            raise ValueError(f"num_workers must be a non-negative int or None, got {num_workers!r}")
        if memory_size is not None and (not isinstance(memory_size, int) or memory_size < 1):
            raise ValueError(f"memory_size must be a positive int or None (all images), got {memory_size!r}")
        self.root = os.fspath(root)
        self.batch_size = batch_size
        self.num_workers = min(4, os.cpu_count() or 1) if num_workers is None else num_workers
        self.views = views if views is not None else self.default_views()
        self.eval_batch_size = eval_batch_size or 2 * batch_size
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.drop_last = drop_last
        self.verify_checksums = verify_checksums
        self.memory_size = memory_size
        self.val_with_memory = val_with_memory
        self.seed = seed
        self.eval_transform = eval_transform(self.mean, self.std)
        self.train_set: Optional[Dataset] = None
        self.memory_set: Optional[Dataset] = None
        self.test_set: Optional[Dataset] = None
        self.classes: Optional[List[str]] = None

    # -- to be provided by subclasses
    def default_views(self) -> SimCLRViews:
        raise TypeError(f"{type(self).__name__} must define default_views()")

    def _dataset(self, split: str, transform, verify: bool) -> Dataset:
        """``split``: ``"contrastive"`` (training images), ``"memory"`` (labelled train), ``"test"``."""
        raise TypeError(f"{type(self).__name__} must define _dataset()")

    # -- checks
    @property
    def data_dir(self) -> str:
        return os.path.join(self.root, self.folder)

    def check_files(self) -> None:
        """Raise :class:`FileNotFoundError` naming the expected layout when a required file is absent."""
        missing = [f for f in self.required_files if not os.path.isfile(os.path.join(self.data_dir, f))]
        if not missing:
            return
        archive = self.archive_url.rsplit("/", 1)[-1]
        raise FileNotFoundError(
            f"{self.display_name} not found: expected the extracted folder {self.data_dir}/ holding "
            f"{', '.join(self.required_files)}; missing: {', '.join(missing)}. graphneg never downloads "
            f"(download=False, no network at run time): on a machine with network access download "
            f"{self.archive_url} and extract it into {self.root} (tar -xzf {archive} -C {self.root}), "
            f"which creates {self.folder}/; or pass root=<the directory that contains {self.folder}/>."
        )

    def prepare_data(self) -> None:
        self.check_files()

    def setup(self, stage: Optional[str] = None) -> None:
        self.check_files()
        try:
            if stage in (None, "fit") and self.train_set is None:
                self.train_set = TwoViewDataset(self._dataset("contrastive", None, self.verify_checksums),
                                                self.views)
            if self.memory_set is None:
                memory = self._dataset("memory", self.eval_transform, self.verify_checksums)
                self.classes = getattr(memory, "classes", None)
                if self.memory_size is not None and self.memory_size < len(memory):
                    g = torch.Generator().manual_seed(self.seed)
                    idx = torch.randperm(len(memory), generator=g)[: self.memory_size].sort().values
                    memory = Subset(memory, idx.tolist())
                self.memory_set = memory
            if self.test_set is None:
                self.test_set = self._dataset("test", self.eval_transform, self.verify_checksums)
        except RuntimeError as err:
            if "corrupted" not in str(err):
                raise
            raise RuntimeError(
                f"{self.display_name} files in {self.data_dir} are present but their MD5 checksums do not "
                f"match the official archive ({err}); re-extract {self.archive_url}, or pass "
                "verify_checksums=False for a custom copy in the official format"
            ) from err

    # -- loaders
    def _loader(self, dataset: Optional[Dataset], train: bool, name: str) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"call setup() before {name}() (the Trainer does it for you)")
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            drop_last=self.drop_last if train else False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Contrastive batches ``(view1, view2, label)``."""
        return self._loader(self.train_set, True, "train_dataloader")

    def memory_dataloader(self) -> DataLoader:
        """Labelled training images ``(image, label)`` (evaluation transform): kNN bank / probe set."""
        return self._loader(self.memory_set, False, "memory_dataloader")

    def val_dataloader(self) -> Union[DataLoader, List[DataLoader]]:
        """Test split ``(image, label)``; ``[memory, test]`` loaders with ``val_with_memory=True``."""
        test = self._loader(self.test_set, False, "val_dataloader")
        return [self.memory_dataloader(), test] if self.val_with_memory else test

    def test_dataloader(self) -> DataLoader:
        """Test split ``(image, label)`` (evaluation transform)."""
        return self._loader(self.test_set, False, "test_dataloader")

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(root={self.root!r}, batch_size={self.batch_size}, "
                f"num_workers={self.num_workers}, views={self.views})")


class CIFAR10DataModule(VisionContrastiveDataModule):
    """CIFAR-10 (Krizhevsky 2009): 50k train / 10k test 32x32 RGB images, 10 classes.

    Expects ``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` (the python
    pickle version). Contrastive set: the 50k training images; memory/probe: the same with the
    evaluation transform; test: ``test_batch``.
    """

    display_name = "CIFAR-10"
    folder = "cifar-10-batches-py"
    required_files = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")
    archive_url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    num_classes = 10
    mean, std = CIFAR10_MEAN, CIFAR10_STD

    def __init__(self, root: str = "datasets/cifar10", **kwargs) -> None:
        super().__init__(root, **kwargs)

    def default_views(self) -> SimCLRViews:
        return cifar_views()

    def _dataset(self, split: str, transform, verify: bool) -> Dataset:
        if verify:
            return CIFAR10(self.root, train=split != "test", transform=transform, download=False)
        files = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
        return CIFARFiles(self.data_dir, files, "batches.meta", "label_names", transform)


class CIFAR100DataModule(VisionContrastiveDataModule):
    """CIFAR-100: 50k train / 10k test 32x32 RGB images, 100 fine classes.

    Expects ``<root>/cifar-100-python/{train, test, meta}``.
    """

    display_name = "CIFAR-100"
    folder = "cifar-100-python"
    required_files = ("train", "test", "meta")
    archive_url = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    num_classes = 100
    mean, std = CIFAR100_MEAN, CIFAR100_STD

    def __init__(self, root: str = "datasets/cifar100", **kwargs) -> None:
        super().__init__(root, **kwargs)

    def default_views(self) -> SimCLRViews:
        return cifar100_views()

    def _dataset(self, split: str, transform, verify: bool) -> Dataset:
        if verify:
            return CIFAR100(self.root, train=split != "test", transform=transform, download=False)
        return CIFARFiles(self.data_dir, ["test" if split == "test" else "train"], "meta", "fine_label_names",
                          transform)


class STL10DataModule(VisionContrastiveDataModule):
    """STL-10 (Coates et al. 2011): 5k labelled train, 100k unlabeled, 8k test 96x96 RGB images.

    Expects ``<root>/stl10_binary/{train_X.bin, train_y.bin, unlabeled_X.bin, test_X.bin,
    test_y.bin}``. Contrastive set: ``train+unlabeled`` (HCL; unlabeled images have label ``-1``);
    memory/probe: ``train``; test: ``test``.
    """

    display_name = "STL-10"
    folder = "stl10_binary"
    required_files = ("train_X.bin", "train_y.bin", "unlabeled_X.bin", "test_X.bin", "test_y.bin")
    archive_url = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
    num_classes = 10
    mean, std = STL10_MEAN, STL10_STD

    def __init__(self, root: str = "datasets/stl10", **kwargs) -> None:
        super().__init__(root, **kwargs)

    def default_views(self) -> SimCLRViews:
        return stl_views()

    def _dataset(self, split: str, transform, verify: bool) -> Dataset:
        name = {"contrastive": "train+unlabeled", "memory": "train", "test": "test"}[split]
        if verify:
            return STL10(self.root, split=name, transform=transform, download=False)
        return STL10Files(self.data_dir, name, transform)
