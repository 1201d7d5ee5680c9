"""The graphneg CLI: a short fit on real MNIST-5k data, TensorBoard events, atomic checkpoints,
resume, and clear errors for bad configs / data."""
import glob
import os
import warnings

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


def _state(cli):
    """Every tensor of the run's state: module parameters and buffers, optimiser states."""
    out = {f"model.{k}": v for k, v in cli.model.state_dict().items()}
    for i, opt in enumerate(cli.trainer.optimizers):
        for pid, st in opt.state_dict()["state"].items():
            for k, v in st.items():
                out[f"opt{i}.{pid}.{k}"] = torch.as_tensor(v)
    return out


def test_fit_logs_checkpoints_and_resumes_last_run(tmp_path, caplog):
    """fit 1 epoch; `--ckpt_path last` with max_epochs 2 continues at epoch 1 and ends in the state of an
    uninterrupted 2-epoch run (scheduler none: a cosine schedule spans trainer.max_epochs, so changing
    max_epochs on resume changes it by design)."""
    base = ["fit", "--config", CONFIG, "--model.init_args.scheduler=none", *SMALL]
    cli = cli_main([*base, f"--trainer.default_root_dir={tmp_path}/a", "--trainer.max_epochs=1"])
    logdir = cli.trainer.logger.log_dir
    events = glob.glob(os.path.join(logdir, "events.out.tfevents.*"))
    assert events, "no TensorBoard event file written"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(logdir)
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("train/loss_epoch", "val/recall@1", "val/map@r", "val/r_precision"):
        assert tag in tags, (tag, tags)
    assert "lr/encoder" in tags  # MetricLearningModule names its learning rates (LR_NAMES)
    ckpts = glob.glob(os.path.join(logdir, "checkpoints", "*.ckpt"))
    assert any(c.endswith("last.ckpt") for c in ckpts)
    assert not glob.glob(os.path.join(logdir, "checkpoints", ".*tmp*"))
    steps_per_epoch = cli.trainer.global_step
    assert steps_per_epoch == 3
    # a later run that crashed before its first checkpoint (an empty version folder) is skipped
    os.makedirs(os.path.join(tmp_path, "a", "lightning_logs", "version_7"))
    caplog.clear()
    caplog.set_level("INFO")
    resumed = cli_main([*base, f"--trainer.default_root_dir={tmp_path}/a", "--trainer.max_epochs=2",
                        "--ckpt_path=last"])
    assert f"resuming from {logdir}/checkpoints/last.ckpt" in caplog.text
    assert resumed.trainer.logger.log_dir != logdir  # the resumed run logs to a new version folder
    assert resumed.trainer.current_epoch == 2 and resumed.trainer.global_step == 2 * steps_per_epoch
    straight = cli_main([*base, f"--trainer.default_root_dir={tmp_path}/b", "--trainer.max_epochs=2"])
    a, b = _state(resumed), _state(straight)
    assert a.keys() == b.keys() and len(a) > 10
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, differ
    # the saved module reloads
    last = os.path.join(resumed.trainer.logger.log_dir, "checkpoints", "last.ckpt")
    mod = MetricLearningModule.load_from_checkpoint(
        last, encoder=SmallCNN(1, 64, width=8), loss=MultiSimilarityLoss(mining=True), weights_only=False
    )
    assert torch.equal(mod.encoder.fc[-1].weight, straight.model.encoder.fc[-1].weight)


def test_ckpt_path_last_without_a_run_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--ckpt_path last: no earlier run has a checkpoint that loads .*version_\*"):
        cli_main(["fit", "--config", CONFIG, f"--trainer.default_root_dir={tmp_path}", "--ckpt_path=last", *SMALL])


def test_saved_config_round_trips(tmp_path, capsys, caplog):
    """A run's config.yaml passed back to `graphneg fit --config` gives the same configuration (and holds no
    unserialisable plugin); the GCA-HNG config's linked dim / num_classes are recomputed from their sources."""
    gca = os.path.join(os.path.dirname(CONFIG), "mnist_gca_hng.yaml")
    args = ["fit", "--config", gca, f"--trainer.default_root_dir={tmp_path}", "--trainer.max_epochs=1",
            "--trainer.limit_val_batches=0", "--model.init_args.encoder.init_args.embedding_dim=16",
            "--model.init_args.generator.init_args.num_layers=1", *SMALL]
    caplog.set_level("INFO")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = cli_main(args)
    shown = capsys.readouterr().err + caplog.text + "\n".join(str(w.message) for w in caught)
    assert "GPU available" in caplog.text  # Lightning's own information is shown ...
    for hidden in ("Unable to serialize", "litlogger", "LightningCLI's args parameter", "LeafSpec"):
        assert hidden not in shown, hidden  # ... its advertisements and spurious warnings are not
    saved = os.path.join(cli.trainer.logger.log_dir, "config.yaml")
    text = open(saved).read()
    assert "plugins: null" in text and "Unable" not in text and "detect_nan: true" in text
    assert "in_channels: 1" in text  # kept although it is a link target (the link's source is absent here)
    again = cli_main(["fit", "--config", saved, f"--trainer.default_root_dir={tmp_path}/again"])
    a, b = cli.config["fit"].clone(), again.config["fit"].clone()
    for ns in (a, b):
        ns.pop("config", None), ns["trainer"].pop("default_root_dir")
    assert a == b
    gen = again.model.generator
    assert (gen.dim, gen.num_classes) == (16, 5) and again.model.classifier.out_features == 5
    # the same run: identical final weights
    s1, s2 = cli.model.state_dict(), again.model.state_dict()
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)


