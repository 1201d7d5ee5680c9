"""MPerClassSampler and MNIST-5k DataModule."""
from collections import Counter

import pytest
import torch

from graphneg.data import MNIST5kDataModule, MPerClassSampler, load_mnist5k


def test_m_per_class_layout_and_coverage():
    labels = torch.arange(6).repeat_interleave(10)  # 6 classes x 10
    s = MPerClassSampler(labels, classes_per_batch=3, samples_per_class=4, seed=0)
    batches = list(s)
    assert len(batches) == len(s) == 60 // 12
    for b in batches:
        lab = labels[b]
        assert Counter(lab.tolist()) == Counter({c: 4 for c in set(lab.tolist())})
        assert len(set(lab.tolist())) == 3
        # chunk layout: m chunks of C samples with the same class order
        chunks = lab.view(4, 3)
        assert bool((chunks == chunks[0]).all())
        assert len(set(b)) == len(b)  # no duplicate within a batch (classes have >= m samples)
    # reproducible per epoch, different across epochs
    assert batches == list(MPerClassSampler(labels, 3, 4, seed=0))
    s.set_epoch(1)
    assert list(s) != batches


def test_sampler_distributed_split():
    labels = torch.arange(4).repeat_interleave(20)
    full = list(MPerClassSampler(labels, 2, 4, seed=3))
    r0 = list(MPerClassSampler(labels, 2, 4, seed=3, num_replicas=2, rank=0))
    r1 = list(MPerClassSampler(labels, 2, 4, seed=3, num_replicas=2, rank=1))
    assert r0 == full[0::2] and r1 == full[1::2]


def test_sampler_errors():
    labels = torch.arange(3).repeat_interleave(5)
    with pytest.raises(ValueError, match="only 3 classes"):
        MPerClassSampler(labels, 4, 2)
    with pytest.raises(ValueError, match=">= 2"):
        MPerClassSampler(labels, 1, 2)


def test_mnist5k_real_file_and_zero_shot_split():
    images, labels = load_mnist5k()
    assert images.shape == (5000, 1, 28, 28) and images.dtype == torch.uint8
    assert torch.equal(torch.bincount(labels), torch.full((10,), 500))
    dm = MNIST5kDataModule(classes_per_batch=5, samples_per_class=4, limit_per_class=40)
    dm.setup("fit")
    assert set(dm.train_set.labels.tolist()) == {0, 1, 2, 3, 4}  # digits 0-4 remapped
    assert set(dm.test_set.labels.tolist()) == {5, 6, 7, 8, 9}
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (20, 1, 28, 28) and len(set(y.tolist())) == 5
    xv, yv = next(iter(dm.val_dataloader()))
    assert xv.shape[1:] == (1, 28, 28)
    # the train split holds exactly the first 40 images of each digit 0..4, in file order
    keep = torch.zeros_like(labels, dtype=torch.bool)
    for c in range(5):
        keep[(labels == c).nonzero(as_tuple=True)[0][:40]] = True
    assert torch.equal(dm.train_eval_set.images, images[keep])
    assert torch.equal(dm.train_eval_set.labels, labels[keep])


def test_mnist5k_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="Expected layout"):
        load_mnist5k(tmp_path / "nope.csv.gz")
    with pytest.raises(ValueError, match="overlap"):
        MNIST5kDataModule(train_classes=(0, 1), test_classes=(1, 2))


def test_mnist5k_stratified_split():
    dm = MNIST5kDataModule(split="stratified", test_fraction=0.25, limit_per_class=20, mode="metric")
    dm.setup("fit")
    assert torch.equal(torch.bincount(dm.train_set.labels), torch.full((10,), 15))
    assert torch.equal(torch.bincount(dm.test_set.labels), torch.full((10,), 5))
    images, labels = load_mnist5k()
    # test images are the 16th..20th image of each class, in file order
    keep = torch.zeros_like(labels, dtype=torch.bool)
    for c in range(10):
        keep[(labels == c).nonzero(as_tuple=True)[0][15:20]] = True
    assert torch.equal(dm.test_set.images, images[keep])


def test_mnist5k_contrastive_views_share_the_eval_scale():
    torch.manual_seed(0)
    dm = MNIST5kDataModule(mode="contrastive", split="stratified", limit_per_class=10, batch_size=20)
    dm.setup("fit")
    v1, v2, _ = next(iter(dm.train_dataloader()))
    x, _ = next(iter(dm.val_dataloader()))
    lo, hi = (0 - 0.1307) / 0.3081, (1 - 0.1307) / 0.3081  # [0, 1] pixels after (x - mean) / std
    for t in (v1, v2, x):
        assert float(t.min()) >= lo - 1e-4 and float(t.max()) <= hi + 1e-4
