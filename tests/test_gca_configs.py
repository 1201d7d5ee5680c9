"""Every config under experiments/gca_hng/ runs on a fixture folder in its dataset's official layout, with
the override line of issue 13 (weights null, 4 x 2 batches, fast_dev_run 2) plus image_size 32 / resize 36 /
num_workers 0 so that a ResNet-50 step stays cheap on a 2-core CPU.

Default suite: one config of each backbone (cub200_resnet50, inshop_googlenet: the same-set and the
query/gallery protocol). The other 18 are marked ``slow`` (``nox -s slow``), only to keep the default
suite fast: each one builds an ImageNet backbone and runs two training and evaluation steps.
"""
import math
import re
import warnings
from pathlib import Path

import pytest
import torch

from graphneg.cli import cli_main
from retrieval_fixtures import MAKERS

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "experiments" / "gca_hng").rglob("*.yaml"))
DEFAULT = {"cub200_resnet50.yaml", "inshop_googlenet.yaml"}


def _dataset(cfg: Path) -> str:
    return cfg.name.split("_")[0]


@pytest.fixture(scope="module")
def fixture_roots(tmp_path_factory):
    roots = {}
    for name, make in MAKERS.items():
        roots[name], _ = make(tmp_path_factory.mktemp(name))
    return roots


def test_config_set_is_complete():
    names = {c.relative_to(ROOT / "experiments" / "gca_hng").as_posix() for c in CONFIGS}
    for ds in ("cub200", "cars196", "sop", "inshop"):
        for bb in ("resnet50", "googlenet"):
            assert f"{ds}_{bb}.yaml" in names
        for loss in ("npair", "ms", "proxy_anchor"):
            assert f"baselines/{ds}_resnet50_{loss}.yaml" in names
    for c in CONFIGS:
        assert "Should reproduce" in c.read_text(), c


