"""Exact resume of the contrastive modules: 2 epochs straight vs 1 epoch + resume from last.ckpt give
bit-identical states (as tests/test_metric_module.py does for the metric module). The DataModules build
a fresh DataLoader generator (and the TU module fresh augmentation generators) in the resumed process;
RNGStateCallback carries their states in the checkpoint."""
import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

import graphneg.checkpoint.rng_state as rng_state_mod
from graphneg.checkpoint import AtomicCheckpointIO, RNGStateCallback
from graphneg.data import MNIST5kDataModule, TUDataModule
from graphneg.losses import InfoNCELoss, UnReMixLoss
from graphneg.models import ContrastiveModule, GINEncoder, GraphContrastiveModule, SmallCNN


def _trainer(root, **kw):
    return L.Trainer(
        default_root_dir=root, accelerator="cpu", devices=1, limit_train_batches=3, limit_val_batches=0,
        enable_progress_bar=False, enable_model_summary=False, logger=False, deterministic=True,
        plugins=[AtomicCheckpointIO()], num_sanity_val_steps=0,
        callbacks=[ModelCheckpoint(dirpath=root / "ckpt", save_last=True), RNGStateCallback()], **kw,
    )


class Interrupt(L.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def _straight_and_resumed(tmp_path, make_model, make_data):
    L.seed_everything(0)
    full = make_model()
    _trainer(tmp_path / "a", max_epochs=2).fit(full, datamodule=make_data())
    L.seed_everything(0)
    first = make_model()
    t = _trainer(tmp_path / "b", max_epochs=2)
    t.callbacks.insert(0, Interrupt())
    t.fit(first, datamodule=make_data())
    assert t.current_epoch == 1
    last = tmp_path / "b" / "ckpt" / "last.ckpt"
    L.seed_everything(123)  # another global state: the checkpoint must restore what matters
    torch.manual_seed(7)
    resumed = make_model()
    t2 = _trainer(tmp_path / "b", max_epochs=2)
    t2.fit(resumed, datamodule=make_data(), ckpt_path=str(last))
    assert t2.current_epoch == 2 and t2.global_step == 2 * t.global_step
    return full, resumed, torch.load(last, weights_only=False)


def _differ(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return [k for k in sa if not torch.equal(sa[k], sb[k])]


def _graph_parts(tmp_path):
    def model():
        return GraphContrastiveModule(GINEncoder(7, 8, 2), UnReMixLoss(0.5, 0.1, k=4), projector_dims=(8, 8))

    def data():
        return TUDataModule("MUTAG", root=str(tmp_path / "tu"), batch_size=16, seed=0, augment="random4")

    return model, data


def _image_parts():
    def model():
        return ContrastiveModule(SmallCNN(1, 0, width=4), InfoNCELoss(0.5), projector_dims=(8, 4))

    def data():
        return MNIST5kDataModule(mode="contrastive", split="stratified", batch_size=16, limit_per_class=10,
                                 eval_batch_size=64, num_workers=0)

    return model, data


def test_graph_contrastive_resume_is_bit_identical(tmp_path):
    model, data = _graph_parts(tmp_path)
    full, resumed, saved = _straight_and_resumed(tmp_path, model, data)
    # the loader's shuffle generator and the augmentations' own streams are in the checkpoint
    keys = set(saved["callbacks"]["RNGStateCallback"]["train_loader"])
    assert "generator" in keys and any(".aug1." in k or "aug1" in k for k in keys), keys
    assert not _differ(full, resumed)


def test_image_contrastive_resume_is_bit_identical(tmp_path):
    model, data = _image_parts()
    full, resumed, saved = _straight_and_resumed(tmp_path, model, data)
    assert "generator" in saved["callbacks"]["RNGStateCallback"]["train_loader"]
    assert not _differ(full, resumed)


def test_without_loader_state_the_resume_diverges(tmp_path, monkeypatch):
    """The control: with the loader generators left out of the checkpoint the resumed graph run differs
    (so the test above checks something)."""
    monkeypatch.setattr(rng_state_mod, "_loader_generators", lambda trainer: {})
    model, data = _graph_parts(tmp_path)
    full, resumed, _ = _straight_and_resumed(tmp_path, model, data)
    assert _differ(full, resumed)
