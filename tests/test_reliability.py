"""Nothing lost, nothing run (issue 20): run folders that cannot collide, resume that picks the right state
and writes it into the config, caches and data files that cannot run code, kill -9 during checkpoint writes,
and the size protocol for a user's own DataModule through the CLI (issue 22, item 5).

The concurrent `graphneg fit` processes are marked slow (``nox -s slow``); the default suite claims folders
from eight processes at once instead (the same function the CLI calls).
"""
import glob
import gzip
import multiprocessing as mp
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from graphneg.cli import cli_main
from graphneg.runs import claim_version_dir, inspect_checkpoint, newest_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "experiments" / "mnist_metric.yaml")
TINY = ["--data.init_args.limit_per_class=24", "--data.init_args.samples_per_class=4",
        "--model.init_args.encoder.init_args.width=8", "--model.init_args.eval_nmi=false",
        "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false",
        "--model.init_args.scheduler=none"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


class Payload:
    """A pickle that, when unpickled without restriction, creates ``marker`` (runs a shell command)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# ------------------------------------------------------------------------------------ run folders
def _claim(root, barrier, out):
    barrier.wait()
    out.put(claim_version_dir(root)[0])


def test_eight_processes_claim_eight_distinct_version_folders(tmp_path):
    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(8), ctx.Queue()
    (tmp_path / "version_3").mkdir()  # an earlier run: new ones start above it
    procs = [ctx.Process(target=_claim, args=(str(tmp_path), barrier, out)) for _ in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    got = sorted(out.get(timeout=5) for _ in procs)
    assert got == list(range(4, 12))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"version_{n}" for n in range(3, 12))


def _csv(save_dir, **kw):
    return {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(save_dir), **kw}}


def test_loggers_are_rebuilt_on_claimed_folders_through_their_constructor(tmp_path):
    """Two trainers on one root that both start before either writes: Lightning alone gives both version_0
    (the next free number, nothing claimed yet); claim_logger_versions gives 0 and 1, folders created first.
    Loggers sharing a root share the number; a fixed version is kept as given."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from graphneg.runs import claim_logger_versions

    def trainer(loggers):
        return L.Trainer(logger=loggers, default_root_dir=str(tmp_path), enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)

    configs = [_csv(tmp_path), {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                                "init_args": {"save_dir": str(tmp_path), "name": "lightning_logs"}}]
    a = trainer([CSVLogger(tmp_path), TensorBoardLogger(tmp_path)])
    b = trainer([CSVLogger(tmp_path), TensorBoardLogger(tmp_path)])
    assert a.loggers[0].version == b.loggers[0].version == 0  # Lightning's own choice collides
    a = trainer([CSVLogger(tmp_path), TensorBoardLogger(tmp_path)])
    b = trainer([CSVLogger(tmp_path), TensorBoardLogger(tmp_path)])
    got_a, got_b = claim_logger_versions(a, configs), claim_logger_versions(b, configs)
    assert got_a == [tmp_path / "lightning_logs" / "version_0"] and got_b == [tmp_path / "lightning_logs" / "version_1"]
    assert [type(lg) for lg in a.loggers] == [CSVLogger, TensorBoardLogger]
    assert [lg.version for lg in a.loggers] == [0, 0] and [lg.version for lg in b.loggers] == [1, 1]
    assert b.loggers[1].log_dir == str(tmp_path / "lightning_logs" / "version_1") and got_b[0].is_dir()
    # Lightning's default logger (config value None): save_dir is the trainer's default_root_dir
    c = trainer(True)
    assert claim_logger_versions(c, None) == [tmp_path / "lightning_logs" / "version_2"]
    assert isinstance(c.logger, TensorBoardLogger) and c.logger.version == 2
    # a fixed version stays; so do a logger passed as an object (the config's value is the default but the
    # logger is not Lightning's default) and config entries that do not match the loggers
    d = trainer([CSVLogger(tmp_path, version=7)])
    assert claim_logger_versions(d, [_csv(tmp_path, version=7)]) == [] and d.logger.version == 7
    other = CSVLogger(tmp_path / "other")
    e = trainer([other])
    assert claim_logger_versions(e, None) == [] and e.logger is other
    assert claim_logger_versions(e, [_csv(tmp_path), _csv(tmp_path)]) == [] and e.logger is other
    assert not (tmp_path / "other").exists()
    assert sorted(p.name for p in (tmp_path / "lightning_logs").iterdir()) == [f"version_{n}" for n in range(3)]


def test_slurm_job_id_version_of_the_default_logger_is_kept(tmp_path, monkeypatch):
    """Lightning names its default logger's version after the SLURM job id; that fixed version is kept."""
    from graphneg.runs import claim_logger_versions

    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_JOB_NAME", raising=False)
    t = L.Trainer(logger=True, default_root_dir=str(tmp_path), enable_progress_bar=False)
    assert t.logger.version == 4242
    assert claim_logger_versions(t, None) == [] and t.logger.version == 4242


def test_configured_csv_logger_gets_claimed_folders_and_config_keeps_version_unset(tmp_path):
    """Through the CLI: an explicit CSVLogger without a version gets version_0, then version_1; each run's
    config.yaml leaves the version unset (so running it again claims a new folder) and a given version is used."""
    import yaml

    logger = ["--trainer.logger=lightning.pytorch.loggers.CSVLogger", f"--trainer.logger.save_dir={tmp_path}/csv"]
    base = ["fit", "--config", CONFIG, *TINY, "--trainer.max_epochs=1", f"--trainer.default_root_dir={tmp_path}"]
    dirs = [cli_main([*base, *logger]).trainer.log_dir for _ in range(2)]
    assert dirs == [f"{tmp_path}/csv/lightning_logs/version_{n}" for n in (0, 1)]
    for d in dirs:
        saved = yaml.safe_load(Path(d, "config.yaml").read_text())["trainer"]["logger"]
        assert saved["init_args"]["version"] is None and Path(d, "checkpoints", "last.ckpt").is_file()
    fixed = cli_main([*base, *logger, "--trainer.logger.version=run_a"]).trainer.log_dir
    assert fixed == f"{tmp_path}/csv/lightning_logs/run_a"


def _config_lr(path):
    import yaml

    return yaml.safe_load(Path(path).read_text())["model"]["init_args"]["lr"]


@pytest.mark.slow
def test_three_simultaneous_fits_keep_their_own_folder_config_and_checkpoints(tmp_path):
    """The issue's repro: three `graphneg fit` processes with one default_root_dir started at once."""
    procs = [subprocess.Popen(
        [sys.executable, "-m", "graphneg.cli", "fit", "--config", CONFIG, *TINY, "--trainer.max_epochs=1",
         f"--trainer.default_root_dir={tmp_path}", f"--model.init_args.lr=0.00{i}"],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i in (1, 2, 3)]
    for p in procs:
        assert p.wait(600) == 0, p.stderr.read().decode()[-2000:]
    runs = sorted(glob.glob(f"{tmp_path}/lightning_logs/version_*"))
    assert len(runs) == 3
    lrs = []
    for run in runs:
        lr = _config_lr(f"{run}/config.yaml")
        ckpt = torch.load(f"{run}/checkpoints/last.ckpt", weights_only=True)
        assert ckpt["hyper_parameters"]["lr"] == lr  # the checkpoint belongs to the run of this config
        lrs.append(lr)
    assert sorted(lrs) == [0.001, 0.002, 0.003]


@pytest.mark.slow
def test_ddp_fit_claims_on_rank_zero_and_ends_cleanly(tmp_path):
    """Two CPU processes (gloo DDP) through the CLI, twice: rank zero claims one folder per run (version_0,
    then version_1; the other rank creates none), both ranks write into it, and the end-of-fit summary (rank
    zero only) names it without a collective call that would wait for the finished rank."""
    args = [sys.executable, "-m", "graphneg.cli", "fit", "--config", CONFIG, *TINY, "--trainer.max_epochs=1",
            f"--trainer.default_root_dir={tmp_path}", "--trainer.strategy=ddp", "--trainer.devices=2",
            "--trainer.accelerator=cpu", "--trainer.use_distributed_sampler=false"]
    for n in (0, 1):
        done = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        run = tmp_path / "lightning_logs" / f"version_{n}"
        assert f"logs: {run}" in done.stdout
        assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
        assert sorted(p.name for p in (tmp_path / "lightning_logs").iterdir()) == [f"version_{i}" for i in range(n + 1)]


def test_failed_start_leaves_no_version_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="MNIST-5k file not found"):
        cli_main(["fit", "--config", CONFIG, *TINY, f"--trainer.default_root_dir={tmp_path}",
                  f"--data.init_args.data_path={tmp_path}/missing.csv.gz"])
    assert glob.glob(f"{tmp_path}/lightning_logs/version_*") == []


# ------------------------------------------------------------------------------------ resume
def _fake_ckpt(path, step):
    torch.save({"global_step": step, "state_dict": {"w": torch.full((2,), float(step))}}, path)


def test_newest_checkpoint_skips_corrupt_last_and_empty_runs(tmp_path):
    old, new, newest = (tmp_path / f"version_{i}" / "checkpoints" for i in range(3))
    for d in (old, new, newest):
        d.mkdir(parents=True)
    _fake_ckpt(old / "last.ckpt", 4)
    _fake_ckpt(new / "epoch=1-step=8.ckpt", 8)
    _fake_ckpt(new / "epoch=0-step=4.ckpt", 4)
    (new / "last.ckpt").write_bytes(b"PK\x03\x04 cut short")  # truncated
    choice = newest_checkpoint([newest, new, old])  # newest run first, as the CLI orders them
    assert choice.path == new / "epoch=1-step=8.ckpt" and choice.global_step == 8
    reasons = dict((p.name, why) for p, why in choice.skipped)
    assert "truncated or corrupt" in reasons["last.ckpt"] or "not a torch zip" in reasons["last.ckpt"]
    assert (newest, "no checkpoint") in choice.skipped
    assert "skipped" in choice.message and "global step 8" in choice.message
    # missing last.ckpt beside an intact newer epoch=N checkpoint
    (new / "last.ckpt").unlink()
    choice = newest_checkpoint([new, old])
    assert choice.path.name == "epoch=1-step=8.ckpt" and (new / "last.ckpt", "missing") in choice.skipped


@pytest.mark.parametrize("content, why", [
    (b"", "empty"),
    (b"not a checkpoint at all", "not a torch zip archive"),
])
def test_inspect_checkpoint_reasons(tmp_path, content, why):
    path = tmp_path / "x.ckpt"
    path.write_bytes(content)
    step, reason = inspect_checkpoint(path)
    assert step is None and why in reason


def test_inspect_checkpoint_does_not_run_a_payload(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"global_step": 3, "state_dict": {}, "x": Payload(marker)}, tmp_path / "p.ckpt")
    step, why = inspect_checkpoint(tmp_path / "p.ckpt")
    assert step is None and "does not unpickle" in why and not marker.exists()


