"""MPerClassBatchSampler and MNIST-5k DataModule (the PML-contract MPerClassSampler: tests/test_pml_sampler.py)."""
from collections import Counter

import numpy as np
import pytest
import torch

from graphneg.data import MNIST5kDataModule, MPerClassBatchSampler, load_mnist5k


def test_m_per_class_layout_and_coverage():
    labels = torch.arange(6).repeat_interleave(10)  # 6 classes x 10
    s = MPerClassBatchSampler(labels, classes_per_batch=3, samples_per_class=4, seed=0)
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
    assert batches == list(MPerClassBatchSampler(labels, 3, 4, seed=0))
    s.set_epoch(1)
    assert list(s) != batches


def test_sampler_distributed_split():
    labels = torch.arange(4).repeat_interleave(20)
    full = list(MPerClassBatchSampler(labels, 2, 4, seed=3))
    r0 = list(MPerClassBatchSampler(labels, 2, 4, seed=3, num_replicas=2, rank=0))
    r1 = list(MPerClassBatchSampler(labels, 2, 4, seed=3, num_replicas=2, rank=1))
    assert r0 == full[0::2] and r1 == full[1::2]


def test_sampler_errors():
    labels = torch.arange(3).repeat_interleave(5)
    with pytest.raises(ValueError, match="only 3 classes"):
        MPerClassBatchSampler(labels, 4, 2)
    with pytest.raises(ValueError, match=">= 2"):
        MPerClassBatchSampler(labels, 1, 2)


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


def _write_csv(path, rows):
    text = "\n".join(",".join(str(v) for v in row) for row in rows) + "\n"
    if str(path).endswith(".gz"):
        import gzip

        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def _rows():
    """Two valid images: pixel i of row r is (7 * i + r) % 256, labels 3 and 8."""
    return [[(7 * i + r) % 256 for i in range(784)] + [label] for r, label in enumerate((3, 8))]


def test_mnist5k_csv_values_are_loaded_exactly(tmp_path):
    rows = _rows()
    images, labels = load_mnist5k(_write_csv(tmp_path / "ok.csv.gz", rows))
    assert images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert images.view(2, -1).tolist() == [row[:784] for row in rows]
    assert labels.tolist() == [3, 8]


@pytest.mark.parametrize("row, col, value, expected", [
    (1, 10, 300, r"row 2, column 11: pixel value 300 is not an integer in 0-255"),  # would wrap to 44
    (0, 0, -1, r"row 1, column 1: pixel value -1 is not an integer in 0-255"),  # would wrap to 255
    (0, 5, 12.5, r"row 1, column 6: pixel value 12.5 is not an integer"),
    (1, 784, 2.5, r"row 2, column 785: label 2.5 is not a non-negative integer class id"),
    (0, 784, -3, r"row 1, column 785: label -3 is not a non-negative integer"),
    (0, 784, "True", r"not a CSV of numbers"),
    (0, 784, "nan", r"row 1, column 785: label nan is not"),
])
def test_mnist5k_csv_bad_values_are_rejected(tmp_path, row, col, value, expected):
    rows = _rows()
    rows[row][col] = value
    path = _write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(ValueError, match=expected) as err:
        load_mnist5k(path)
    assert str(path) in str(err.value)


def test_mnist5k_csv_wrong_width(tmp_path):
    with pytest.raises(ValueError, match=r"784 pixels \+ 1 label, got shape \(2, 784\)"):
        load_mnist5k(_write_csv(tmp_path / "short.csv", [row[:784] for row in _rows()]))


def test_sampler_rejects_bool_and_float_labels():
    with pytest.raises(TypeError, match="bool tensor; a boolean mask is not a class id"):
        MPerClassBatchSampler(torch.arange(20) % 2 == 0, 2, 2)
    with pytest.raises(TypeError, match="dtype torch.float32"):
        MPerClassBatchSampler(torch.arange(20).float() % 2, 2, 2)
    assert len(MPerClassBatchSampler(np.arange(20) % 2, 2, 2)) == 5