def test_user_plugins_keep_atomic_writes_and_nan_switch(tmp_path):
    cli = cli_main(["--config", CONFIG, f"--trainer.default_root_dir={tmp_path}",
                    "--trainer.plugins=lightning.fabric.plugins.TorchCheckpointIO", "--detect_nan=false", *SMALL],
                   run=False)
    from lightning.fabric.plugins import TorchCheckpointIO

    from graphneg.checkpoint import AtomicCheckpointIO, DetectNaN

    io = cli.trainer.strategy.checkpoint_io
    assert isinstance(io, AtomicCheckpointIO) and type(io.checkpoint_io) is TorchCheckpointIO
    assert not any(isinstance(c, DetectNaN) for c in cli.trainer.callbacks)
    cli2 = cli_main(["--config", CONFIG, f"--trainer.default_root_dir={tmp_path}", *SMALL], run=False)
    assert sum(isinstance(c, DetectNaN) for c in cli2.trainer.callbacks) == 1


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
    mod = MetricLearningModule(SmallCNN(1, 8, width=4), MultiSimilarityLoss(mining=True))
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


# ------------------------------------------------------------------ issue 12: in_channels from the data
UNREMIX = os.path.join(os.path.dirname(__file__), "..", "experiments", "unremix")


def test_tu_config_without_in_channels_fits_on_mutag(tmp_path):
    """experiments/unremix/mutag.yaml has no in_channels: GraphContrastiveModule.setup() builds the GIN
    encoder from the DataModule's num_features; the value is checked against the raw MUTAG node-label
    file (one-hot atom types: its number of distinct labels)."""
    import importlib.util
    from pathlib import Path

    from graphneg.models import GINEncoder

    cfg = os.path.join(UNREMIX, "mutag.yaml")
    assert not any(line.strip().startswith("in_channels:") for line in open(cfg))
    raw = Path(importlib.util.find_spec("grakel").submodule_search_locations[0]) / "tests" / "data" / "MUTAG"
    n_atom_types = len({line.strip() for line in open(raw / "MUTAG_node_labels.txt") if line.strip()})
    cli = cli_main(["fit", "--config", cfg, f"--data.init_args.root={tmp_path}/tu",
                    f"--trainer.default_root_dir={tmp_path}/run", "--trainer.fast_dev_run=true",
                    "--trainer.enable_progress_bar=false", "--trainer.callbacks=[]",
                    "--model.init_args.encoder.init_args.hidden_channels=8"])
    enc = cli.model.encoder
    assert isinstance(enc, GINEncoder)
    assert enc.in_channels == n_atom_types == cli.datamodule.num_features == 7
    first = enc.convs[0].nn[0].weight
    assert tuple(first.shape) == (8, 7)
    # the lazily built layers are trained: they are in the optimiser and took a step
    opt_params = {id(p) for g in cli.trainer.optimizers[0].param_groups for p in g["params"]}
    assert all(id(p) in opt_params for p in enc.parameters())
    assert cli.trainer.global_step == 1
    assert cli.trainer.optimizers[0].state[first]["step"] == 1


def test_image_config_with_function_encoder_still_parses():
    """cifar10.yaml's encoder class_path is a function (graphneg.models.resnet18) with in_channels: 3."""
    cli = cli_main(["--config", os.path.join(UNREMIX, "cifar10.yaml"), "--trainer.logger=false"], run=False)
    assert type(cli.model.encoder).__name__ == "CifarResNet"
    convs = [m for m in cli.model.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].in_channels == 3


