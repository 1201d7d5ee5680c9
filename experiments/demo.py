"""The README demo: deep metric learning on MNIST-5k's zero-shot split (train digits 0-4, test 5-9).

Trains the configured runs through the same LightningCLI the ``graphneg`` command uses, then prints a
table of Recall@1/2/4/8 and MAP@R on the held-out digits for raw pixels, the untrained network and
each trained network (mean +- std over seeds), and writes it to ``experiments/results/``.

    python experiments/demo.py                      # plain loss vs GCA-HNG, 1 seed (a few minutes)
    python experiments/demo.py --seeds 0 1 2        # the 3-seed table committed under results/
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from graphneg.cli import cli_main, quiet_lightning  # noqa: E402
from graphneg.metrics import retrieval_metrics  # noqa: E402

KEYS = ("recall@1", "recall@2", "recall@4", "recall@8", "map@r")
RUNS = {
    "MS loss": ROOT / "experiments" / "mnist_metric.yaml",
    "MS loss + GCA-HNG": ROOT / "experiments" / "mnist_gca_hng.yaml",
}


@torch.no_grad()
def embed(fn, loader):
    embs, labs = [], []
    for x, y in loader:
        embs.append(fn(x))
        labs.append(y)
    return torch.cat(embs), torch.cat(labs)


def evaluate(fn, loader) -> Dict[str, float]:
    e, y = embed(fn, loader)
    return retrieval_metrics(e, y, ks=(1, 2, 4, 8), nmi=False)


def run(config: Path, seed: int, epochs: int, root: Path, untrained: bool):
    args = [
        "--config", str(config), f"--seed_everything={seed}", f"--trainer.max_epochs={epochs}",
        f"--trainer.default_root_dir={root}", "--trainer.enable_progress_bar=false",
    ]
    cli = cli_main(args, run=False)
    cli.datamodule.setup("fit")
    loader = cli.datamodule.val_dataloader()
    rows = {}
    if untrained:
        rows["raw pixels"] = evaluate(lambda x: x.flatten(1), loader)
        cli.model.eval()
        rows["untrained network"] = evaluate(cli.model.encoder, loader)
    with quiet_lightning():  # no cloud-service tips / Lightning-internal deprecation warnings
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    cli.model.eval()
    rows["trained"] = evaluate(cli.model.encoder, loader)
    return rows, cli.trainer.logger.log_dir


def fmt(vals: List[float]) -> str:
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    return f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs", type=int, default=None, help="override each config's max_epochs")
    p.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    p.add_argument("--root", default="runs/demo", help="TensorBoard / checkpoint folder")
    p.add_argument("--out", default=None, help="markdown file for the table (default: print only)")
    args = p.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    table: Dict[str, Dict[str, List[float]]] = {}
    logdirs = []
    t0 = time.time()
    for name in args.runs:
        epochs = args.epochs or yaml.safe_load(open(RUNS[name]))["trainer"]["max_epochs"]
        for seed in args.seeds:
            print(f"== {name}, seed {seed}, {epochs} epochs", flush=True)
            rows, logdir = run(RUNS[name], seed, epochs, Path(args.root) / name.replace(" ", "_").replace("+", ""),
                               untrained=name == args.runs[0])
            logdirs.append(logdir)
            for row, res in rows.items():
                label = name if row == "trained" else row
                for k in KEYS:
                    table.setdefault(label, {}).setdefault(k, []).append(res[k])
    lines = [
        f"MNIST-5k zero-shot retrieval (train digits 0-4, test 5-9, 2,500 test images), "
        f"seeds {args.seeds}, {time.time() - t0:.0f} s",
        "",
        "| embedding | " + " | ".join(k.replace("recall", "R") .replace("map@r", "MAP@R") for k in KEYS) + " |",
        "|---|" + "---|" * len(KEYS),
    ]
    for label, res in table.items():
        lines.append(f"| {label} | " + " | ".join(fmt(res[k]) for k in KEYS) + " |")
    text = "\n".join(lines)
    print()
    print(text)
    print()
    print("TensorBoard logs:", ", ".join(sorted(set(logdirs))))
    print(f"View them with: tensorboard --logdir {args.root}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
