"""MetricLearningModule with the GCA-HNG generator: the three-step update touches the parameter groups
the official update touches, running means live in checkpoints, and resuming is bit-identical."""
import copy
import os

import lightning as L
import pytest
import torch

from graphneg.checkpoint import AtomicCheckpointIO, RNGStateCallback
from graphneg.data import MNIST5kDataModule
from graphneg.losses import MultiSimilarityLoss
from graphneg.models import MetricLearningModule, SmallCNN
from graphneg.nn import GCAHNG

DIM = 16


def make_module(seed=0, **kw):
    torch.manual_seed(seed)
    gen = GCAHNG(DIM, num_classes=5, num_layers=1, heads=2, rw="chain")
    return MetricLearningModule(SmallCNN(1, DIM, width=4), MultiSimilarityLoss(), generator=gen, num_classes=5,
                                eval_nmi=False, **kw)


def make_data():
    return MNIST5kDataModule(classes_per_batch=5, samples_per_class=3, limit_per_class=12, eval_batch_size=64,
                             augment=True)


def trainer(tmp_path, **kw):
    from lightning.pytorch.callbacks import ModelCheckpoint

    return L.Trainer(
        default_root_dir=tmp_path, accelerator="cpu", devices=1, limit_train_batches=2, limit_val_batches=1,
        enable_progress_bar=False, enable_model_summary=False, logger=False, deterministic=True,
        plugins=[AtomicCheckpointIO()],
        callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True), RNGStateCallback()], **kw,
    )


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_three_step_update_touches_each_group(tmp_path):
    L.seed_everything(0)
    mod = make_module()
    before = snapshot(mod)
    trainer(tmp_path, max_steps=1).fit(mod, datamodule=make_data())
    after = mod.state_dict()
    changed = {k for k in before if before[k].dtype.is_floating_point and not torch.equal(before[k], after[k])}
    groups = {"encoder.", "objective.classifier.", "objective.generator."}
    for g in groups:
        assert any(k.startswith(g) for k in changed), g
    # the running sums of J_m and J_gen accumulated one step each
    obj = mod.objective
    assert float(obj.j_mean_count) == 1.0 and float(obj.j_gen_mean_count) == 1.0
    assert float(obj.j_mean) == 1e6  # the first epoch uses the official initial value


def test_generator_step_leaves_encoder_to_metric_step(tmp_path):
    """Step 3 (GNN-only) must not touch the encoder: freeze the metric optimiser's step and the
    classifier's, run one training step, and check the encoder is unchanged while the GNN moved."""
    L.seed_everything(0)
    mod = make_module()
    calls = []

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            opt_c, opt_s, opt_g = trainer.optimizers
            opt_c.step = lambda *a, **k: calls.append("c")
            opt_s.step = lambda *a, **k: calls.append("s")

    before = snapshot(mod)
    t = trainer(tmp_path, max_steps=1)
    t.callbacks.append(Spy())
    t.fit(mod, datamodule=make_data())
    after = mod.state_dict()
    assert calls == ["c", "s"]
    for k in before:
        if k.startswith("encoder.") and "running" not in k and "num_batches" not in k:
            assert torch.equal(before[k], after[k]), k
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("objective.generator."))


def test_resume_is_bit_identical(tmp_path):
    # uninterrupted: 2 epochs
    L.seed_everything(0)
    full = make_module()
    trainer(tmp_path / "a", max_epochs=2).fit(full, datamodule=make_data())
    # the same run interrupted after 1 epoch, then resumed from last.ckpt in a fresh process state

    class Interrupt(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            trainer.should_stop = True

    L.seed_everything(0)
    first = make_module()
    t = trainer(tmp_path / "b", max_epochs=2)
    t.callbacks.insert(0, Interrupt())
    t.fit(first, datamodule=make_data())
    assert t.current_epoch == 1
    ckpt = tmp_path / "b" / "ckpt" / "last.ckpt"
    saved = torch.load(ckpt, weights_only=False)
    assert {"objective._extra_state", "objective.j_mean_sum", "objective.completed_epochs"} <= set(saved["state_dict"])
    L.seed_everything(123)  # a different global state: the checkpoint must restore what matters
    resumed = make_module(seed=5)
    trainer(tmp_path / "b", max_epochs=2).fit(resumed, datamodule=make_data(), ckpt_path=str(ckpt))
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, (differ, [(float(a[k].float().sum()), float(b[k].float().sum())) for k in differ[:4]])
    # J_mean rolled to the first epoch's mean of J_m (not the initial 1e6)
    assert float(resumed.objective.j_mean) < 1e3 and torch.equal(full.objective.j_mean, resumed.objective.j_mean)


def test_generator_needs_num_classes():
    gen = GCAHNG(DIM, num_classes=5, num_layers=1, heads=2)
    mod = MetricLearningModule(SmallCNN(1, DIM, width=4), MultiSimilarityLoss(), generator=gen)
    assert mod.classifier.out_features == 5
    with pytest.raises(ValueError, match="warmup_epochs"):
        MetricLearningModule(torch.nn.Linear(3, 3), MultiSimilarityLoss(), warmup_epochs=1)
