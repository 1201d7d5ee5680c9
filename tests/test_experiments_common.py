"""experiments/_common.py: statistics, tables, JSONL, /proc memory and the config runner, against
hand-computed values and the files a run writes."""
import json
import math
import os

import pytest
import torch

from scripts import load_script

common = load_script("experiments/_common.py")

# two-sided 95% Student t quantiles t_{0.975, dof} from a printed table (NIST/SEMATECH e-Handbook 1.3.6.7.2)
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 9: 2.262}


def test_mean_ci_hand_computed():
    # [1..5]: mean 3, sample std sqrt(2.5), half = t_{.975,4} sqrt(2.5) / sqrt(5)
    m, h = common.mean_ci([1, 2, 3, 4, 5])
    assert m == 3.0
    assert h == pytest.approx(T975[4] * math.sqrt(2.5) / math.sqrt(5), abs=1e-3)
    # two values 0.1, 0.3: std 0.1 * sqrt(2), half = 12.706 * 0.1 * sqrt(2) / sqrt(2)
    assert common.mean_ci([0.1, 0.3])[1] == pytest.approx(1.2706, abs=1e-4)
    xs = [0.2, 0.5, 0.1, 0.9, 0.4, 0.3, 0.8, 0.7, 0.6, 0.0]  # mean 0.45, var sum((x-.45)^2)/9 = 0.825/9
    assert common.mean_ci(xs)[1] == pytest.approx(T975[9] * math.sqrt(0.825 / 9) / math.sqrt(10), abs=1e-4)
    # 90% interval, 4 dof: t_{0.95,4} = 2.132
    assert common.mean_ci([1, 2, 3, 4, 5], 0.90)[1] == pytest.approx(2.132 * math.sqrt(0.5), abs=1e-3)
    m1, h1 = common.mean_ci([0.7])
    assert m1 == 0.7 and math.isnan(h1)
    with pytest.raises(ValueError, match="values is empty"):
        common.mean_ci([])
    with pytest.raises(ValueError, match="confidence must be in"):
        common.mean_ci([1, 2], 95)


def test_fmt_ci_and_paired():
    assert common.fmt_ci([0.1, 0.3], scale=100, digits=1) == "20.0 ± 127.1"
    assert common.fmt_ci([0.5]) == "0.500"
    assert common.fmt_ci([]) == "-"
    a = {0: 0.80, 1: 0.70, 2: 0.90, 3: 0.60}
    b = {0: 0.75, 1: 0.72, 2: 0.80, 4: 0.10}  # seed 3 / 4 unpaired
    seeds, d = common.paired_differences(a, b)
    assert seeds == [0, 1, 2] and d == pytest.approx([0.05, -0.02, 0.10])
    s = common.paired_summary(a, b)
    # diffs 0.05, -0.02, 0.10: mean 0.0433.., std sqrt(((.05-.04333)^2+(-.02-.04333)^2+(.1-.04333)^2)/2)
    mean = 0.13 / 3
    std = math.sqrt(((0.05 - mean) ** 2 + (-0.02 - mean) ** 2 + (0.10 - mean) ** 2) / 2)
    assert s["n"] == 3 and s["wins"] == 2 and s["mean"] == pytest.approx(mean)
    assert s["half"] == pytest.approx(T975[2] * std / math.sqrt(3), abs=1e-4)
    assert common.fmt_paired(a, b, scale=100, digits=1, expect_n=5).endswith(" (n=3)")
    assert common.fmt_paired(a, b, scale=100, digits=1, expect_n=3) == f"{100 * mean:.1f} ± {100 * s['half']:.1f}"
    assert common.fmt_paired(a, {9: 1.0}) == "-"
    rows = [{"loss": "hcl", "seed": 0, "acc": 0.5}, {"loss": "dcl", "seed": 0, "acc": 0.6},
            {"loss": "hcl", "seed": 1, "acc": 0.7}]
    assert common.by_seed(rows, "acc", loss="hcl") == {0: 0.5, 1: 0.7}


def test_markdown_table():
    lines = common.markdown_table(["run", "R@1"], [["a", 1.5], ["b", "-"]], align="lr")
    assert lines == ["| run | R@1 |", "|---|---:|", "| a | 1.5 |", "| b | - |"]
    assert common.markdown_table(["x"], [])[1] == "|---|"
    with pytest.raises(ValueError, match="a row has 1 cells for 2 columns"):
        common.markdown_table(["a", "b"], [["x"]])
    with pytest.raises(ValueError, match="align characters"):
        common.markdown_table(["a"], [], align="x")


def test_jsonl_round_trip_and_atomic_write(tmp_path):
    path = tmp_path / "sub" / "runs.jsonl"
    assert common.read_jsonl(path) == []
    common.append_jsonl(path, {"seed": 0, "acc": 0.5})
    common.append_jsonl(path, {"seed": 1, "acc": float("0.25")})
    assert path.read_text() == '{"seed": 0, "acc": 0.5}\n{"seed": 1, "acc": 0.25}\n'
    path.write_text(path.read_text() + "\n")  # a blank line is skipped
    assert common.read_jsonl(path) == [{"seed": 0, "acc": 0.5}, {"seed": 1, "acc": 0.25}]
    out = tmp_path / "deep" / "t.md"
    common.atomic_write(out, "x\n")
    assert out.read_text() == "x\n" and os.listdir(out.parent) == ["t.md"]


