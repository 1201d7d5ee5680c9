"""experiments/report.py: TensorBoard event files -> paper-shaped markdown table + Recall@K PNG."""
from pathlib import Path

import pytest

from scripts import load_script


@pytest.fixture(scope="module")
def report():
    return load_script("experiments/report.py")


def _write_run(folder: Path, series):
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(folder / "lightning_logs" / "version_0"))
    for step, metrics in series:
        for k, v in metrics.items():
            w.add_scalar(k, v, step)
    w.close()


def test_report_table_and_plot(tmp_path, report, capsys):
    import matplotlib  # noqa: F401  (the dev extra installs it; a missing one fails, not skips)
    cub = [(10, {"val/recall@1": 0.50, "val/recall@2": 0.60, "val/recall@4": 0.70, "val/recall@8": 0.80,
                 "val/map@r": 0.20, "val/r_precision": 0.30}),
           (20, {"val/recall@1": 0.62, "val/recall@2": 0.71, "val/recall@4": 0.80, "val/recall@8": 0.87,
                 "val/map@r": 0.25, "val/r_precision": 0.35}),
           (30, {"val/recall@1": 0.61, "val/recall@2": 0.72, "val/recall@4": 0.81, "val/recall@8": 0.88,
                 "val/map@r": 0.26, "val/r_precision": 0.36})]
    _write_run(tmp_path / "cub200_resnet50", cub)
    sop = [(5, {f"val/recall@{k}": v for k, v in zip((1, 10, 100, 1000), (0.7, 0.85, 0.93, 0.97))}
               | {"val/map@r": 0.4, "val/r_precision": 0.45})]
    _write_run(tmp_path / "baselines" / "sop_resnet50_ms", sop)
    assert report.main([str(tmp_path)]) == 0
    md = (tmp_path / "report.md").read_text()
    # best recall@1 epoch (step 20), values in %
    assert "| cub200_resnet50 | 62.0 | 71.0 | 80.0 | 87.0 | 25.0 | 35.0 | 20 |" in md
    assert "| run | R@1 | R@10 | R@100 | R@1000 | MAP@R | RP | step |" in md
    assert "| baselines/sop_resnet50_ms | 70.0 | 85.0 | 93.0 | 97.0 | 40.0 | 45.0 | 5 |" in md
    png = (tmp_path / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # outputs are not replaced without --overwrite; --select last picks step 30
    assert report.main([str(tmp_path)]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert report.main([str(tmp_path), "--select", "last", "--overwrite"]) == 0
    assert "| cub200_resnet50 | 61.0 | 72.0 | 81.0 | 88.0 | 26.0 | 36.0 | 30 |" in (tmp_path / "report.md").read_text()


def test_report_no_runs(tmp_path, report, capsys):
    assert report.main([str(tmp_path)]) == 1
    assert "no run under" in capsys.readouterr().err
