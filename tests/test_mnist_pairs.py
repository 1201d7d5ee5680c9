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
    d = MNIST5kPairsDataModule(class_split="halves", images_per_class=8, test_images_per_class=6,
                               classes_per_batch=10, samples_per_class=2, augment=False)
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
    v = MNIST5kPairsDataModule(split="val", class_split="halves", images_per_class=8, test_images_per_class=6,
                               augment=False)
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
    with pytest.raises(ValueError, match="class_split must be one of"):
        MNIST5kPairsDataModule(class_split="random")
    with pytest.raises(ValueError, match="never chosen on test classes"):
        MNIST5kPairsDataModule(class_split="halves", val_classes=range(50, 60))
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
        assert gen.num_classes == cli.datamodule.num_train_classes == 50
        assert gen.dim == cli.model.encoder.embedding_dim
        assert (gen.gnn.num_layers, gen.gnn.heads) == (2, 4)  # official G_CUB200.yml GNN size
    # the paper's regime: official head, official N-pair real-pair term, StepLR schedule, warm-up, parity split
    from graphneg.models.encoders import EmbeddingHead

    enc = cli.model.encoder
    assert isinstance(enc.fc, EmbeddingHead) and enc.fc.norm == "batchnorm" and enc.pool == (1, 2)
    if name in ("npair", "gca_hng"):
        assert type(cli.model.loss).__name__ == "NPairLoss" and cli.model.loss.anchors == "official"
    hp = cli.model.hparams
    assert (hp.scheduler, hp.warmup_epochs, hp.lr_gamma) == ("step", 1, 0.5)
    assert hp.lr_step_size * 5 == cli.trainer.max_epochs  # five halvings over the run, as 150 / 30 officially
    assert cli.datamodule.class_split == "parity" and (cli.datamodule.classes_per_batch,
                                                       cli.datamodule.samples_per_class) == (27, 3)


def test_parity_split_every_digit_on_both_sides():
    """class_split="parity": train = even digit sum, test = odd; each digit 5 times left and 5 times right in
    both; validation = the 10 training classes a (a+2 mod 10), each digit once left and once right, and the
    40 others still show every digit on both sides."""
    dm = MNIST5kPairsDataModule()
    train, test = set(dm.train_classes), set(dm.test_classes)
    assert train == {10 * a + b for a in range(10) for b in range(10) if (a + b) % 2 == 0}
    assert test == set(range(100)) - train and len(train) == len(test) == 50
    for classes, times in ((train, 5), (test, 5)):
        for d in range(10):
            assert sum(c // 10 == d for c in classes) == times and sum(c % 10 == d for c in classes) == times
    val = set(dm.val_classes)
    assert val == {2, 13, 24, 35, 46, 57, 68, 79, 80, 91} and val <= train
    assert set(dm.val_train_classes) == train - val
    for d in range(10):
        assert sum(c // 10 == d for c in val) == 1 and sum(c % 10 == d for c in val) == 1
        assert any(c // 10 == d for c in dm.val_train_classes) and any(c % 10 == d for c in dm.val_train_classes)
    dm = MNIST5kPairsDataModule(split="val", images_per_class=2, augment=False)
    dm.setup("fit")
    assert set(dm.test_set.labels.tolist()) == val and dm.num_train_classes == 40


def test_flagship_mnist_config_is_the_papers_pairing(tmp_path):
    import os

    from graphneg.cli import cli_main

    path = os.path.join(os.path.dirname(__file__), "..", "experiments", "mnist_gca_hng.yaml")
    cli = cli_main(["--config", path, f"--trainer.default_root_dir={tmp_path}"], run=False)
    assert type(cli.model.loss).__name__ == "NPairLoss" and cli.model.loss.anchors == "official"
    assert cli.model.generator is not None and cli.model.encoder.fc.norm == "batchnorm"