def test_gin_encoder_built_later_equals_built_at_once():
    from graphneg.models import GINEncoder

    torch.manual_seed(3)
    now = GINEncoder(5, hidden_channels=4, num_layers=2)
    torch.manual_seed(3)
    later = GINEncoder(None, hidden_channels=4, num_layers=2)
    assert later.in_channels is None and len(list(later.parameters())) == 0
    assert later.out_channels == 8  # known before build (the projector is sized from it)
    x, ei = torch.randn(3, 5), torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    with pytest.raises(ValueError, match=r"in_channels=None and has no layers yet.*build"):
        later(x, ei)
    torch.manual_seed(3)  # the same random stream as `now`'s layers
    later.build(5)
    a, b = now.state_dict(), later.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    torch.testing.assert_close(later(x, ei), now(x, ei), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"already has its layers \(in_channels=5\)"):
        later.build(5)
    with pytest.raises(ValueError, match="in_channels must be a positive integer"):
        GINEncoder(None).build(0)


def test_tu_config_without_in_channels_resumes_and_tests(tmp_path):
    """setup() builds the encoder before Lightning restores a checkpoint: `--ckpt_path last` resumes and
    `test --ckpt_path <file>` loads the trained weights into the lazily built layers."""
    cfg = os.path.join(UNREMIX, "mutag.yaml")
    base = [f"--data.init_args.root={tmp_path}/tu", f"--trainer.default_root_dir={tmp_path}/run",
            "--trainer.enable_progress_bar=false", "--trainer.callbacks=[]", "--trainer.limit_train_batches=1",
            "--trainer.limit_val_batches=0", "--trainer.log_every_n_steps=1",
            "--model.init_args.encoder.init_args.hidden_channels=8"]
    first = cli_main(["fit", "--config", cfg, *base, "--trainer.max_epochs=1"])
    resumed = cli_main(["fit", "--config", cfg, *base, "--trainer.max_epochs=2", "--ckpt_path=last"])
    assert resumed.trainer.global_step == 2 * first.trainer.global_step == 2
    last = os.path.join(resumed.trainer.logger.log_dir, "checkpoints", "last.ckpt")
    tested = cli_main(["test", "--config", cfg, *base, f"--ckpt_path={last}"])
    saved = torch.load(last, map_location="cpu", weights_only=False)["state_dict"]
    got = tested.model.state_dict()
    assert saved.keys() == got.keys() and all(torch.equal(saved[k], got[k]) for k in saved)
    assert torch.equal(got["encoder.convs.0.nn.0.weight"], resumed.model.encoder.convs[0].nn[0].weight)


def test_fit_prints_its_evaluation_metrics(tmp_path, capsys):
    """The end of `graphneg fit` prints the run's evaluation metrics: each printed value equals the last value
    of that tag in the run's TensorBoard event file, and a fit-end probe's results (logged after the training
    loop, so absent from trainer.callback_metrics) are printed too."""
    import lightning as L
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    class FitEndProbe(L.Callback):  # stands in for graphneg.callbacks' probes: `results` filled at train end
        def __init__(self):
            self.results = {}

        def on_train_end(self, trainer, pl_module):
            self.results["probe/accuracy"] = 0.25

    cli = cli_main(["--config", CONFIG, f"--trainer.default_root_dir={tmp_path}", "--trainer.max_epochs=1", *SMALL],
                   run=False)
    cli.trainer.callbacks.append(FitEndProbe())
    cli.before_fit()
    cli.trainer.fit(cli.model, cli.datamodule)
    capsys.readouterr()
    cli.after_fit()
    out = capsys.readouterr().out
    printed = {}
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) == 2:
            printed[parts[0]] = float(parts[1])
    acc = EventAccumulator(cli.trainer.logger.log_dir)
    acc.Reload()
    for tag in ("val/recall@1", "val/map@r", "val/r_precision"):
        assert printed[tag] == pytest.approx(acc.Scalars(tag)[-1].value, abs=5e-5), tag
    assert printed["probe/accuracy"] == 0.25
    assert "global step 3" in out and cli.trainer.logger.log_dir in out


def test_rank_zero_only_writers_make_no_collective_call(tmp_path, monkeypatch):
    """The config writer and the end-of-fit summary run on rank zero only; under DDP a collective call there
    (``trainer.log_dir`` broadcasts) waits for ranks that never make it. Both find the run's folder without
    one: the logger's log_dir, without a logger trainer.default_root_dir (tests/test_reliability.py runs
    the 2-process case, marked slow)."""
    from graphneg.cli import format_fit_summary, run_log_dir

    def no_collective(*args, **kwargs):
        raise AssertionError("a collective call on rank zero only")

    for extra, expected in (([], os.path.join(str(tmp_path), "lightning_logs", "version_0")),
                            (["--trainer.logger=false"], str(tmp_path))):
        cli = cli_main(["--config", CONFIG, f"--trainer.default_root_dir={tmp_path}", *SMALL, *extra], run=False)
        monkeypatch.setattr(cli.trainer.strategy, "broadcast", no_collective)
        assert run_log_dir(cli.trainer) == expected
        assert f"logs: {expected}  (tensorboard --logdir {expected})" in format_fit_summary(cli.trainer)
