"""Samplers for metric learning: m samples per class.

* :class:`MPerClassBatchSampler` yields whole batches (``DataLoader(batch_sampler=...)``), ``C`` classes x
  ``m`` samples in the official GCA-HNG chunked layout: graphneg's DataModules use it.
* :class:`MPerClassSampler` has pytorch-metric-learning's name, signature and contract
  (``DataLoader(sampler=..., batch_size=...)``): it yields sample *indices*, ``m`` per class in a row.
"""
from __future__ import annotations

from typing import Iterator, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from graphneg.validation import check_labels


class MPerClassBatchSampler(Sampler[List[int]]):
    """A *batch* sampler: batches of ``classes_per_batch`` classes x ``samples_per_class`` samples (C x m).

    Pass it as ``DataLoader(dataset, batch_sampler=MPerClassBatchSampler(labels, C, m))``; each item it
    yields is the list of ``C * m`` indices of one batch. (Before, this class was named
    ``MPerClassSampler``, the name of pytorch-metric-learning's index sampler, which is now
    :class:`MPerClassSampler`.)

    The batch is laid out as in the official GCA-HNG ``BalancedBatchSampler`` + ``train.py`` reordering:
    ``m`` consecutive chunks of ``C`` samples, each chunk holding one sample of every chosen class in the
    same class order (``[c0, c1, ..., c0, c1, ...]``). graphneg's losses and generator work from labels and do
    not rely on this order; it is kept so that chunk-based code still sees the familiar layout.

    Within an epoch, each class's samples are drawn without replacement while they last (a class with
    fewer than ``m`` samples is drawn with replacement, as pytorch-metric-learning's ``MPerClassSampler``).
    ``len(sampler)`` = ``len(labels) // (C * m)`` batches per epoch. Seeded: epoch ``e`` uses
    ``seed + e`` (call :meth:`set_epoch`; Lightning does so for samplers that have it).

    For distributed training pass ``num_replicas`` / ``rank``: every process draws the same global batch
    order and keeps every ``num_replicas``-th batch.
    """

    def __init__(
        self,
        labels: Sequence[int],
        classes_per_batch: int,
        samples_per_class: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        labels_np = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).reshape(-1)
        check_labels(torch.as_tensor(labels_np), labels_np.size, "labels")  # integer class ids, not bool
        if classes_per_batch < 2:
            raise ValueError(
                f"classes_per_batch must be >= 2 (negatives come from other classes), got {classes_per_batch}"
            )
        if samples_per_class < 1:
            raise ValueError(f"samples_per_class must be >= 1, got {samples_per_class}")
        self.classes = np.unique(labels_np)
        if len(self.classes) < classes_per_batch:
            raise ValueError(
                f"classes_per_batch={classes_per_batch} but the dataset has only {len(self.classes)} "
                "classes; lower classes_per_batch"
            )
        self.index_by_class = [np.flatnonzero(labels_np == c) for c in self.classes]
        self.C, self.m = int(classes_per_batch), int(samples_per_class)
        self.seed, self.epoch = int(seed), 0
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.num_batches = len(labels_np) // (self.C * self.m)
        if self.num_batches < 1:
            raise ValueError(
                f"the dataset ({len(labels_np)} samples) is smaller than one batch of "
                f"{self.C} x {self.m}; lower classes_per_batch or samples_per_class"
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(range(self.rank, self.num_batches, self.num_replicas))

    def __iter__(self) -> Iterator[List[int]]:
        rng = np.random.default_rng(self.seed + self.epoch)
        pools = [rng.permutation(ix) for ix in self.index_by_class]
        cursor = np.zeros(len(pools), dtype=np.int64)
        for b in range(self.num_batches):
            chosen = rng.choice(len(pools), size=self.C, replace=False)
            cols = []
            for c in chosen:
                pool = pools[c]
                if len(pool) < self.m:
                    cols.append(rng.choice(pool, size=self.m, replace=True))
                    continue
                if cursor[c] + self.m > len(pool):
                    pools[c] = pool = rng.permutation(self.index_by_class[c])
                    cursor[c] = 0
                cols.append(pool[cursor[c]:cursor[c] + self.m])
                cursor[c] += self.m
            if b % self.num_replicas == self.rank:
                # [C, m] -> chunk-major layout [m * C]
                yield np.stack(cols, axis=0).T.reshape(-1).tolist()


class MPerClassSampler(Sampler[int]):
    """pytorch-metric-learning's ``MPerClassSampler``: sample indices, ``m`` consecutive ones per class.

    Same signature and contract as ``pytorch_metric_learning.samplers.MPerClassSampler(labels, m,
    batch_size=None, length_before_new_iter=100000)`` (source: PML ``samplers/m_per_class_sampler.py``):
    use it as ``DataLoader(dataset, sampler=MPerClassSampler(labels, m, batch_size), batch_size=batch_size)``.
    ``len(sampler)`` is ``length_before_new_iter`` rounded down to a multiple of ``batch_size`` (or of
    ``m * num_classes`` without ``batch_size``). Each pass shuffles the classes and, with ``batch_size``,
    takes the first ``batch_size // m`` of them, each with ``m`` of its indices (without replacement
    unless the class has fewer than ``m``); so every consecutive ``batch_size`` window holds
    ``batch_size // m`` distinct classes with ``m`` samples each. As PML, without ``batch_size`` a pass
    covers every class once.

    graphneg addition (keyword-only): ``seed``; pass ``e`` uses ``seed + epoch`` after :meth:`set_epoch`,
    where PML draws from a global NumPy generator.
    """

    def __init__(self, labels: Sequence[int], m: int, batch_size: Optional[int] = None,
                 length_before_new_iter: int = 100000, *, seed: int = 0) -> None:
        labels_np = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).reshape(-1)
        check_labels(torch.as_tensor(labels_np), labels_np.size, "labels")
        self.m_per_class = int(m)
        if self.m_per_class < 1:
            raise ValueError(f"MPerClassSampler: m must be >= 1, got {m}")
        self.batch_size = None if batch_size is None else int(batch_size)
        self.classes = np.unique(labels_np)
        self.index_by_class = [np.flatnonzero(labels_np == c) for c in self.classes]
        self.length_of_single_pass = self.m_per_class * len(self.classes)
        self.list_size = int(length_before_new_iter)
        if self.batch_size is None:
            if self.length_of_single_pass < self.list_size:
                self.list_size -= self.list_size % self.length_of_single_pass
        else:
            if self.batch_size % self.m_per_class:
                raise ValueError(
                    f"MPerClassSampler: m={self.m_per_class} must divide batch_size={self.batch_size} (PML "
                    "contract: MPerClassSampler(labels, m, batch_size)); for graphneg's C x m batch sampler use "
                    "MPerClassBatchSampler(labels, classes_per_batch, samples_per_class)")
            if self.length_of_single_pass < self.batch_size:
                raise ValueError(
                    f"MPerClassSampler: m * number of classes = {self.length_of_single_pass} must be >= "
                    f"batch_size={self.batch_size}")
            if self.list_size < self.batch_size:
                raise ValueError(f"MPerClassSampler: length_before_new_iter={self.list_size} must be >= "
                                 f"batch_size={self.batch_size}")
            self.list_size -= self.list_size % self.batch_size
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.list_size

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng(self.seed + self.epoch)
        divisor = self.length_of_single_pass if self.batch_size is None else self.batch_size
        num_iters = self.list_size // divisor if divisor < self.list_size else 1
        per_pass = len(self.classes) if self.batch_size is None else self.batch_size // self.m_per_class
        out = []
        for _ in range(num_iters):
            for c in rng.permutation(len(self.classes))[:per_pass]:
                pool = self.index_by_class[c]
                out.append(rng.choice(pool, size=self.m_per_class, replace=len(pool) < self.m_per_class))
        idx = np.concatenate(out)[: self.list_size] if out else np.zeros(0, dtype=np.int64)
        # PML pre-allocates list_size zeros and fills them; a shorter fill leaves zeros at the end
        idx = np.concatenate([idx, np.zeros(self.list_size - idx.size, dtype=np.int64)])
        return iter(idx.tolist())


__all__ = ["MPerClassBatchSampler", "MPerClassSampler"]
