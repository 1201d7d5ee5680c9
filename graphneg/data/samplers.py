"""Batch samplers for metric learning."""
from __future__ import annotations

from typing import Iterator, List, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from graphneg.validation import check_labels


class MPerClassSampler(Sampler[List[int]]):
    """Batches of ``classes_per_batch`` classes x ``samples_per_class`` samples (C x m).

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


__all__ = ["MPerClassSampler"]