def test_resume_takes_intact_epoch_checkpoint_and_config_names_it(tmp_path, caplog):
    base = ["fit", "--config", CONFIG, *TINY, f"--trainer.default_root_dir={tmp_path}"]
    first = cli_main([*base, "--trainer.max_epochs=1"])
    ckdir = Path(first.trainer.logger.log_dir) / "checkpoints"
    intact = ckdir / "epoch=0-step=2.ckpt"
    assert intact.is_file()
    (ckdir / "last.ckpt").write_bytes((ckdir / "last.ckpt").read_bytes()[:100])  # a corrupt last.ckpt
    caplog.set_level("INFO")
    resumed = cli_main([*base, "--trainer.max_epochs=2", "--ckpt_path=last"])
    assert f"resuming from {intact.absolute()}" in caplog.text and "last.ckpt: " in caplog.text
    assert resumed.trainer.global_step == 4  # continued from step 2
    import yaml

    saved = yaml.safe_load((Path(resumed.trainer.logger.log_dir) / "config.yaml").read_text())
    assert saved["ckpt_path"] == str(intact.absolute())


@pytest.mark.parametrize("content", [b"", b"hello", None])
def test_ckpt_path_at_a_bad_file_names_it(tmp_path, content):
    path = tmp_path / "bad.ckpt"
    if content is None:
        torch.save({"weight": torch.ones(2)}, path)  # a state_dict, not a Lightning checkpoint
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError) as err:
        cli_main(["fit", "--config", CONFIG, *TINY, f"--trainer.default_root_dir={tmp_path}/run",
                  f"--ckpt_path={path}"])
    msg = str(err.value)
    assert f"--ckpt_path {path}" in msg and "weights_only" not in msg
    assert not glob.glob(f"{tmp_path}/run/lightning_logs/version_*")


