"""The graphneg CLI: a short fit on real MNIST-5k data, TensorBoard events, atomic checkpoints,
resume, and clear errors for bad configs / data."""
import glob
import os

import pytest
import torch

from graphneg.checkpoint import atomic_torch_save
from graphneg.cli import cli_main
from graphneg.models import MetricLearningModule, SmallCNN
from graphneg.losses import MultiSimilarityLoss

CONFIG = os.path.join(os.path.dirname(__file__), "..", "experiments", "mnist_metric.yaml")
SMALL = [
    "--data.init_args.limit_per_class=24", "--data.init_args.samples_per_class=4",
    "--model.init_args.encoder.init_args.width=8", "--model.init_args.eval_nmi=false",
    "--trainer.limit_train_batches=3", "--trainer.enable_progress_bar=false",
]


def test_fit_logs_checkpoints_and_resumes(tmp_path):
    args = ["fit", "--config", CONFIG, f"--trainer.default_root_dir={tmp_path}", "--trainer.max_epochs=1", *SMALL]
    cli = cli_main(args)
    logdir = cli.trainer.logger.log_dir
    events = glob.glob(os.path.join(logdir, "events.out.tfevents.*"))
    assert events, "no TensorBoard event file written"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(logdir)
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("train/loss_epoch", "val/recall@1", "val/map@r", "val/r_precision"):
        assert tag in tags, (tag, tags)
    assert any(t.startswith("lr-") for t in tags)
    ckpts = glob.glob(os.path.join(logdir, "checkpoints", "*.ckpt"))
    assert any(c.endswith("last.ckpt") for c in ckpts)
    assert not glob.glob(os.path.join(logdir, "checkpoints", ".*tmp*"))
    last = os.path.join(logdir, "checkpoints", "last.ckpt")
    # resume for one more epoch from last.ckpt
    cli2 = cli_main(["fit", "--config", CONFIG, f"--trainer.default_root_dir={tmp_path}",
                     "--trainer.max_epochs=2", f"--ckpt_path={last}", *SMALL])
    assert cli2.trainer.current_epoch == 2
    assert cli2.trainer.global_step == 2 * cli.trainer.global_step
    # the saved module reloads
    mod = MetricLearningModule.load_from_checkpoint(
        last, encoder=SmallCNN(1, 64, width=8), loss=MultiSimilarityLoss(), weights_only=False
    )
    assert isinstance(mod, MetricLearningModule)


def test_config_typo_is_reported(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli_main(["fit", "--config", CONFIG, "--model.init_args.lrr=0.1"])
    assert "lrr" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(open(CONFIG).read().replace("max_epochs:", "max_epoch:"))
    with pytest.raises(SystemExit):
        cli_main(["fit", "--config", str(bad)])
    assert "max_epoch" in capsys.readouterr().err


def test_missing_data_root_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="Expected layout"):
        cli_main(["fit", "--config", CONFIG, f"--data.init_args.data_path={tmp_path}/missing.csv.gz",
                  f"--trainer.default_root_dir={tmp_path}", *SMALL])


def test_single_class_batch_and_bad_labels_are_reported():
    mod = MetricLearningModule(SmallCNN(1, 8, width=4), MultiSimilarityLoss())
    emb = torch.randn(6, 8)
    with pytest.raises(ValueError, match="single class"):
        mod._check_batch(emb, torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match=r"expected shape \[6\]"):
        mod._check_batch(emb, torch.zeros(5, dtype=torch.long))


def test_atomic_save_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "a.ckpt"
    atomic_torch_save({"v": 1}, path)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_torch_save({"v": Boom()}, path)
    assert torch.load(path) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.ckpt"]
