"""Compare InfoNCE, DCL, HCL, UnReMix and the UnReMix ablation on MNIST-5k, MUTAG and Cuneiform.

Every (dataset, loss, seed) run trains a fresh encoder with :class:`graphneg.models.ContrastiveModule`
(MNIST-5k) or :class:`graphneg.models.GraphContrastiveModule` (MUTAG, Cuneiform) under Lightning and
then measures the downstream accuracy of the frozen encoder with the probes of :mod:`graphneg.callbacks`
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
import logging
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, List

import lightning as L
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from graphneg.callbacks import KNNProbe, LinearProbe, SVCProbe  # noqa: E402
from graphneg.data import MNIST5kDataModule, TUDataModule  # noqa: E402
from graphneg.data.image_augment import digit_views  # noqa: E402
from graphneg.losses import DebiasedContrastiveLoss, HCLLoss, InfoNCELoss, UnReMixLoss  # noqa: E402
from graphneg.models import ContrastiveModule, GINEncoder, GraphContrastiveModule, SmallCNN  # noqa: E402

T, TAU_PLUS, BETA = 0.5, 0.1, 1.0
DATASETS = {"mnist5k": None, "mutag": "MUTAG", "cuneiform": "Cuneiform"}


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


def make_loss(name: str) -> torch.nn.Module:
    if name == "infonce":
        return InfoNCELoss(T)
    if name == "dcl":
        return DebiasedContrastiveLoss(T, TAU_PLUS)
    if name == "hcl":
        return HCLLoss(T, TAU_PLUS, BETA)
    if name == "unremix":
        return UnReMixLoss(T, TAU_PLUS, BETA, weights=ABLATION.get("sim_unc_rep", (1.0, 1.0, 1.0)))
    if name.startswith("unremix_") and name[len("unremix_"):] in ABLATION:
        return UnReMixLoss(T, TAU_PLUS, BETA, weights=ABLATION[name[len("unremix_"):]])
    raise SystemExit(f"unknown loss {name!r}; choose from {LOSSES}")


def loss_label(name: str) -> str:
    if name.startswith("unremix_"):
        w = ABLATION[name[len("unremix_"):]]
        return f"UnReMix {name[len('unremix_'):].replace('_', '+')} (w={list(int(x) if x.is_integer() else x for x in w)})"
    return {"infonce": "InfoNCE", "dcl": "DCL", "hcl": "HCL", "unremix": "UnReMix (sim+unc+rep)"}[name]


def trainer(epochs: int, **kw) -> L.Trainer:
    return L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                     accelerator="cpu", devices=1, **kw)


# ------------------------------------------------------------------------------------ MNIST-5k
class CachedViewsMNIST(L.LightningDataModule):
    """MNIST-5k stratified split; training views pre-computed per epoch (same for every loss).

    ``train_dataloader`` serves epoch ``e``'s cached pair of views (the Trainer reloads it every
    epoch); ``train_eval_dataloader`` / ``test_dataloader`` are the base DataModule's (all 4,000
    training digits un-augmented / the 1,000 test digits).
    """

    def __init__(self, train_per_class: int, epochs: int, seed: int, batch_size: int = 64):
        super().__init__()
        self.base = MNIST5kDataModule(mode="contrastive", split="stratified", eval_batch_size=1000)
        self.base.setup()
        labels = self.base.train_set.labels
        keep = torch.cat([(labels == c).nonzero(as_tuple=True)[0][:train_per_class] for c in range(10)])
        keep = keep.sort().values
        images = self.base.train_set.images[keep]
        self.labels = labels[keep]
        self.batch_size, self.seed = batch_size, seed
        # stronger than the DataModule's default digit views (crop 0.6-1, no jitter): crop 0.3-1 and
        # brightness/contrast jitter; SimCLRViews normalises, so the images are used as [0, 1] floats
        views = digit_views(crop_scale=(0.3, 1.0), strength=0.5)
        gen_state = torch.get_rng_state()
        torch.manual_seed(10_000 + seed)
        self.cache = []
        for _ in range(epochs):
            pairs = [views(img.float() / 255.0) for img in images]
            self.cache.append((torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])))
        torch.set_rng_state(gen_state)

    def train_dataloader(self):
        e = self.trainer.current_epoch if self.trainer is not None else 0
        v1, v2 = self.cache[e % len(self.cache)]
        g = torch.Generator().manual_seed(self.seed * 1000 + e)
        return DataLoader(TensorDataset(v1, v2, self.labels), batch_size=self.batch_size, shuffle=True,
                          drop_last=True, generator=g)

    def train_eval_dataloader(self):
        return self.base.train_eval_dataloader()

    def test_dataloader(self):
        return self.base.test_dataloader()

    val_dataloader = test_dataloader


def mnist_module(loss: torch.nn.Module, seed: int) -> ContrastiveModule:
    L.seed_everything(seed, verbose=False)
    return ContrastiveModule(SmallCNN(1, 64, width=16), loss, projector_dims=(128, 64), lr=2e-3,
                             weight_decay=1e-6, log_histograms=False)


def mnist_probe_run(loss, seed: int, epochs: int, dm: CachedViewsMNIST, train: bool = True) -> Dict[str, float]:
    """Train the MNIST-5k module with ``loss`` (``train=False``: the encoder at its initialisation) and
    probe it: weighted kNN (k=20) and linear top-1; ``{"knn", "linear", "fit_s"}``."""
    model = mnist_module(loss, seed)
    t0 = time.time()
    if train:
        trainer(epochs, reload_dataloaders_every_n_epochs=1).fit(model, dm)
    fit_s = time.time() - t0
    knn = KNNProbe(k=20, temperature=0.1).evaluate(model, dm)["knn_top1"]
    linear = LinearProbe(epochs=50, seed=seed).evaluate(model, dm)["linear_top1"]
    return {"knn": knn, "linear": linear, "fit_s": fit_s}


def run_mnist(loss_name: str, seed: int, epochs: int, dm: CachedViewsMNIST) -> Dict[str, float]:
    untrained = loss_name == "untrained"
    return mnist_probe_run(InfoNCELoss(T) if untrained else make_loss(loss_name), seed, epochs, dm,
                           train=not untrained)


# ------------------------------------------------------------------------------------ graphs
def run_graph(name: str, loss_name: str, seed: int, epochs: int, root: str) -> Dict[str, float]:
    dm = TUDataModule(name, root=root, batch_size=128, augment="random4", aug_ratio=0.2, seed=seed)
    dm.setup()
    L.seed_everything(seed, verbose=False)
    loss = make_loss(loss_name) if loss_name != "untrained" else InfoNCELoss(T)
    model = GraphContrastiveModule(GINEncoder(dm.num_features, 32, 3), loss, lr=1e-3,
                                   log_histograms=False)
    t0 = time.time()
    if loss_name != "untrained":
        trainer(epochs).fit(model, dm)
    fit_s = time.time() - t0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="svc_protocol: the smallest class")
        res = SVCProbe(seed=seed).evaluate(model, dm)
    return {"svc": res["svc_acc"], "svc_fold_std": res["svc_std"], "fit_s": fit_s}


# ------------------------------------------------------------------------------------ report
def mean_std(xs: List[float]) -> str:
    if not xs:
        return "-"
    m = sum(xs) / len(xs)
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return f"{100 * m:.1f} ± {100 * s:.1f}"


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
                "| loss | kNN top-1 | linear top-1 | runs | fit s/run |",
                "|---|---|---|---|---|",
            ]
            for name in ["untrained"] + args.losses:
                rs = [r for r in sub if r["loss"] == name]
                if rs:
                    label = "untrained encoder" if name == "untrained" else loss_label(name)
                    fit = sum(r["fit_s"] for r in rs) / len(rs)
                    lines.append(f"| {label} | {mean_std([r['knn'] for r in rs])} | "
                                 f"{mean_std([r['linear'] for r in rs])} | {len(rs)} | {fit:.0f} |")
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
                "| loss | SVC accuracy | mean fold std | runs | fit s/run |",
                "|---|---|---|---|---|",
            ]
            for name in ["untrained"] + args.losses:
                rs = [r for r in sub if r["loss"] == name]
                if rs:
                    label = "untrained encoder" if name == "untrained" else loss_label(name)
                    fold = 100 * sum(r["svc_fold_std"] for r in rs) / len(rs)
                    fit = sum(r["fit_s"] for r in rs) / len(rs)
                    lines.append(f"| {label} | {mean_std([r['svc'] for r in rs])} | {fold:.1f} | {len(rs)} | "
                                 f"{fit:.0f} |")
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
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
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
    torch.set_num_threads(args.threads)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)

    if args.report_only:
        lines = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
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
            cache = None
            if ds == "mnist5k":
                t0 = time.time()
                cache = CachedViewsMNIST(args.train_per_class, epochs[ds], seed)
                print(f"[mnist5k] seed {seed}: views cached in {time.time() - t0:.0f}s", flush=True)
            for loss_name in ["untrained"] + args.losses:
                t0 = time.time()
                if ds == "mnist5k":
                    res = run_mnist(loss_name, seed, epochs[ds], cache)
                else:
                    res = run_graph(DATASETS[ds], loss_name, seed, epochs[ds], args.tu_root)
                row = {"dataset": ds, "loss": loss_name, "seed": seed, "epochs": epochs[ds], **res,
                       "total_s": time.time() - t0}
                rows.append(row)
                with open(jsonl, "a") as f:
                    f.write(json.dumps(row) + "\n")
                done += 1
                per_run = (time.time() - start) / done
                print(f"[{ds}] seed {seed} {loss_name:>16}: " + ", ".join(
                    f"{k}={v:.4f}" for k, v in res.items() if k != "fit_s") +
                    f" ({time.time() - t0:.0f}s; ~{per_run * (n_runs - done) / 60:.1f} min left)", flush=True)
        print(f"[{ds}] done in {(time.time() - ds_start) / 60:.1f} min", flush=True)
        write_report(rows, args, out, meta(), epochs)
    text = write_report(rows, args, out, meta(), epochs)
    with open(jsonl, "a") as f:
        f.write(json.dumps({"_meta": meta()}) + "\n")
    print(text)
    print(f"wrote {out} and {jsonl}")


if __name__ == "__main__":
    from graphneg.cli import quiet_lightning

    with quiet_lightning():  # no cloud-service tips / Lightning-internal deprecation warnings
        main()
