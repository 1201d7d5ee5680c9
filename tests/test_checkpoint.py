"""Run state: the atomic checkpoint writer (unique temp names, orphan cleanup, fsspec URLs, composition
with user plugins), DetectNaN, and clipping of unscaled gradients under mixed precision."""
import os
import subprocess
import sys
import threading

import fsspec
import lightning as L
import pytest
import torch
from lightning.fabric.plugins import CheckpointIO, TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import AsyncCheckpointIO
from torch.utils.data import DataLoader, TensorDataset

from graphneg.checkpoint import (
    AtomicCheckpointIO,
    DetectNaN,
    NonFiniteLossError,
    atomic_torch_save,
    remove_orphaned_temp_files,
    temp_path_for,
    use_atomic_checkpoints,
)
from graphneg.losses import MultiSimilarityLoss
from graphneg.models import MetricLearningModule


class SlowIO(CheckpointIO):
    """A writer that records its paths and writes the payload in two halves with a pause between them."""

    def __init__(self, barrier=None):
        self.paths, self.barrier = [], barrier

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        self.paths.append(str(path))
        data = repr(checkpoint).encode() * 1000
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            if self.barrier is not None:
                self.barrier.wait()  # both saves are half-written at this point
            f.write(data[len(data) // 2:])

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return open(path, "rb").read()

    def remove_checkpoint(self, path):
        os.remove(path)


def test_concurrent_saves_to_one_path_use_unique_temp_files(tmp_path):
    inner = SlowIO(threading.Barrier(2))
    io = AtomicCheckpointIO(inner)
    target = tmp_path / "last.ckpt"
    threads = [threading.Thread(target=io.save_checkpoint, args=({"v": i}, target)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(inner.paths)) == 2 and str(target) not in inner.paths
    for p in inner.paths:
        assert os.path.dirname(p) == str(tmp_path) and os.path.basename(p).startswith(".last.ckpt.tmp-")
    # the published file is one complete payload, never a mix or a half
    assert target.read_bytes() in (repr({"v": 0}).encode() * 1000, repr({"v": 1}).encode() * 1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    assert temp_path_for(target) != temp_path_for(target)


def test_orphaned_temp_files_of_dead_processes_are_removed(tmp_path):
    target = tmp_path / "last.ckpt"
    # a temp file of a process that has exited (same host), one of this live process, one of another host
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(proc.stdout)
    live = temp_path_for(target)
    dead = live.with_name(live.name.replace(f"-{os.getpid()}-", f"-{dead_pid}-"))
    other_host = live.with_name(f".last.ckpt.tmp-otherhost-{dead_pid}-{'a' * 32}")
    unrelated = tmp_path / ".last.ckpt.tmp-notours"
    for p in (live, dead, other_host, unrelated):
        p.write_bytes(b"x" * 100)
    assert remove_orphaned_temp_files(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (live, other_host, unrelated))
    # the writer cleans a folder before its first save there
    dead.write_bytes(b"x")
    AtomicCheckpointIO().save_checkpoint({"a": torch.ones(2)}, target)
    assert not dead.exists() and live.exists()
    assert torch.equal(torch.load(target)["a"], torch.ones(2))


def test_memory_fsspec_path_goes_through_fsspec(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    io = AtomicCheckpointIO()
    io.save_checkpoint({"w": torch.arange(3)}, "memory://graphneg-test/run/last.ckpt")
    fs = fsspec.filesystem("memory")
    assert fs.exists("/graphneg-test/run/last.ckpt")
    assert torch.equal(io.load_checkpoint("memory://graphneg-test/run/last.ckpt")["w"], torch.arange(3))
    atomic_torch_save({"x": 1}, "memory://graphneg-test/other.pt")
    with fs.open("/graphneg-test/other.pt", "rb") as f:
        assert torch.load(f) == {"x": 1}
    assert list(tmp_path.iterdir()) == []  # no local folder named "memory:" was created
    fs.rm("/graphneg-test", recursive=True)


def test_file_url_is_written_atomically(tmp_path):
    io = AtomicCheckpointIO()
    io.save_checkpoint({"v": 2}, f"file://{tmp_path}/sub/a.ckpt")
    assert torch.load(tmp_path / "sub" / "a.ckpt") == {"v": 2}
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.ckpt"]


def test_bad_writer_arguments_are_reported():
    with pytest.raises(TypeError, match="expects a lightning CheckpointIO"):
        AtomicCheckpointIO(checkpoint_io="torch")
    with pytest.raises(TypeError, match=r"AsyncCheckpointIO\(AtomicCheckpointIO"):
        AtomicCheckpointIO(AsyncCheckpointIO(TorchCheckpointIO()))
    with pytest.raises(ValueError, match="check_every_n_steps"):
        DetectNaN(check_every_n_steps=0)


def _tiny_trainer(tmp_path, **kw):
    return L.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, enable_progress_bar=False,
                     enable_model_summary=False, logger=False, **kw)


def test_atomic_writer_composes_with_user_plugins(tmp_path):
    class MyIO(TorchCheckpointIO):
        pass

    trainer = _tiny_trainer(tmp_path, plugins=[MyIO()])
    io = use_atomic_checkpoints(trainer)
    assert isinstance(io, AtomicCheckpointIO) and isinstance(io.checkpoint_io, MyIO)
    assert trainer.strategy.checkpoint_io is io and use_atomic_checkpoints(trainer) is io  # idempotent
    trainer2 = _tiny_trainer(tmp_path, plugins=[AsyncCheckpointIO()])
    io2 = use_atomic_checkpoints(trainer2)
    assert type(io2) is AsyncCheckpointIO and isinstance(io2.checkpoint_io, AtomicCheckpointIO)
    assert isinstance(io2.checkpoint_io.checkpoint_io, TorchCheckpointIO)


# ------------------------------------------------------------------ DetectNaN and clipping (MetricLearningModule)
def _batches(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n * 8, 5, generator=g)
    y = torch.arange(4).repeat(2 * n)
    return DataLoader(TensorDataset(x, y), batch_size=8, shuffle=False)


def _linear_module(**kw):
    torch.manual_seed(0)
    return MetricLearningModule(torch.nn.Linear(5, 4), MultiSimilarityLoss(mining=True), scheduler="none", eval_nmi=False, **kw)


class FlakyLoss(torch.nn.Module):
    """MultiSimilarityLoss whose value turns NaN while ``broken`` is set (finite embeddings, NaN loss)."""

    def __init__(self):
        super().__init__()
        self.ms, self.broken = MultiSimilarityLoss(mining=True), False

    def forward(self, emb, labels, *args):
        out = self.ms(emb, labels, *args)
        return out * float("nan") if self.broken else out


def _fit_until_failure(tmp_path, inject, every=1):
    # 6 batches an epoch; the batch at index 2 of epoch 1 (global step 9) goes wrong
    class Inject(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.current_epoch == 1 and batch_idx == 2:
                inject(pl_module, batch)

    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=1, save_top_k=-1)
    trainer = _tiny_trainer(tmp_path, max_epochs=3, callbacks=[Inject(), DetectNaN(every), ckpt],
                            limit_val_batches=0)
    use_atomic_checkpoints(trainer)
    torch.manual_seed(0)
    mod = MetricLearningModule(torch.nn.Linear(5, 4), FlakyLoss(), scheduler="none", eval_nmi=False, grad_clip=None)
    trainer.fit(mod, train_dataloaders=_batches())


def _assert_last_good_checkpoint(tmp_path):
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    # the last checkpoint is from the step before the failure (every_n_train_steps=1: step 8), and finite
    assert saved["global_step"] == 8
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values())
    mod = MetricLearningModule.load_from_checkpoint(
        tmp_path / "ckpt" / "last.ckpt", encoder=torch.nn.Linear(5, 4), loss=FlakyLoss(), weights_only=False
    )
    assert torch.isfinite(mod.encoder.weight).all()
    steps = sorted(int(p.name.split("step=")[1].split(".")[0]) for p in (tmp_path / "ckpt").glob("epoch=*"))
    assert steps[-1] == 8  # no checkpoint of a later (broken) step exists
    assert [p.name for p in (tmp_path / "ckpt").iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("every", [1, 4])
def test_nan_loss_stops_training_and_keeps_last_good_checkpoint(tmp_path, every):
    """every=1 stops at the bad batch; every=4 reads the flag later but the save after the bad batch
    (every_n_train_steps=1) checks it first and is aborted."""

    def inject(pl_module, batch):
        pl_module.loss.broken = True

    with pytest.raises(NonFiniteLossError, match=r"loss is nan at epoch 1, batch index 2 \(global step 9\)"):
        _fit_until_failure(tmp_path, inject, every)
    _assert_last_good_checkpoint(tmp_path)


def test_nan_in_a_batch_stops_training_and_keeps_last_good_checkpoint(tmp_path):
    def inject(pl_module, batch):
        batch[0][3, 2] = float("nan")

    # MetricLearningModule checks its embeddings itself (a NaN input gives NaN embeddings)
    with pytest.raises(ValueError, match="encoder output contain NaN or Inf"):
        _fit_until_failure(tmp_path, inject)
    _assert_last_good_checkpoint(tmp_path)


def test_clipping_sees_unscaled_gradients_under_mixed_precision(tmp_path):
    """precision 16-mixed scales the loss before backward; the clip must act on unscaled gradients.
    A GradScaler with scale 2**8 on CPU (small enough that no fp16 gradient overflows): every gradient entry
    larger than `c` in magnitude must end at exactly +-c (clipping scaled gradients would leave c / 2**8)."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    c = 1e-3
    grads = {}

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            grads["w"] = pl_module.encoder.weight.grad.detach().clone()

    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    plugin = MixedPrecision("16-mixed", "cpu", scaler=scaler)
    trainer = _tiny_trainer(tmp_path, max_steps=1, plugins=[plugin], callbacks=[Record()], limit_val_batches=0)
    mod = _linear_module(grad_clip=c)
    ref = _linear_module(grad_clip=c)
    trainer.fit(mod, train_dataloaders=_batches(1))
    # reference gradient of the same first batch in float32
    x, y = next(iter(_batches(1)))
    ref.loss(ref.encoder(x), y).backward()
    g_ref, g = ref.encoder.weight.grad, grads["w"]
    big = g_ref.abs() > 3 * c
    assert big.any() and torch.isfinite(g).all() and float(scaler.get_scale()) == 2.0 ** 8  # step not skipped
    assert torch.equal(g[big], torch.sign(g_ref[big]) * c)
    assert float(g.abs().max()) == pytest.approx(c)


@pytest.mark.gpu
def test_clipping_under_cuda_16_mixed():
    """The same check with Lightning's own CUDA `precision="16-mixed"` (marker gpu: not run by default)."""
    assert torch.cuda.is_available(), "needs a CUDA device (run with `nox -s gpu` on one)"
    c, grads = 1e-3, {}

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            grads["w"] = pl_module.encoder.weight.grad.detach().cpu().clone()

    trainer = L.Trainer(accelerator="gpu", devices=1, precision="16-mixed", max_steps=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, callbacks=[Record()])
    mod, ref = _linear_module(grad_clip=c), _linear_module(grad_clip=c)
    trainer.fit(mod, train_dataloaders=_batches(1))
    x, y = next(iter(_batches(1)))
    ref.loss(ref.encoder(x), y).backward()
    big = ref.encoder.weight.grad.abs() > 3 * c
    assert big.any() and torch.equal(grads["w"][big], torch.sign(ref.encoder.weight.grad[big]) * c)
