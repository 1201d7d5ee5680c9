"""experiments/_common.py: statistics, tables, JSONL, /proc memory and the config runner, against
hand-computed values and the files a run writes."""
import json
import math
import os

import pytest

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
    common.atomic_write_text(out, "x\n")
    assert out.read_text() == "x\n" and os.listdir(out.parent) == ["t.md"]


def test_proc_status_and_peak_rss(tmp_path):
    fake = tmp_path / "status"
    fake.write_text("Name:\tpython\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n")
    assert common.proc_status_bytes("VmRSS", fake) == 1024 * 1024
    assert common.proc_status_bytes("VmHWM", fake) == 2048 * 1024
    with pytest.raises(RuntimeError, match="VmSwap not in"):
        common.proc_status_bytes("VmSwap", fake)
    import numpy as np

    n = 64 * 2**20  # 64 MiB touched inside the block: the peak must see at least most of it
    with common.PeakRSS() as m:
        buf = np.ones(n, dtype=np.uint8)
        buf.sum()
        del buf
    assert m.bytes >= 0.9 * n
    assert m.bytes < 4 * n


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
        f"--data.init_args.root={tmp_path}/tu", "--trainer.max_epochs=1", "--trainer.limit_train_batches=1",
        "--trainer.enable_progress_bar=false", "--trainer.callbacks=[]", "--trainer.log_every_n_steps=1",
        "--model.init_args.encoder.init_args.hidden_channels=8"], run_dir=tmp_path / "run", return_cli=True)
    assert cli.trainer.global_step == 1
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
