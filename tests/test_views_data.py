"""graphneg.data.views.CachedViewsMNIST5kDataModule: the kept digits, the views drawn from the seeded
generator (written out here), the restored global RNG, and the per-epoch batch order."""
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from graphneg.data import MNIST5kDataModule, digit_views
from graphneg.data.views import CachedViewsMNIST5kDataModule


class _Trainer:
    current_epoch = 0


def test_cached_views_match_a_direct_draw_and_keep_the_rng():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    dm = CachedViewsMNIST5kDataModule(train_per_class=3, epochs=2, seed=5, batch_size=4)
    dm.setup()
    assert torch.equal(torch.get_rng_state(), before)  # building the views does not move the global RNG
    # reference: the first 3 training digits of each class of the stratified split, two views per digit and
    # epoch drawn in order from a generator seeded 10_000 + seed
    base = MNIST5kDataModule(mode="contrastive", split="stratified")
    base.setup()
    labels = base.train_set.labels
    keep = sorted(i for c in range(10) for i in (labels == c).nonzero(as_tuple=True)[0][:3].tolist())
    assert dm.labels.tolist() == labels[keep].tolist() and dm.labels.bincount().tolist() == [3] * 10
    views = digit_views(crop_scale=(0.3, 1.0), strength=0.5)
    torch.manual_seed(10_005)
    for e in range(2):
        for j, i in enumerate(keep):
            v1, v2 = views(base.train_set.images[i].float() / 255.0)
            assert torch.equal(dm.cache[e][0][j], v1) and torch.equal(dm.cache[e][1][j], v2)
    # epoch 1's loader: epoch 1's views in the order of a generator seeded seed * 1000 + 1
    dm.trainer = _Trainer()
    dm.trainer.current_epoch = 1
    got = next(iter(dm.train_dataloader()))
    ref = next(iter(DataLoader(TensorDataset(*dm.cache[1], dm.labels), batch_size=4, shuffle=True, drop_last=True,
                               generator=torch.Generator().manual_seed(5001))))
    assert all(torch.equal(a, b) for a, b in zip(got, ref))
    assert len(dm.train_dataloader()) == 30 // 4
    # evaluation loaders: all 4,000 training digits and the 1,000 test digits
    assert sum(len(y) for _, y in dm.train_eval_dataloader()) == 4000
    assert sum(len(y) for _, y in dm.test_dataloader()) == 1000
    other = CachedViewsMNIST5kDataModule(train_per_class=3, epochs=2, seed=6)
    other.setup()
    assert not torch.equal(other.cache[0][0], dm.cache[0][0])


def test_cached_views_bad_arguments():
    with pytest.raises(ValueError, match="train_per_class must be in 1..400"):
        CachedViewsMNIST5kDataModule(train_per_class=401)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        CachedViewsMNIST5kDataModule(epochs=0)