def test_proc_status_and_peak_rss(tmp_path):
    fake = tmp_path / "status"
    fake.write_text("Name:\tpython\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n")
    assert common.proc_status_bytes("VmRSS", fake) == 1024 * 1024
    assert common.proc_status_bytes("VmHWM", fake) == 2048 * 1024
    with pytest.raises(RuntimeError, match="VmSwap not in"):
        common.proc_status_bytes("VmSwap", fake)
    # a fresh process (in a long test session freed heap memory may already be resident and be reused):
    # 64 MiB touched inside the block must show as at least most of 64 MiB of extra resident memory
    import subprocess
    import sys

    code = ("import sys; sys.path.insert(0, sys.argv[1]); import numpy as np, _common as c\n"
            "with c.PeakRSS() as m:\n    b = np.ones(64 * 2**20, dtype=np.uint8); b.sum(); del b\n"
            "print(m.bytes, m.exact)")
    out = subprocess.run([sys.executable, "-c", code, os.path.join(os.path.dirname(__file__), "..", "experiments")],
                         capture_output=True, text=True, check=True).stdout.split()
    n = 64 * 2**20
    assert 0.9 * n <= int(out[0]) < 4 * n and out[1] in ("True", "False")


def test_cli_args():
    unremix = os.path.join(os.path.dirname(__file__), "..", "experiments", "unremix")
    cfg, sim = os.path.join(unremix, "mutag.yaml"), os.path.join(unremix, "ablation", "sim.yaml")
    assert common.cli_args([cfg, sim], ["--trainer.max_epochs=1"], "runs/x") == [
        "--config", cfg, "--config", sim,
        "--trainer.default_root_dir=runs/x", "--trainer.max_epochs=1"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        common.cli_args("nope.yaml")
    with pytest.raises(ValueError, match="must look like"):
        common.cli_args(cfg, ["trainer.max_epochs=1"])


def test_run_config_reads_back_the_logged_metrics(tmp_path):
    """One training batch of experiments/unremix/mutag.yaml through the CLI: the returned metrics are the
    scalars of the TensorBoard event file the run wrote under run_dir, and the run took one step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = os.path.join(os.path.dirname(__file__), "..", "experiments", "unremix", "mutag.yaml")
    metrics, cli = common.run_config(cfg, [
        f"--data.init_args.root={tmp_path}/tu", "--trainer.limit_train_batches=1",
        "--trainer.enable_progress_bar=false", "--trainer.callbacks=[]", "--trainer.log_every_n_steps=1",
        "--model.init_args.encoder.init_args.hidden_channels=8", "--trainer.max_epochs=2"],
        run_dir=tmp_path / "run", return_cli=True, callbacks=[curve := common.MetricsCurve(["train/"])])
    assert cli.trainer.global_step == 2
    # one curve row per epoch, train/ scalars only, the last one the returned final value
    assert [r["epoch"] for r in curve.rows] == [1, 2]
    assert all(set(r) - {"epoch"} and all(k.startswith("train/") for k in r if k != "epoch") for r in curve.rows)
    assert curve.rows[-1]["train/loss"] == pytest.approx(metrics["train/loss_epoch"], rel=1e-6)
    (logdir,) = {p.parent for p in (tmp_path / "run").rglob("events.out.tfevents.*")}
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    logged = {t: acc.Scalars(t)[-1].value for t in acc.Tags()["scalars"]}
    assert "train/loss_epoch" in logged and "train/loss_epoch" in metrics
    for tag, value in logged.items():
        if tag in metrics:
            assert metrics[tag] == pytest.approx(value, rel=1e-6)
    assert metrics["fit_s"] > 0
    saved = json.dumps(metrics)  # plain floats: storable in a JSONL record
    assert json.loads(saved)["train/loss_epoch"] == pytest.approx(logged["train/loss_epoch"], rel=1e-6)


def test_mnist5k_views_config_is_the_studies_recipe():
    """experiments/mnist5k_views.yaml builds what compare_contrastive.py / unremix_study.py train: SmallCNN
    width 16 -> 64-d, projector 64 -> 128 -> 64, Adam lr 2e-3, wd 1e-6, cached views of 150 digits per class
    for 4 epochs in batches of 64, a fresh dataloader every epoch, no validation loop."""
    from graphneg.data.views import CachedViewsMNIST5kDataModule
    from graphneg.losses import InfoNCELoss
    from graphneg.models import ContrastiveModule, SmallCNN

    cfg = os.path.join(os.path.dirname(__file__), "..", "experiments", "mnist5k_views.yaml")
    cli = common.build_cli(cfg, ["--trainer.logger=false", "--trainer.callbacks=[]"])
    model, dm, trainer = cli.model, cli.datamodule, cli.trainer
    assert isinstance(model, ContrastiveModule) and isinstance(model.encoder, SmallCNN)
    assert (model.encoder.embedding_dim, model.encoder.features[0].out_channels) == (64, 16)
    assert [m.out_features for m in model.projector.modules() if isinstance(m, torch.nn.Linear)] == [128, 64]
    assert isinstance(model.loss, InfoNCELoss) and model.loss.temperature == 0.5
    assert (model.hparams.lr, model.hparams.weight_decay, model.hparams.optimizer) == (2e-3, 1e-6, "adam")
    assert isinstance(dm, CachedViewsMNIST5kDataModule)
    assert (dm.train_per_class, dm.epochs, dm.batch_size, dm.seed) == (150, 4, 64, 0)
    assert (trainer.max_epochs, trainer.reload_dataloaders_every_n_epochs, trainer.limit_val_batches) == (4, 1, 0)


def test_atomic_write_text_is_a_deprecated_alias(tmp_path):
    with pytest.warns(DeprecationWarning, match="use atomic_write"):
        common.atomic_write_text(tmp_path / "a.txt", "é\n")
    assert (tmp_path / "a.txt").read_bytes() == "é\n".encode()