# ------------------------------------------------------------------------------------ kill -9
_WRITER = """
import sys, torch
from graphneg.checkpoint import atomic_torch_save
path = sys.argv[1]
i = 0
while True:
    i += 1
    atomic_torch_save({"i": i, "w": torch.full((400_000,), float(i))}, path)
"""


def test_kill_9_during_checkpoint_writes_leaves_a_whole_file(tmp_path):
    from graphneg.checkpoint import remove_orphaned_temp_files

    path = tmp_path / "last.ckpt"
    rng = random.Random(0)
    seen = set()
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], env=ENV)
        deadline = time.time() + 120
        while not path.exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        obj = torch.load(path, weights_only=True)  # the file is always whole: one complete version
        assert torch.equal(obj["w"], torch.full((400_000,), float(obj["i"])))
        seen.add(obj["i"])
        remove_orphaned_temp_files(tmp_path)
        assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    assert len(seen) >= 1


# ------------------------------------------------------------------------------------ payloads
def test_tu_cache_payload_does_not_run_and_cache_is_rebuilt(tmp_path):
    from graphneg.data.tu import TUDataModule

    dm = TUDataModule("MUTAG", root=str(tmp_path / "tu"), augment="none")
    clean = dm.dataset
    for name in ("pre_transform.pt", "pre_filter.pt", "data.pt"):
        (cached,) = glob.glob(f"{tmp_path}/tu/MUTAG/processed/*/{name}")
        marker = tmp_path / f"ran_{name}"
        torch.save(Payload(marker), cached)
        with pytest.warns(UserWarning, match=f"{name} does not load with torch.load\\(weights_only=True\\)"):
            again = TUDataModule("MUTAG", root=str(tmp_path / "tu"), augment="none").dataset
        assert not marker.exists(), f"code from {name} ran"
        assert len(again) == len(clean) == 188
        for key in ("x", "edge_index", "y"):
            assert torch.equal(getattr(again._data, key), getattr(clean._data, key))