@pytest.mark.parametrize(
    "cfg",
    [pytest.param(c, marks=() if c.name in DEFAULT and c.parent.name == "gca_hng" else pytest.mark.slow,
                  id=c.relative_to(ROOT / "experiments" / "gca_hng").as_posix()) for c in CONFIGS],
)
def test_config_runs_on_fixture(cfg, fixture_roots, tmp_path):
    torch.set_num_threads(1)
    ds = _dataset(cfg)
    args = [
        "fit", "--config", str(cfg),
        "--data.init_args.root", str(fixture_roots[ds]),
        "--model.init_args.encoder.init_args.weights", "null",
        "--data.init_args.classes_per_batch", "4", "--data.init_args.samples_per_class", "2",
        "--trainer.fast_dev_run", "2",
        "--data.init_args.image_size", "32", "--data.init_args.resize", "36", "--data.init_args.num_workers", "0",
        "--trainer.default_root_dir", str(tmp_path), "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false",
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = cli_main(args)
    metrics = cli.trainer.callback_metrics
    from graphneg.metrics.retrieval import RECALL_KS

    n_eval = cli.model._last_eval[0].size(0)  # the fixture's (tiny) validation set
    for k in RECALL_KS[ds]:
        v = float(metrics[f"val/recall@{k}"])
        if ds != "inshop":  # same-set protocol: K needs K <= N - 1 references, else nan (never a fake 1.0)
            assert math.isnan(v) == (k > n_eval - 1), (k, n_eval, v)
        assert math.isnan(v) or 0.0 <= v <= 1.0
    assert 0.0 <= float(metrics["val/recall@1"]) <= 1.0
    assert 0.0 < float(metrics["val/map@r"]) <= 1.0
    assert torch.isfinite(metrics["train/loss"])
    assert ("val/nmi" in metrics) == (ds in ("cub200", "cars196"))


# --------------------------------------------------------------------------- header claims vs what runs
CLAIMS = {
    "batch": r"batch (\d+) classes x (\d+) images",
    "gnn": r"(\d+) GCA block\(s\) x (\d+) heads",
    "alpha_beta": r"alpha ([\d.]+), beta ([\d.]+)",
    "dot_div": r"dot/div weights ([\d.]+)/([\d.]+)",
    "softmax": r"softmax factor ([\d.]+)",
    "encoder": r"encoder AdamW lr ([\d.e-]+) with StepLR\((\d+), ([\d.]+)\)",
    "gnn_lr": r"GNN lr ([\d.e-]+) cosine",
    "classifier_lr": r"classifier lr ([\d.e-]+)",
    "weight_decay": r"weight decay ([\d.e-]+)",
    "clip": r"grad value clip ([\d.]+)",
    "warmup": r"warm-up (\d+) epoch",
    "bn_freeze": r"BN freeze (True|False)",
    "epochs": r"(\d+) epochs, eval every (\d+)",
}
MAIN = [c for c in CONFIGS if c.parent.name == "gca_hng"]
# default suite: both BN freeze claims of GoogLeNet and one ResNet-50; the other five are `slow` (each builds an
# ImageNet backbone)
HEADER_DEFAULT = {"cub200_googlenet.yaml", "sop_googlenet.yaml", "cub200_resnet50.yaml"}
BASELINES = [c for c in CONFIGS if c.parent.name == "baselines"]


def _header(cfg: Path) -> str:
    lines = []
    for line in cfg.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(lines)


def _claims(cfg: Path) -> dict:
    text = _header(cfg)
    out = {}
    for name, pattern in CLAIMS.items():
        m = re.search(pattern, text)
        assert m is not None, f"{cfg.name}: the header states no {name!r} ({pattern})"
        out[name] = m.groups()
    return out


def _optimisers(model):
    """(optimizers, {id(optimizer): scheduler}) from configure_optimizers, whichever return form it uses."""
    out = model.configure_optimizers()
    scheds = []
    if isinstance(out, tuple):
        opts, scheds = list(out[0]), list(out[1])
    elif isinstance(out, list) and out and isinstance(out[0], dict):
        opts = [d["optimizer"] for d in out]
        scheds = [d["lr_scheduler"] for d in out if d.get("lr_scheduler") is not None]
    else:
        opts = list(out) if isinstance(out, (list, tuple)) else [out]
    scheds = [s["scheduler"] if isinstance(s, dict) else s for s in scheds]
    return opts, {id(s.optimizer): s for s in scheds}


def _owner(opts, param):
    owners = [o for o in opts if any(p is param for g in o.param_groups for p in g["params"])]
    assert len(owners) == 1
    return owners[0]


@pytest.mark.parametrize("cfg", [pytest.param(c, id=c.name, marks=() if c.name in HEADER_DEFAULT else pytest.mark.slow)
                                 for c in MAIN])
def test_header_claims_match_what_the_config_instantiates(cfg, fixture_roots, tmp_path):
    """Every claim of a benchmark config's header (batch layout, GNN size, alpha / beta, loss weights, the
    three learning rates and their schedules, weight decay, clipping, warm-up, BN freeze, epochs) equals
    what the CLI builds from it; the BN claim is checked on the encoder's behaviour after ``train()``."""
    torch.set_num_threads(1)
    c = _claims(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = cli_main(["--config", str(cfg), "--model.init_args.encoder.init_args.weights", "null",
                        "--data.init_args.root", str(fixture_roots[_dataset(cfg)]),
                        "--trainer.default_root_dir", str(tmp_path)], run=False)
    model, dm, trainer, gen = cli.model, cli.datamodule, cli.trainer, cli.model.generator
    hp = model.hparams
    assert (dm.classes_per_batch, dm.samples_per_class) == tuple(int(v) for v in c["batch"])
    assert (gen.gnn.num_layers, gen.gnn.heads) == tuple(int(v) for v in c["gnn"])
    assert (gen.alpha, hp.synthetic_beta) == tuple(float(v) for v in c["alpha_beta"])
    assert (gen.dot_weight, gen.div_weight) == tuple(float(v) for v in c["dot_div"])
    assert gen.softmax_factor == float(c["softmax"][0])
    assert hp.grad_clip == float(c["clip"][0])
    assert hp.warmup_epochs == int(c["warmup"][0])
    assert (trainer.max_epochs, trainer.check_val_every_n_epoch) == tuple(int(v) for v in c["epochs"])
    # optimisers and schedules: encoder AdamW + StepLR, GNN AdamW + cosine, classifier AdamW constant
    opts, sched = _optimisers(model)
    enc = _owner(opts, next(model.encoder.parameters()))
    gnn = _owner(opts, next(gen.parameters()))
    cls = [o for o in opts if o is not enc and o is not gnn]
    assert len(cls) == 1 and all(isinstance(o, torch.optim.AdamW) for o in opts)
    lr, step, gamma = c["encoder"]
    assert enc.param_groups[0]["lr"] == pytest.approx(float(lr))
    assert enc.param_groups[0]["weight_decay"] == pytest.approx(float(c["weight_decay"][0]))
    s = sched.get(id(enc))
    assert isinstance(s, torch.optim.lr_scheduler.StepLR) and (s.step_size, s.gamma) == (int(step), float(gamma))
    assert gnn.param_groups[0]["lr"] == pytest.approx(float(c["gnn_lr"][0]))
    assert isinstance(sched.get(id(gnn)), torch.optim.lr_scheduler.CosineAnnealingLR)
    assert cls[0].param_groups[0]["lr"] == pytest.approx(float(c["classifier_lr"][0]))
    if id(cls[0]) in sched:  # constant classifier rate: no scheduler, or one that keeps the rate
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # stepping a scheduler before its optimizer
            for _ in range(3):
                sched[id(cls[0])].step()
        assert cls[0].param_groups[0]["lr"] == pytest.approx(float(c["classifier_lr"][0]))
    # BN freeze: the backbone's BatchNorm2d layers stay in eval mode after train()
    model.train()
    bns = [m for m in model.encoder.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    frozen = c["bn_freeze"][0] == "True"
    assert bns and all(b.training != frozen for b in bns)
    # the official N-pair real-pair term (NPairLoss(anchors='official'))
    assert type(model.loss).__name__ == "NPairLoss" and model.loss.anchors == "official"


def _yaml(cfg: Path) -> dict:
    import yaml

    return yaml.safe_load(cfg.read_text())


@pytest.mark.parametrize("cfg", BASELINES, ids=[c.name for c in BASELINES])
def test_baseline_header_claims_same_setting_as_its_gca_config(cfg):
    """"Same data, backbone, batch, optimiser and schedule as ../X.yaml, generator removed": the YAML values
    equal X's (generator settings aside), and the N-pair baselines use the official real-pair term."""
    m = re.search(r"as \.\./(\w+\.yaml)", _header(cfg))
    assert m is not None, cfg.name
    base, ours = _yaml(cfg.parent.parent / m.group(1)), _yaml(cfg)
    assert ours["trainer"] == {**base["trainer"], "default_root_dir": ours["trainer"]["default_root_dir"]}
    assert ours["data"] == base["data"]
    assert ours["model"]["init_args"]["encoder"] == base["model"]["init_args"]["encoder"]
    assert "generator" not in ours["model"]["init_args"]
    for key in ("lr", "weight_decay", "grad_clip", "warmup_epochs", "scheduler", "lr_step_size", "lr_gamma"):
        assert ours["model"]["init_args"].get(key) == base["model"]["init_args"].get(key), key
    if ours["model"]["init_args"]["loss"]["class_path"].endswith("NPairLoss"):
        assert ours["model"]["init_args"]["loss"]["init_args"]["anchors"] == "official"
