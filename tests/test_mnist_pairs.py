"""MNIST5kPairsDataModule: 100 two-digit classes, zero-shot split, no source digit on both sides, seeding."""
from collections import Counter

import pytest
import torch

from graphneg.data import MNIST5kPairsDataModule, load_mnist5k
from graphneg.data.mnist_pairs import compose_pairs, split_source_halves


@pytest.fixture(scope="module")
def mnist():
    return load_mnist5k()


@pytest.fixture(scope="module")
def dm():
    d = MNIST5kPairsDataModule(images_per_class=8, test_images_per_class=6, classes_per_batch=10,
                               samples_per_class=2, augment=False)
    d.setup("fit")
    return d


def test_class_counts_and_labels(dm):
    # 50 training classes remapped to 0..49, 8 images each; 50 test classes 50..99 keep their ids, 6 each
    assert Counter(dm.train_set.labels.tolist()) == {c: 8 for c in range(50)}
    assert Counter(dm.test_set.labels.tolist()) == {c: 6 for c in range(50, 100)}
    assert dm.train_set.images.shape == (400, 1, 28, 56) and dm.train_set.images.dtype == torch.uint8
    assert dm.num_train_classes == 50


def test_images_are_the_two_source_digits_side_by_side(dm, mnist):
    images, labels = mnist
    for ds, src, offset in ((dm.train_set, dm.train_sources, 0), (dm.test_set, dm.eval_sources, 0)):
        # label = 10 * left digit + right digit (train labels were remapped from 0..49 = identity here)
        assert torch.equal(ds.labels, 10 * labels[src[:, 0]] + labels[src[:, 1]] + offset)
        assert torch.equal(ds.images[:, :, :, :28], images[src[:, 0]])
        assert torch.equal(ds.images[:, :, :, 28:], images[src[:, 1]])


def test_source_halves_stratified_and_disjoint(mnist):
    _, labels = mnist
    tr, te = split_source_halves(labels, data_seed=3)
    assert set(tr.tolist()).isdisjoint(te.tolist())
    assert len(tr) + len(te) == 5000
    assert torch.equal(torch.bincount(labels[tr], minlength=10), torch.full((10,), 250))
    assert torch.equal(torch.bincount(labels[te], minlength=10), torch.full((10,), 250))
    tr2, _ = split_source_halves(labels, data_seed=3)
    tr3, _ = split_source_halves(labels, data_seed=4)
    assert torch.equal(tr, tr2) and not torch.equal(tr, tr3)


def test_no_source_image_on_both_sides(dm):
    train_half, test_half = dm.source_halves
    train_src = set(dm.train_sources.flatten().tolist())
    test_src = set(dm.eval_sources.flatten().tolist())
    assert train_src.isdisjoint(test_src)
    assert train_src <= set(train_half.tolist()) and test_src <= set(test_half.tolist())


def test_validation_split_uses_training_classes_and_train_half_only(dm):
    v = MNIST5kPairsDataModule(split="val", images_per_class=8, test_images_per_class=6, augment=False)
    v.setup("fit")
    assert Counter(v.train_set.labels.tolist()) == {c: 8 for c in range(40)}
    assert Counter(v.test_set.labels.tolist()) == {c: 6 for c in range(40, 50)}
    train_half = set(v.source_halves[0].tolist())
    assert set(v.train_sources.flatten().tolist()) <= train_half
    assert set(v.eval_sources.flatten().tolist()) <= train_half
    # composition is seeded per class: classes 0..39 are the same images in both splits
    n = 40 * 8
    assert torch.equal(v.train_set.images, dm.train_set.images[:n])
    assert torch.equal(v.train_sources, dm.train_sources[:n])


def test_seeding(mnist):
    images, labels = mnist
    tr, _ = split_source_halves(labels, 0)
    a = compose_pairs(images, labels, tr, [7, 42], 5, data_seed=0)
    b = compose_pairs(images, labels, tr, [7, 42], 5, data_seed=0)
    c = compose_pairs(images, labels, tr, [7, 42], 5, data_seed=1)
    assert torch.equal(a[2], b[2]) and not torch.equal(a[2], c[2])
    # a class's images do not depend on the other classes built with it
    d = compose_pairs(images, labels, tr, [42], 5, data_seed=0)
    assert torch.equal(d[2], a[2][5:])


def test_batches_follow_the_c_times_m_layout(dm):
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (20, 1, 28, 56)
    assert Counter(y.tolist()) == Counter({c: 2 for c in set(y.tolist())}) and len(set(y.tolist())) == 10
    xv, yv = next(iter(dm.val_dataloader()))
    assert xv.shape[1:] == (1, 28, 56) and int(yv.min()) >= 50


def test_errors():
    with pytest.raises(ValueError, match="split must be one of"):
        MNIST5kPairsDataModule(split="train")
    with pytest.raises(ValueError, match="overlap"):
        MNIST5kPairsDataModule(train_classes=range(0, 60))
    with pytest.raises(ValueError, match="never chosen on test classes"):
        MNIST5kPairsDataModule(val_classes=range(50, 60))
    with pytest.raises(ValueError, match="0..99"):
        MNIST5kPairsDataModule(test_classes=range(50, 101))
    with pytest.raises(ValueError, match="images_per_class"):
        MNIST5kPairsDataModule(images_per_class=0)


@pytest.mark.parametrize("name", ["npair", "gca_hng", "ms", "ms_gca_hng"])
def test_configs_build_and_agree_with_the_data(name, tmp_path):
    import os

    from graphneg.cli import cli_main

    path = os.path.join(os.path.dirname(__file__), "..", "experiments", f"mnist_pairs_{name}.yaml")
    cli = cli_main(["--config", path, f"--trainer.default_root_dir={tmp_path}"], run=False)
    assert isinstance(cli.datamodule, MNIST5kPairsDataModule)
    gen = cli.model.generator
    assert (gen is not None) == name.endswith("gca_hng")
    if gen is not None:  # the generator's classifier heads cover exactly the training classes
        assert gen.num_classes == cli.model.hparams.num_classes == cli.datamodule.num_train_classes == 50
        assert gen.dim == cli.model.encoder.embedding_dim