def _write_cifar10(folder, n=4):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": list(range(n))}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    return data


def test_cifar_payload_does_not_run(tmp_path):
    from graphneg.data.vision import CIFARFiles

    folder = tmp_path / "cifar-10-batches-py"
    data = _write_cifar10(folder)
    ok = CIFARFiles(str(folder), ["data_batch_1"], "batches.meta", "label_names")
    assert np.array_equal(ok.data.transpose(0, 3, 1, 2).reshape(len(ok), -1), data)  # the format is still read
    marker = tmp_path / "ran"
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({"data": Payload(marker), "labels": [0]}, f)
    with pytest.raises(pickle.UnpicklingError, match=r"data_batch_1: not a CIFAR batch file: it asks to load "
                                                     r"(posix|os)\.system"):
        CIFARFiles(str(folder), ["data_batch_1"], "batches.meta", "label_names")
    assert not marker.exists()


# ------------------------------------------------------------------------------------ silent inputs
def _write_mnist_csv(path, label):
    rows = np.zeros((2, 785))
    rows[:, 784] = [3, label]
    with gzip.open(path, "wt") as f:
        np.savetxt(f, rows, delimiter=",", fmt="%.17g")
    return path


@pytest.mark.parametrize("label", [1e30, 1e11, 10])
def test_mnist_labels_are_range_checked_before_the_cast(tmp_path, label):
    from graphneg.data.mnist import load_mnist5k

    path = _write_mnist_csv(tmp_path / "m.csv.gz", label)
    with pytest.raises(ValueError, match=r"row 2, column 785: label .* not a non-negative integer class id in 0-9"):
        load_mnist5k(path)


def test_truncated_gz_names_the_file(tmp_path):
    from graphneg.data.mnist import load_mnist5k

    full = _write_mnist_csv(tmp_path / "m.csv.gz", 4).read_bytes()
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(full[: len(full) // 2])
    with pytest.raises(ValueError, match="cut.csv.gz: the compressed file is truncated or corrupt"):
        load_mnist5k(cut)


# ------------------------------------------------------------------------------------ size protocol
class UserData(L.LightningDataModule):
    """A user's own DataModule: random 1x8x8 images of ``n`` classes, exposing ``num_classes``."""

    def __init__(self, num_classes: int = 4, per_class: int = 8):
        super().__init__()
        self.save_hyperparameters()  # holds num_classes too: must not clash with the model's
        self.num_classes = num_classes
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(num_classes * per_class, 1, 8, 8, generator=g)
        self.y = torch.arange(num_classes).repeat_interleave(per_class)

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=len(self.y), shuffle=True)


class UserDataWithoutSize(UserData):
    """The same data without the ``num_classes`` attribute."""

    def __init__(self, classes: int = 4):
        super().__init__(classes)
        del self.num_classes


def _user_args(tmp_path, data_cls, *extra):
    return ["fit", "--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=0",
            "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}",
            "--model=graphneg.models.MetricLearningModule", "--model.init_args.encoder=graphneg.models.SmallCNN",
            "--model.init_args.encoder.init_args.embedding_dim=16", "--model.init_args.encoder.init_args.width=8",
            "--model.init_args.loss=graphneg.losses.MultiSimilarityLoss", "--model.init_args.generator=graphneg.nn.GCAHNG",
            "--model.init_args.eval_nmi=false", f"--data={__name__}.{data_cls}", *extra]


def test_user_datamodule_sizes_reach_generator_and_model(tmp_path):
    cli = cli_main(_user_args(tmp_path, "UserData", "--data.init_args.num_classes=3"))
    gen = cli.model.generator
    assert (gen.num_classes, gen.dim) == (3, 16)  # from the DataModule's attribute and the encoder's embedding_dim
    assert cli.model.classifier.out_features == 3 and cli.model.hparams.num_classes == 3
    assert cli.trainer.global_step > 0


def test_user_datamodule_without_size_is_one_line_error(tmp_path):
    with pytest.raises(ValueError) as err:
        cli_main(_user_args(tmp_path, "UserDataWithoutSize"))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("model.init_args.generator.init_args.num_classes is not set")
    assert "num_classes` attribute" in msg
    # set by hand, the run starts and the model's num_classes follows the generator's
    cli = cli_main(_user_args(tmp_path, "UserDataWithoutSize", "--model.init_args.generator.init_args.num_classes=4"))
    assert cli.model.classifier.out_features == 4
