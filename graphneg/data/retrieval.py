"""The four image-retrieval benchmarks of GCA-HNG, read from their official distributed layouts.

=====================  ==========================================================  ====================
DataModule             files under ``root``                                        split (zero-shot)
=====================  ==========================================================  ====================
CUB200DataModule       ``images.txt``, ``image_class_labels.txt``, ``images/``      classes 1-100 train,
                       (``root`` = ``CUB_200_2011/`` or its parent)                 101-200 test
Cars196DataModule      ``cars_annos.mat`` (scipy), ``car_ims/``                     classes 1-98 train,
                                                                                    99-196 test
SOPDataModule          ``Ebay_train.txt``, ``Ebay_test.txt`` + the folders named    11,318 train classes,
                       there (``root`` = ``Stanford_Online_Products/`` or parent)   11,316 test classes
InShopDataModule       ``list_eval_partition.txt`` (or ``Eval/...``), ``img/``      3,997 train classes;
                                                                                    query vs gallery
=====================  ==========================================================  ====================

Splits follow the official GCA-HNG data preparation (``scripts/data_process/cub_convert.py``,
``car_convert.py``, ``sop_convert.py``; ``scripts/dataset.py::Inshop_Dataset``), itself the protocol of
Oh Song et al. (CVPR 2016). Labels are contiguous from 0 within each split, in ascending order of the
official class id; In-Shop's query and gallery share one label space (as ``Inshop_Dataset``).

Images are decoded lazily with PIL in ``__getitem__`` (nothing is preloaded), so ``num_workers > 0``
loads them in parallel. Transforms are the official ``scripts/dataset.py`` ones: training
``RandomResizedCrop(224, scale=(0.08, 1)) + RandomHorizontalFlip``, evaluation ``Resize(256) +
CenterCrop(224)``, both followed by ImageNet normalisation; ``image_size`` / ``resize`` change the 224 /
256 (tests use small images).

Batches for training come from :class:`graphneg.data.MPerClassBatchSampler` (``classes_per_batch`` x
``samples_per_class``, the official ``NUM_SAMPLED_CLASSES`` x ``NUM_PER_CLASS``). ``val_dataloader`` /
``test_dataloader`` return the test split; for In-Shop they return ``[query_loader, gallery_loader]``,
which :class:`graphneg.models.MetricLearningModule` evaluates query against gallery.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from graphneg.data.samplers import MPerClassBatchSampler

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = [
    "ImageListDataset", "RetrievalDataModule", "CUB200DataModule", "Cars196DataModule", "SOPDataModule",
    "InShopDataModule", "retrieval_train_transform", "retrieval_eval_transform", "LAYOUTS",
]

#: The expected layout of each dataset, quoted in every error message (and in datasets/README.md).
LAYOUTS: Dict[str, str] = {
    "cub200": (
        "CUB-200-2011 (CUB_200_2011.tgz): <root>/CUB_200_2011/ (or <root> itself) holding images.txt "
        "('<image_id> <relative path>' per line), image_class_labels.txt ('<image_id> <class_id 1-200>' "
        "per line) and images/<NNN.Class_Name>/<file>.jpg"
    ),
    "cars196": (
        "Cars196 (car_ims.tgz + cars_annos.mat): <root>/cars_annos.mat (MATLAB struct array "
        "'annotations' with fields relative_im_path, class 1-196) and <root>/car_ims/<NNNNNN>.jpg"
    ),
    "sop": (
        "Stanford Online Products (Stanford_Online_Products.zip): <root>/Stanford_Online_Products/ (or "
        "<root> itself) holding Ebay_train.txt and Ebay_test.txt (header 'image_id class_id "
        "super_class_id path', then one image per line) and the folders they name (bicycle_final/, ...)"
    ),
    "inshop": (
        "In-Shop Clothes Retrieval (DeepFashion, Img/img.zip + Eval/list_eval_partition.txt): "
        "<root>/list_eval_partition.txt or <root>/Eval/list_eval_partition.txt (first line the image "
        "count, second the header 'image_name item_id evaluation_status', then '<img/...jpg> <id_<8 digits>> "
        "<train|query|gallery>' per line) and <root>/img/ (or <root>/Img/img/)"
    ),
}


# ---------------------------------------------------------------------------- transforms / dataset

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


# ---------------------------------------------------------------------------- parsing helpers

def _missing(name: str, path: Path, what: str = "file") -> FileNotFoundError:
    return FileNotFoundError(f"{name}: {what} {path} not found. Expected layout: {LAYOUTS[name]}")


def _malformed(name: str, path: Path, line_no: int, line: str, why: str) -> ValueError:
    return ValueError(
        f"{name}: {path} line {line_no} is malformed ({why}): {line.strip()[:120]!r}. "
        f"Expected layout: {LAYOUTS[name]}"
    )


def _read_columns(name: str, path: Path, ncols: int, skip: int = 0) -> List[Tuple[int, List[str]]]:
    """Whitespace-separated rows with at least ``ncols`` fields, ``(line number, fields)``; blank lines
    are skipped."""
    if not path.is_file():
        raise _missing(name, path)
    rows = []
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, start=1):
            if no <= skip or not line.strip():
                continue
            parts = line.split()
            if len(parts) < ncols:
                raise _malformed(name, path, no, line, f"expected {ncols} fields, got {len(parts)}")
            rows.append((no, parts))
    if not rows:
        raise ValueError(f"{name}: {path} lists no images. Expected layout: {LAYOUTS[name]}")
    return rows


def _to_int(name: str, path: Path, no: int, value: str, line: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise _malformed(name, path, no, line, f"{value!r} is not an integer") from None


def _contiguous(class_ids: Sequence[int]) -> List[int]:
    """Official class ids -> 0..C-1 in ascending id order."""
    lut = {c: i for i, c in enumerate(sorted(set(class_ids)))}
    return [lut[c] for c in class_ids]


def _check_first_image(name: str, paths: Sequence[str]) -> None:
    if paths and not os.path.isfile(paths[0]):
        raise _missing(name, Path(paths[0]), "image")


Split = Tuple[List[str], List[int]]


# ---------------------------------------------------------------------------- base DataModule

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
            raise _missing(self.name, self.root, "folder")

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
                _check_first_image(self.name, paths)
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


# ---------------------------------------------------------------------------- the four readers

class CUB200DataModule(RetrievalDataModule):
    """CUB-200-2011 (Wah et al. 2011): 11,788 images of 200 bird species; classes 1-100 train
    (5,864 images), 101-200 test (5,924), as the official ``cub_convert.py``.

    ``root``: the ``CUB_200_2011`` folder (``images.txt``, ``image_class_labels.txt``, ``images/``) or its
    parent. Official batch: 27 classes x 3 images.
    """

    name = "cub200"

    def __init__(self, root: str, classes_per_batch: int = 27, samples_per_class: int = 3, **kwargs) -> None:
        super().__init__(root, classes_per_batch=classes_per_batch, samples_per_class=samples_per_class, **kwargs)

    def read_splits(self) -> Dict[str, Split]:
        base = self.root / "CUB_200_2011" if (self.root / "CUB_200_2011").is_dir() else self.root
        images_txt, labels_txt, images_dir = base / "images.txt", base / "image_class_labels.txt", base / "images"
        for f in (images_txt, labels_txt):
            if not f.is_file():
                raise _missing(self.name, f)
        if not images_dir.is_dir():
            raise _missing(self.name, images_dir, "folder")
        paths: Dict[int, str] = {}
        for no, parts in _read_columns(self.name, images_txt, 2):
            paths[_to_int(self.name, images_txt, no, parts[0], " ".join(parts))] = " ".join(parts[1:])
        classes: Dict[int, int] = {}
        for no, parts in _read_columns(self.name, labels_txt, 2):
            line = " ".join(parts)
            img, cls = _to_int(self.name, labels_txt, no, parts[0], line), _to_int(self.name, labels_txt, no, parts[1], line)
            if not 1 <= cls <= 200:
                raise _malformed(self.name, labels_txt, no, line, f"class id {cls} is outside 1-200")
            classes[img] = cls
        if set(paths) != set(classes):
            diff = sorted(set(paths) ^ set(classes))[:5]
            raise ValueError(
                f"{self.name}: {images_txt.name} and {labels_txt.name} list different image ids (e.g. {diff}). "
                f"Expected layout: {LAYOUTS[self.name]}"
            )
        out = {}
        for split, keep in (("train", lambda c: c <= 100), ("test", lambda c: c > 100)):
            ids = [i for i in sorted(paths) if keep(classes[i])]
            out[split] = ([str(images_dir / paths[i]) for i in ids], _contiguous([classes[i] for i in ids]))
        return out


class Cars196DataModule(RetrievalDataModule):
    """Cars196 (Krause et al. 2013): 16,185 images of 196 car models; classes 1-98 train (8,054 images),
    99-196 test (8,131), as the official ``car_convert.py`` (the ``test`` flag of the annotations is not
    used by the retrieval protocol).

    ``root``: the folder holding ``cars_annos.mat`` (read with ``scipy.io.loadmat``) and ``car_ims/``.
    Official batch: 27 classes x 3 images.
    """

    name = "cars196"

    def __init__(self, root: str, classes_per_batch: int = 27, samples_per_class: int = 3, **kwargs) -> None:
        super().__init__(root, classes_per_batch=classes_per_batch, samples_per_class=samples_per_class, **kwargs)

    def read_splits(self) -> Dict[str, Split]:
        import numpy as np
        from scipy.io import loadmat

        mat, ims = self.root / "cars_annos.mat", self.root / "car_ims"
        if not mat.is_file():
            raise _missing(self.name, mat)
        if not ims.is_dir():
            raise _missing(self.name, ims, "folder")
        try:
            data = loadmat(str(mat), squeeze_me=True, struct_as_record=True)
        except Exception as err:  # scipy raises several types for a corrupt file
            raise ValueError(f"{self.name}: {mat} is not a readable MATLAB file ({err}). "
                             f"Expected layout: {LAYOUTS[self.name]}") from err
        ann = data.get("annotations")
        names = getattr(getattr(ann, "dtype", None), "names", None) or ()
        if ann is None or "relative_im_path" not in names or "class" not in names:
            raise ValueError(
                f"{self.name}: {mat} has no struct array 'annotations' with fields relative_im_path and class "
                f"(found variables {sorted(k for k in data if not k.startswith('__'))}, fields {list(names)}). "
                f"Expected layout: {LAYOUTS[self.name]}"
            )
        rel = [str(p) for p in np.atleast_1d(ann["relative_im_path"])]
        try:
            cls = [int(c) for c in np.atleast_1d(ann["class"])]
        except (TypeError, ValueError) as err:
            raise ValueError(f"{self.name}: {mat}: annotations.class must hold integers ({err})") from err
        bad = [c for c in cls if not 1 <= c <= 196]
        if bad:
            raise ValueError(f"{self.name}: {mat}: class ids must be in 1-196, got {bad[:5]}")
        out = {}
        for split, keep in (("train", lambda c: c <= 98), ("test", lambda c: c > 98)):
            ids = [i for i in range(len(rel)) if keep(cls[i])]
            # relative_im_path is 'car_ims/000001.jpg', relative to the folder of cars_annos.mat
            out[split] = ([str(self.root / rel[i]) for i in ids], _contiguous([cls[i] for i in ids]))
        return out


class SOPDataModule(RetrievalDataModule):
    """Stanford Online Products (Oh Song et al. 2016): 120,053 images of 22,634 products; the official
    ``Ebay_train.txt`` (59,551 images, 11,318 classes) / ``Ebay_test.txt`` (60,502 images, 11,316
    classes) split.

    ``root``: the ``Stanford_Online_Products`` folder (the two lists + ``bicycle_final/`` ...) or its
    parent. Official batch: 40 classes x 2 images. Evaluation: Recall@{1, 10, 100, 1000}.
    """

    name = "sop"

    def __init__(self, root: str, classes_per_batch: int = 40, samples_per_class: int = 2, **kwargs) -> None:
        super().__init__(root, classes_per_batch=classes_per_batch, samples_per_class=samples_per_class, **kwargs)

    def read_splits(self) -> Dict[str, Split]:
        sub = self.root / "Stanford_Online_Products"
        base = sub if sub.is_dir() else self.root
        out = {}
        for split, fname in (("train", "Ebay_train.txt"), ("test", "Ebay_test.txt")):
            path = base / fname
            if not path.is_file():
                raise _missing(self.name, path)
            rows = _read_columns(self.name, path, 4, skip=1)
            paths, cls = [], []
            for no, parts in rows:
                line = " ".join(parts)
                _to_int(self.name, path, no, parts[0], line)
                cls.append(_to_int(self.name, path, no, parts[1], line))
                paths.append(str(base / " ".join(parts[3:])))
            out[split] = (paths, _contiguous(cls))
        return out


class InShopDataModule(RetrievalDataModule):
    """In-Shop Clothes Retrieval (DeepFashion, Liu et al. 2016): 52,712 images of 7,982 items; 25,882
    training images of 3,997 items; evaluation searches the 14,218 query images against the 12,612
    gallery images (3,985 items), Recall@{1, 10, 20, 30, 40, 50}.

    ``root``: the folder holding ``list_eval_partition.txt`` (or ``Eval/list_eval_partition.txt``) and
    ``img/`` (or ``Img/img/``). Query and gallery share one label space (official ``Inshop_Dataset``).
    ``val_dataloader`` returns ``[query_loader, gallery_loader]``. Official batch: 40 x 2.
    """

    name = "inshop"

    def __init__(self, root: str, classes_per_batch: int = 40, samples_per_class: int = 2, **kwargs) -> None:
        super().__init__(root, classes_per_batch=classes_per_batch, samples_per_class=samples_per_class, **kwargs)

    @property
    def eval_splits(self) -> Tuple[str, ...]:
        return ("query", "gallery")

    def read_splits(self) -> Dict[str, Split]:
        part = self.root / "list_eval_partition.txt"
        if not part.is_file() and (self.root / "Eval" / "list_eval_partition.txt").is_file():
            part = self.root / "Eval" / "list_eval_partition.txt"
        if not part.is_file():
            raise _missing(self.name, part)
        img_base = self.root
        if not (self.root / "img").is_dir():
            if (self.root / "Img" / "img").is_dir():
                img_base = self.root / "Img"
            else:
                raise _missing(self.name, self.root / "img", "folder")
        rows = _read_columns(self.name, part, 3, skip=2)
        by_split: Dict[str, Tuple[List[str], List[int]]] = {"train": ([], []), "query": ([], []), "gallery": ([], [])}
        for no, parts in rows:
            line = " ".join(parts)
            rel, item, status = parts[0], parts[1], parts[2]
            if status not in by_split:
                raise _malformed(self.name, part, no, line, f"evaluation_status {status!r} is not train/query/gallery")
            if not item.startswith("id_"):
                raise _malformed(self.name, part, no, line, f"item_id {item!r} does not look like id_<8 digits>")
            by_split[status][0].append(str(img_base / rel))
            by_split[status][1].append(_to_int(self.name, part, no, item[3:], line))
        for s, (paths, _) in by_split.items():
            if not paths:
                raise ValueError(f"{self.name}: {part} has no '{s}' images. Expected layout: {LAYOUTS[self.name]}")
        train = (by_split["train"][0], _contiguous(by_split["train"][1]))
        nq = len(by_split["query"][1])
        joint = _contiguous(by_split["query"][1] + by_split["gallery"][1])
        return {
            "train": train,
            "query": (by_split["query"][0], joint[:nq]),
            "gallery": (by_split["gallery"][0], joint[nq:]),
        }
