"""Compare InfoNCE, DCL, HCL, UnReMix and the UnReMix ablation on MNIST-5k, MUTAG and Cuneiform.

Every (dataset, loss, seed) run trains a fresh encoder through the ``graphneg`` CLI, as
``graphneg fit --config experiments/mnist5k_views.yaml`` (MNIST-5k) or ``--config
experiments/unremix/mutag.yaml`` (MUTAG, Cuneiform) with the run's loss, seed and recipe as overrides
(``experiments/_common.py`` ``run_config``), and then measures the downstream accuracy of the frozen encoder with the probes of :mod:`graphneg.callbacks`
(``KNNProbe`` / ``LinearProbe`` / ``SVCProbe``, their ``evaluate(model, datamodule)``):

* MNIST-5k (stratified split of the 5,000 digits: 400 train / 100 test per class): weighted kNN
  (k = 20, t = 0.1) and a linear probe (50 epochs) fit on the 4,000 un-augmented training digits and
  scored on the 1,000 test digits. Training uses the first ``--train-per-class`` training digits of
  each class (CPU budget) with two SimCLR views per digit, pre-computed once per seed for all losses
  (every loss of a seed sees the same views and batch order).
* MUTAG / Cuneiform (the real TU files of the grakel wheel): the InfoGraph / GraphCL SVC protocol
  on the embeddings of all graphs (10-fold stratified CV, Cuneiform 8 folds: classes of 8 graphs;
  inner grid over C in 1e-3..1e3).

The "untrained" row evaluates the randomly initialised encoder of the same seed. Losses share
t = 0.5, tau_plus = 0.1, beta = 1 (the experiments/unremix configs); the UnReMix ablation weights are
read from experiments/unremix/ablation/*.yaml. Results go to experiments/results/contrastive_comparison.md
(mean and std over seeds), with raw per-run numbers in a .jsonl next to it (appended as runs finish,
so an interrupted run still leaves its numbers).

    python experiments/compare_contrastive.py                      # the full comparison
    python experiments/compare_contrastive.py --quick              # a smoke run (~2 min)
    python experiments/compare_contrastive.py --datasets mutag --losses infonce unremix --seeds 0 1
    python experiments/compare_contrastive.py --report-only       # re-render the table from the .jsonl
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from _common import (  # noqa: E402
    STUDY_TRAINER, append_jsonl, atomic_write, build_cli, class_arg, markdown_table, quiet_study, read_jsonl, run_config,
)
from graphneg.callbacks import KNNProbe, LinearProbe, SVCProbe  # noqa: E402
from graphneg.data import TUDataModule  # noqa: E402

T, TAU_PLUS, BETA = 0.5, 0.1, 1.0
DATASETS = {"mnist5k": None, "mutag": "MUTAG", "cuneiform": "Cuneiform"}
#: the configs the runs train through (``graphneg fit --config ...``), with per-run overrides
MNIST_CONFIG = ROOT / "experiments" / "mnist5k_views.yaml"
TU_CONFIG = ROOT / "experiments" / "unremix" / "mutag.yaml"
RUNS = ROOT / "runs" / "studies"


def ablation_weights() -> Dict[str, tuple]:
    """UnReMix ablation weights from experiments/unremix/ablation/<name>.yaml."""
    out = {}
    for f in sorted(glob.glob(str(ROOT / "experiments" / "unremix" / "ablation" / "*.yaml"))):
        cfg = yaml.safe_load(open(f))
        w = cfg["model"]["init_args"]["loss"]["init_args"]["weights"]
        out[Path(f).stem] = tuple(float(x) for x in w)
    return out


ABLATION = ablation_weights()
LOSSES = ["infonce", "dcl", "hcl", "unremix"] + [f"unremix_{k}" for k in ABLATION if k != "sim_unc_rep"]


def loss_spec(class_name: str, **init_args) -> dict:
    """A loss as the config's ``model.init_args.loss``: ``{"class_path": "graphneg.losses.<class_name>",
    "init_args": init_args}``."""
    return {"class_path": f"graphneg.losses.{class_name}", "init_args": init_args}


def make_loss(name: str) -> dict:
    """The config entry of loss ``name`` (:func:`loss_spec`)."""
    if name == "infonce":
        return loss_spec("InfoNCELoss", temperature=T)
    if name == "dcl":
        return loss_spec("DebiasedContrastiveLoss", temperature=T, tau_plus=TAU_PLUS)
    if name == "hcl":
        return loss_spec("HCLLoss", temperature=T, tau_plus=TAU_PLUS, beta=BETA)
    # density: the representativeness UnReMixLoss defaulted to when contrastive_comparison.md was measured
    ur = dict(temperature=T, tau_plus=TAU_PLUS, beta=BETA, k=10, representativeness="density")
    if name == "unremix":
        return loss_spec("UnReMixLoss", **ur, weights=list(ABLATION.get("sim_unc_rep", (1.0, 1.0, 1.0))))
    if name.startswith("unremix_") and name[len("unremix_"):] in ABLATION:
        return loss_spec("UnReMixLoss", **ur, weights=list(ABLATION[name[len("unremix_"):]]))
    raise SystemExit(f"unknown loss {name!r}; choose from {LOSSES}")


def loss_label(name: str) -> str:
    if name.startswith("unremix_"):
        w = ABLATION[name[len("unremix_"):]]
        return f"UnReMix {name[len('unremix_'):].replace('_', '+')} (w={list(int(x) if x.is_integer() else x for x in w)})"
    return {"infonce": "InfoNCE", "dcl": "DCL", "hcl": "HCL", "unremix": "UnReMix (sim+unc+rep)"}[name]


def study_cli(config: Path, loss: dict, seed: int, epochs: int, overrides: Sequence[str], run_dir: Path,
              train: bool):
    """``graphneg fit --config CONFIG`` with the study's trainer settings (:data:`_common.STUDY_TRAINER`),
    ``seed`` for the initialisation and the data, ``loss`` as the model's loss and ``overrides``; trained
    (``train=True``) or at its initialisation. Returns ``(cli, fit_s)``."""
    args = [*STUDY_TRAINER, f"--seed_everything={seed}", f"--data.init_args.seed={seed}",
            f"--trainer.max_epochs={epochs}", class_arg("model.init_args.loss", loss["class_path"], **loss["init_args"]), *overrides]
    if not train:
        return build_cli(config, args, run_dir), 0.0
    metrics, cli = run_config(config, args, run_dir, return_cli=True)
    return cli, metrics["fit_s"]


# ------------------------------------------------------------------------------------ MNIST-5k
def mnist_probe_run(loss: dict, seed: int, epochs: int, train_per_class: int, train: bool = True,
                    run_dir: Optional[Path] = None) -> Dict[str, float]:
    """Train the MNIST-5k recipe (``experiments/mnist5k_views.yaml``) with ``loss`` (a config entry,
    :func:`loss_spec`; ``train=False``: the encoder at its initialisation) and probe it: weighted kNN
    (k=20, t=0.1) and linear (50 epochs, seeded with ``seed``) top-1 on the 1,000 test digits;
    ``{"knn", "linear", "fit_s"}``."""
    run_dir = run_dir or RUNS / "mnist5k" / f"seed{seed}"
    cli, fit_s = study_cli(MNIST_CONFIG, loss, seed, epochs, [
        f"--data.init_args.epochs={epochs}", f"--data.init_args.train_per_class={train_per_class}"], run_dir, train)
    model, dm = cli.model, cli.datamodule
    dm.setup()
    knn = KNNProbe(k=20, temperature=0.1).evaluate(model, dm)["knn_top1"]
    linear = LinearProbe(epochs=50, seed=seed).evaluate(model, dm)["linear_top1"]
    return {"knn": knn, "linear": linear, "fit_s": fit_s}


def run_mnist(loss_name: str, seed: int, epochs: int, train_per_class: int) -> Dict[str, float]:
    untrained = loss_name == "untrained"
    return mnist_probe_run(make_loss("infonce" if untrained else loss_name), seed, epochs, train_per_class,
                           train=not untrained)


# ------------------------------------------------------------------------------------ graphs
def tu_num_features(name: str, root: str, use_node_attr: bool = False) -> int:
    """Node feature width of TU dataset ``name``: passed to the GIN as ``in_channels`` so that its layers are
    initialised right after seeding, before the projection head (as ``GINEncoder(num_features, ...)``)."""
    dm = TUDataModule(name, root=root, use_node_attr=use_node_attr)
    dm.setup()
    return dm.num_features


def graph_cli(name: str, loss: dict, seed: int, epochs: int, root: str, train: bool, lr: float = 1e-3,
              augment: str = "random4", hidden: int = 32, pooling: str = "sum", scheduler: str = "none",
              node_attr: bool = False, std_attr: bool = False, run_dir: Optional[Path] = None):
    """``experiments/unremix/mutag.yaml`` on TU dataset ``name`` with a graph training recipe (GIN 3 x
    ``hidden``, ``pooling``, Adam ``lr``, ``scheduler``, GraphCL ``augment`` of ratio 0.2, batch 128, node
    attributes): ``(cli, fit_s)``, trained unless ``train=False``."""
    run_dir = run_dir or RUNS / name.lower() / f"seed{seed}"
    overrides = [
        f"--data.init_args.name={name}", f"--data.init_args.root={root}", "--data.init_args.batch_size=128",
        f"--data.init_args.augment={augment}", "--data.init_args.aug_ratio=0.2",
        f"--data.init_args.use_node_attr={str(node_attr).lower()}",
        f"--data.init_args.standardize_node_attr={str(std_attr).lower()}",
        f"--model.init_args.encoder.init_args.in_channels={tu_num_features(name, root, node_attr)}",
        f"--model.init_args.encoder.init_args.hidden_channels={hidden}",
        "--model.init_args.encoder.init_args.num_layers=3",
        f"--model.init_args.encoder.init_args.pooling={pooling}",
        f"--model.init_args.lr={lr}", "--model.init_args.weight_decay=0.0",
        f"--model.init_args.scheduler={scheduler}", "--model.init_args.log_histograms=false",
    ]
    return study_cli(TU_CONFIG, loss, seed, epochs, overrides, run_dir, train)


def run_graph(name: str, loss_name: str, seed: int, epochs: int, root: str) -> Dict[str, float]:
    untrained = loss_name == "untrained"
    cli, fit_s = graph_cli(name, make_loss("infonce" if untrained else loss_name), seed, epochs, root,
                           train=not untrained)
    cli.datamodule.setup()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="svc_protocol: the smallest class")
        res = SVCProbe(seed=seed).evaluate(cli.model, cli.datamodule)
    return {"svc": res["svc_acc"], "svc_fold_std": res["svc_std"], "fit_s": fit_s}


# ------------------------------------------------------------------------------------ report
def mean_std(xs: List[float]) -> str:
    if not xs:
        return "-"
    m = sum(xs) / len(xs)
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return f"{100 * m:.1f} ± {100 * s:.1f}"


def loss_table(sub: List[dict], losses: List[str], header: List[str], cells) -> List[str]:
    """Markdown table of one dataset: a row per loss with runs (``untrained`` first), the ``cells(rows)``
    of its runs under ``header``, the number of runs and the mean fit time."""
    rows = []
    for name in ["untrained"] + losses:
        rs = [r for r in sub if r["loss"] == name]
        if rs:
            label = "untrained encoder" if name == "untrained" else loss_label(name)
            rows.append([label, *cells(rs), len(rs), f"{sum(r['fit_s'] for r in rs) / len(rs):.0f}"])
    return markdown_table(["loss", *header, "runs", "fit s/run"], rows)


def write_report(rows: List[dict], args, out: Path, meta: dict, epochs: Dict[str, int]) -> str:
    lines = [
        "# Contrastive losses on offline data: InfoNCE, DCL, HCL, UnReMix and the UnReMix ablation",
        "",
        f"Produced by `{meta['command']}` ({meta['date']}, {meta['machine']}, {meta['threads']} torch "
        f"thread(s), CPU only, a shared 2-core machine; wall time {meta['wall_s'] / 60:.1f} min).",
        "",
        "Settings: seeds " + ", ".join(str(s) for s in args.seeds) + "; losses share t = 0.5, tau_plus = 0.1, "
        "beta = 1; UnReMix k = 10; Adam, no scheduler. Accuracies in %, mean ± sample std over seeds "
        "(per-run numbers in the .jsonl next to this file). `untrained` = the same encoder at its "
        "random initialisation (same seeds).",
        "",
    ]
    for ds in args.datasets:
        sub = [r for r in rows if r["dataset"] == ds]
        if not sub:
            continue
        if ds == "mnist5k":
            lines += [
                f"## MNIST-5k — SmallCNN (width 16, 64-d), {epochs[ds]} epochs on {10 * args.train_per_class} "
                f"training digits ({args.train_per_class} per class), batch 64, lr 2e-3, projector 64->128->64",
                "",
                "Views: crop (0.3, 1), rotation ±10°, translation 10%, brightness/contrast jitter 0.4 (p 0.8), "
                "pre-computed per seed. Evaluation: 4,000 un-augmented training digits as kNN bank / probe "
                "set, 1,000 test digits; kNN k = 20, t = 0.1; linear probe 50 epochs (Adam, lr 1e-2).",
                "",
            ]
            lines += loss_table(sub, args.losses, ["kNN top-1", "linear top-1"],
                                lambda rs: [mean_std([r["knn"] for r in rs]), mean_std([r["linear"] for r in rs])])
        else:
            title = {"mutag": "MUTAG (188 graphs, 2 classes, 10 folds)",
                     "cuneiform": "Cuneiform (267 graphs, 30 classes, 8 folds)"}[ds]
            lines += [
                f"## {title} — GIN 3 x 32 (sum pooling, 96-d), {epochs[ds]} epochs, batch 128, lr 1e-3, "
                "GraphCL head 96->96->96, augmentation random4 (ratio 0.2)",
                "",
                "Evaluation: SVC (RBF) on the embeddings of all graphs, stratified CV with an inner grid over "
                "C in 1e-3..1e3 (InfoGraph / HCL protocol); the fold std is averaged over seeds.",
                "",
            ]
            lines += loss_table(sub, args.losses, ["SVC accuracy", "mean fold std"],
                                lambda rs: [mean_std([r["svc"] for r in rs]),
                                            f"{100 * sum(r['svc_fold_std'] for r in rs) / len(rs):.1f}"])
        lines.append("")
    lines += [
        "## Notes",
        "",
        "* `UnReMix sim (w=[1, 0, 0])` has HCL's importance weights but detached (`UnReMixLoss(detach_scores=True)`, "
        "the scores are weights, not a gradient path), while `HCLLoss` back-propagates through "
        "`exp(beta s / t)` as the HCL reference code does; the two rows therefore differ.",
        "* The std columns are over 3 seeds (encoder init, batch order, augmentations); with 188 / 267 graphs "
        "one graph is 0.5 / 0.4 points of accuracy, so graph differences below the seed std are noise.",
        "* The untrained GIN (random weights, sum pooling) is a strong baseline under the SVC protocol on "
        "both graph datasets.",
        "",
    ]
    text = "\n".join(lines)
    atomic_write(out, text)
    return text


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--losses", nargs="+", default=LOSSES, choices=LOSSES)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=None, help="epochs for every dataset (overrides the next two)")
    p.add_argument("--mnist-epochs", type=int, default=4)
    p.add_argument("--graph-epochs", type=int, default=20)
    p.add_argument("--train-per-class", type=int, default=150, help="MNIST training digits per class (<= 400)")
    p.add_argument("--tu-root", default=str(ROOT / "datasets" / "tu"))
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)")
    p.add_argument("--quick", action="store_true", help="1 seed, 2 losses, 2 / 3 epochs, 30 digits per class")
    p.add_argument("--out", default=None, help="markdown output (default experiments/results/contrastive_comparison.md)")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite the markdown from the finished run's .jsonl (no training)")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.mnist_epochs, args.graph_epochs, args.train_per_class = [0], 2, 3, 30
        if args.losses == LOSSES:
            args.losses = ["infonce", "unremix"]
    if args.epochs is not None:
        args.mnist_epochs = args.graph_epochs = args.epochs
    epochs = {"mnist5k": args.mnist_epochs, "mutag": args.graph_epochs, "cuneiform": args.graph_epochs}
    default_out = "contrastive_comparison_quick.md" if args.quick else "contrastive_comparison.md"
    out = Path(args.out) if args.out else ROOT / "experiments" / "results" / default_out
    jsonl = out.with_suffix(".jsonl")
    quiet_study(args.threads)

    if args.report_only:
        lines = read_jsonl(jsonl)
        meta = next(r["_meta"] for r in lines if "_meta" in r)
        rows = [r for r in lines if "_meta" not in r]
        args.seeds = meta["seeds"]
        args.datasets = [d for d in DATASETS if any(r["dataset"] == d for r in rows)]
        args.losses = [n for n in LOSSES if any(r["loss"] == n for r in rows)]
        args.train_per_class = meta["train_per_class"]
        print(write_report(rows, args, out, meta, meta["epochs"]))
        return
    start = time.time()
    rows: List[dict] = []
    jsonl.write_text("")

    def meta() -> dict:
        return {"command": " ".join(["python experiments/compare_contrastive.py", *sys.argv[1:]]).strip(),
                "date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
                "threads": torch.get_num_threads(), "wall_s": time.time() - start, "seeds": args.seeds,
                "train_per_class": args.train_per_class, "epochs": epochs}

    n_runs = len(args.datasets) * len(args.seeds) * (len(args.losses) + 1)
    done = 0
    for ds in args.datasets:
        ds_start = time.time()
        for seed in args.seeds:
            for loss_name in ["untrained"] + args.losses:
                t0 = time.time()
                if ds == "mnist5k":
                    res = run_mnist(loss_name, seed, epochs[ds], args.train_per_class)
                else:
                    res = run_graph(DATASETS[ds], loss_name, seed, epochs[ds], args.tu_root)
                row = {"dataset": ds, "loss": loss_name, "seed": seed, "epochs": epochs[ds], **res,
                       "total_s": time.time() - t0}
                rows.append(row)
                append_jsonl(jsonl, row)
                done += 1
                per_run = (time.time() - start) / done
                print(f"[{ds}] seed {seed} {loss_name:>16}: " + ", ".join(
                    f"{k}={v:.4f}" for k, v in res.items() if k != "fit_s") +
                    f" ({time.time() - t0:.0f}s; ~{per_run * (n_runs - done) / 60:.1f} min left)", flush=True)
        print(f"[{ds}] done in {(time.time() - ds_start) / 60:.1f} min", flush=True)
        write_report(rows, args, out, meta(), epochs)
    text = write_report(rows, args, out, meta(), epochs)
    append_jsonl(jsonl, {"_meta": meta()})
    print(text)
    print(f"wrote {out} and {jsonl}")


if __name__ == "__main__":
    from graphneg.cli import quiet_lightning

    with quiet_lightning():  # no cloud-service tips / Lightning-internal deprecation warnings
        main()
