"""graphneg.data.MPerClassSampler keeps pytorch-metric-learning's contract: used PML's way
(``DataLoader(sampler=..., batch_size=...)``) it yields indices, ``m`` per class in every batch."""
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from graphneg.data import MPerClassBatchSampler, MPerClassSampler

from pytorch_metric_learning import samplers as pml_samplers  # the dev extra installs it


def _labels():
    g = torch.Generator().manual_seed(0)
    counts = torch.randint(3, 15, (11,), generator=g)  # 11 classes, 3..14 samples (some fewer than m=4)
    return torch.repeat_interleave(torch.arange(11), counts)[torch.randperm(int(counts.sum()), generator=g)]


def test_used_the_pml_way_every_batch_window_has_m_per_class():
    labels = _labels()
    m, batch_size = 4, 12
    sampler = MPerClassSampler(labels, m, batch_size=batch_size, length_before_new_iter=600)
    loader = DataLoader(torch.arange(len(labels)), sampler=sampler, batch_size=batch_size)
    batches = list(loader)
    assert len(batches) == 600 // batch_size and all(b.shape == (batch_size,) for b in batches)
    for b in batches:
        counts = Counter(labels[b].tolist())
        assert sorted(counts.values()) == [m] * (batch_size // m)
        # each class's m indices are consecutive in the index stream (PML's layout)
        lab = labels[b].view(batch_size // m, m)
        assert bool((lab == lab[:, :1]).all())
    # the indices are real sample indices of the dataset, drawn from every class over an epoch
    flat = torch.cat(batches)
    assert int(flat.min()) >= 0 and int(flat.max()) < len(labels)
    assert set(labels[flat].tolist()) == set(range(11))


def test_without_batch_size_each_pass_covers_every_class_once():
    labels = _labels()
    m = 2
    s = MPerClassSampler(labels, m, length_before_new_iter=100)
    idx = torch.tensor(list(s))
    one_pass = m * 11
    assert len(s) == len(idx) == 100 - 100 % one_pass
    for start in range(0, len(idx), one_pass):
        lab = labels[idx[start:start + one_pass]].view(11, m)
        assert bool((lab == lab[:, :1]).all()) and sorted(lab[:, 0].tolist()) == list(range(11))


@pytest.mark.parametrize("m,batch_size,length", [(4, 12, 600), (4, 12, 1000), (2, None, 100), (2, None, 10),
                                                 (3, 9, 100000), (4, 44, 50)])
def test_len_and_signature_equal_pml(m, batch_size, length):
    labels = _labels()
    ours = MPerClassSampler(labels, m, batch_size, length)
    theirs = pml_samplers.MPerClassSampler(labels, m, batch_size, length)
    assert len(ours) == len(theirs)


def test_draws_without_replacement_when_the_class_is_large_enough():
    labels = torch.arange(5).repeat_interleave(6)
    s = MPerClassSampler(labels, 3, batch_size=6, length_before_new_iter=300, seed=1)
    idx = list(s)
    for start in range(0, len(idx), 3):
        assert len(set(idx[start:start + 3])) == 3
    a, b = list(MPerClassSampler(labels, 3, 6, 300, seed=1)), list(MPerClassSampler(labels, 3, 6, 300, seed=2))
    assert idx == a and idx != b  # seeded
    s.set_epoch(1)
    assert list(s) != idx


def test_former_batch_sampler_call_gives_a_clear_error():
    """Issue 22: graphneg.data.MPerClassSampler(labels, 10, 4) used to be a C x m batch sampler; with PML's
    contract (m=10, batch_size=4) it is refused with the new name of the batch sampler."""
    labels = np.arange(20).repeat(5)
    with pytest.raises(ValueError, match=r"m=10 must divide batch_size=4 .*MPerClassBatchSampler"):
        MPerClassSampler(labels, 10, 4)
    batch = next(iter(MPerClassBatchSampler(labels, 10, 4)))
    assert len(batch) == 40 and sorted(Counter(labels[batch].tolist()).values()) == [4] * 10
    with pytest.raises(ValueError, match="m must be >= 1"):
        MPerClassSampler(labels, 0)
    with pytest.raises(ValueError, match=r"must be >= batch_size=200"):
        MPerClassSampler(labels[:50], 5, 200)
