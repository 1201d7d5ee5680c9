"""MetricLearningModule with the GCA-HNG generator: the three-step update touches the parameter groups
the official update touches, running means live in checkpoints, and resuming is bit-identical."""
import copy
import math
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
    return MetricLearningModule(SmallCNN(1, DIM, width=4), MultiSimilarityLoss(mining=True), generator=gen, num_classes=5,
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
    mod = MetricLearningModule(SmallCNN(1, DIM, width=4), MultiSimilarityLoss(mining=True), generator=gen)
    assert mod.classifier.out_features == 5
    with pytest.raises(ValueError, match="warmup_epochs"):
        MetricLearningModule(torch.nn.Linear(3, 3), MultiSimilarityLoss(mining=True), warmup_epochs=1)


# ------------------------------------------------------------------ Lightning conventions (issue 22)
def tiny_loader(batches=4, classes=4, m=3, seed=0):
    """Batches of `classes` x `m` samples (C x m layout), no shuffling."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batches * classes * m, 6, generator=g)
    y = torch.arange(classes).repeat(batches * m)
    return torch.utils.data.DataLoader(list(zip(x, y)), batch_size=classes * m)


def bare_trainer(tmp_path, **kw):
    kw.setdefault("logger", False)
    kw.setdefault("enable_checkpointing", False)
    return L.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, limit_val_batches=0,
                     enable_progress_bar=False, enable_model_summary=False, **kw)


class CountBatches(L.Callback):
    def __init__(self):
        self.batches = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.batches += 1


def gca_module(loss=None, **kw):
    torch.manual_seed(0)
    gen = GCAHNG(DIM, num_classes=4, num_layers=1, heads=2)
    return MetricLearningModule(torch.nn.Linear(6, DIM), MultiSimilarityLoss(mining=True) if loss is None else loss,
                                generator=gen, eval_nmi=False, **kw)


def test_generator_global_step_counts_batches_and_names_checkpoints(tmp_path):
    """Manual optimisation with three optimisers (4 optimizer.step() per batch): global_step counts batches,
    max_steps counts batches, checkpoint names carry the batch count; every optimiser still stepped."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    mod, count = gca_module(), CountBatches()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1)
    t = bare_trainer(tmp_path, max_steps=6, callbacks=[count, ckpt], enable_checkpointing=True)
    t.fit(mod, train_dataloaders=tiny_loader(batches=4))
    assert count.batches == 6 and t.global_step == 6
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert names == ["epoch=0-step=3.ckpt", "epoch=1-step=6.ckpt"]
    enc, cls, gen = t.optimizers
    step = lambda opt: int(next(iter(opt.state.values()))["step"])  # noqa: E731
    assert (step(enc), step(cls), step(gen)) == (6, 6, 12)  # the generator steps twice a batch (official)


def test_generator_module_takes_a_pml_loss(tmp_path):
    """MetricLearningModule(encoder, pml.losses.MultiSimilarityLoss(), generator=GCAHNG(...)) trains; its J_syn
    is PML's loss on the synthetic negatives (the objective's pml route)."""
    from pytorch_metric_learning import losses as pml_losses

    mod = gca_module(pml_losses.MultiSimilarityLoss())
    assert mod.objective.synthetic_route == "pml" and mod.loss is mod.objective.loss
    t = bare_trainer(tmp_path, max_steps=2)
    t.fit(mod, train_dataloaders=tiny_loader())
    m = t.callback_metrics
    assert t.global_step == 2 and torch.isfinite(m["train/J_syn_epoch"]) and float(m["gca/loss_synthetic"]) > 0


def plain_module(loss=None, **kw):
    torch.manual_seed(0)
    return MetricLearningModule(torch.nn.Linear(6, DIM), MultiSimilarityLoss(mining=True) if loss is None else loss,
                                eval_nmi=False, scheduler="none", **kw)


class GradsAtStep(L.Callback):
    """The encoder's gradients as the optimiser applies them (after clipping): a torch step post-hook."""

    def __init__(self):
        self.grads = []

    def on_train_start(self, trainer, pl_module):
        def hook(opt, args, kwargs):
            self.grads.append([p.grad.clone() for p in pl_module.encoder.parameters()])

        trainer.optimizers[0].register_step_post_hook(hook)


def reference_grads(mod, loader, batches, scale=1.0):
    """Hand reference: d(sum_b scale * loss(encoder(x_b), y_b)) / d(encoder) on a copy of the module."""
    ref = copy.deepcopy(mod)
    total = 0.0
    for b, (x, y) in enumerate(loader):
        if b in batches:
            total = total + scale * ref.loss(ref.encoder(x), y)
    return torch.autograd.grad(total, list(ref.encoder.parameters()))


def test_without_generator_trainer_clipping_works(tmp_path):
    mod, spy = plain_module(), GradsAtStep()
    assert mod.automatic_optimization
    raw = reference_grads(mod, tiny_loader(), {0})
    bare_trainer(tmp_path, max_steps=1, gradient_clip_val=0.01, callbacks=[spy]).fit(mod, tiny_loader())
    norm = torch.sqrt(sum(g.pow(2).sum() for g in raw))
    assert float(norm) > 0.01  # clipping is active
    for got, g in zip(spy.grads[0], raw):  # torch clip_grad_norm_: g * max_norm / (norm + 1e-6)
        torch.testing.assert_close(got, g * 0.01 / (norm + 1e-6), rtol=1e-5, atol=1e-8)
    # without the Trainer's clipping the module's grad_clip clips by value (official clip_grad_value_)
    mod, spy = plain_module(grad_clip=1e-3), GradsAtStep()
    bare_trainer(tmp_path, max_steps=1, callbacks=[spy]).fit(mod, tiny_loader())
    for got, g in zip(spy.grads[0], raw):
        torch.testing.assert_close(got, g.clamp(-1e-3, 1e-3), rtol=1e-5, atol=1e-8)


def test_without_generator_gradient_accumulation_and_max_steps(tmp_path):
    """accumulate_grad_batches=2: one optimiser step per 2 batches with the sum of the batches' gradients of
    loss / 2 (Lightning normalises each batch's loss); max_steps counts optimiser steps."""
    mod, spy, count = plain_module(grad_clip=None), GradsAtStep(), CountBatches()
    ref = reference_grads(mod, tiny_loader(), {0, 1}, scale=0.5)
    t = bare_trainer(tmp_path, max_steps=2, accumulate_grad_batches=2, callbacks=[spy, count])
    t.fit(mod, tiny_loader())
    assert count.batches == 4 and t.global_step == 2 and len(spy.grads) == 2
    for got, g in zip(spy.grads[0], ref):
        torch.testing.assert_close(got, g, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("scheduler", ["cosine", "step", "none"])
@pytest.mark.parametrize("with_generator", [False, True])
def test_learning_rate_tags(tmp_path, scheduler, with_generator):
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.loggers import CSVLogger

    mod = gca_module(scheduler=scheduler) if with_generator else plain_module()
    mod.hparams.scheduler = scheduler
    monitor = LearningRateMonitor(logging_interval="epoch")
    bare_trainer(tmp_path, max_steps=1, logger=CSVLogger(tmp_path), callbacks=[monitor]).fit(mod, tiny_loader())
    expected = {"lr/encoder", "lr/classifier", "lr/generator"} if with_generator else {"lr/encoder"}
    assert set(monitor.lrs) == expected
    assert monitor.lrs["lr/encoder"] == [1e-3]


def test_checkpoint_from_before_the_objective_loads():
    """Checkpoints written before GCA-HNG's state moved into `objective` (generator.*, classifier.*, j_mean*,
    rw_generator_state) load into the new layout."""
    mod = gca_module()
    with torch.no_grad():
        for p in mod.parameters():
            p.add_(torch.randn_like(p))
    mod.objective.j_mean.fill_(3.5)
    mod.objective.rw_generator.manual_seed(42)
    new = mod.state_dict()
    legacy = {k.replace("objective.", "", 1): v for k, v in new.items()
              if k != "objective._extra_state" and k != "objective.completed_epochs"}
    assert "generator.gnn.lin_lam.weight" in legacy and "j_mean" in legacy
    ckpt = {"state_dict": legacy, "rw_generator_state": mod.objective.rw_generator.get_state(), "epoch": 2}
    other = gca_module()
    other.on_load_checkpoint(ckpt)
    other.load_state_dict(ckpt["state_dict"])
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in new.items() if k != "objective.completed_epochs")
    assert int(other.objective.completed_epochs) == 3  # epoch 2 finished
    assert torch.equal(other.objective.rw_generator.get_state(), mod.objective.rw_generator.get_state())


def test_scalars_and_histograms_share_the_batch_axis(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    mod = gca_module()
    logger = TensorBoardLogger(tmp_path, name="tb")
    bare_trainer(tmp_path, max_epochs=1, logger=logger, log_every_n_steps=1).fit(mod, tiny_loader(batches=3))
    acc = EventAccumulator(logger.log_dir, size_guidance={"histograms": 0, "scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/J_m_step")] == [0, 1, 2]  # one scalar per batch
    assert [e.step for e in acc.Scalars("train/J_m_epoch")] == [2]
    for name in ("lambda", "anchor_negative_distance_real", "anchor_negative_distance_synthetic"):
        assert [e.step for e in acc.Histograms(f"gca/{name}")] == [3]  # global_step after 3 batches


def test_without_generator_cosine_schedule_resumes_exactly(tmp_path):
    """Automatic optimisation: Lightning steps the named epoch schedulers; a run interrupted after epoch 1 and
    resumed from last.ckpt sees the same learning rates and ends where the uninterrupted run ends (the
    catch-up loop at epoch start never steps a scheduler twice)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    class Rates(L.Callback):
        def __init__(self, stop_after=None):
            self.lrs, self.stop_after = {}, stop_after

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.lrs.setdefault(trainer.current_epoch, trainer.optimizers[0].param_groups[0]["lr"])

        def on_train_epoch_end(self, trainer, pl_module):
            if self.stop_after is not None and trainer.current_epoch + 1 == self.stop_after:
                trainer.should_stop = True

    def fit(root, ckpt_path=None, stop_after=None):
        mod, rates = plain_module(), Rates(stop_after)
        mod.hparams.scheduler = "cosine"
        callbacks = [ModelCheckpoint(dirpath=root / "ckpt", save_last=True), rates]
        bare_trainer(root, max_epochs=3, callbacks=callbacks, enable_checkpointing=True).fit(
            mod, tiny_loader(batches=2), ckpt_path=ckpt_path)
        return mod, rates.lrs

    full, lrs_full = fit(tmp_path / "a")
    fit(tmp_path / "b", stop_after=1)
    resumed, lrs_res = fit(tmp_path / "b", ckpt_path=str(tmp_path / "b" / "ckpt" / "last.ckpt"))
    # cosine over max_epochs=3 (T_max=3): lr_e = 1e-3 (1 + cos(pi e / 3)) / 2
    expected = {e: 1e-3 * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)}
    assert lrs_full == pytest.approx(expected) and expected[1] == pytest.approx(7.5e-4)
    assert lrs_res == pytest.approx({1: expected[1], 2: expected[2]})
    for k, v in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=0, msg=k)


def test_generator_module_trains_under_bf16_mixed(tmp_path):
    """precision='bf16-mixed': the three backward passes run inside Lightning's autocast (it wraps
    training_step, and so manual_backward); the layers' custom backward functions handle that themselves
    (graphneg.nn.edge_mlp); the step matches float32 within bf16 tolerance."""
    results = {}
    for precision in ("32-true", "bf16-mixed"):
        mod = gca_module()
        t = bare_trainer(tmp_path, max_steps=2, precision=precision)
        t.fit(mod, tiny_loader())
        assert t.global_step == 2
        results[precision] = {k: v.detach().clone() for k, v in mod.encoder.state_dict().items()}
    for k, v in results["32-true"].items():
        assert torch.isfinite(results["bf16-mixed"][k]).all()
        torch.testing.assert_close(results["bf16-mixed"][k], v, rtol=0, atol=5e-3)
