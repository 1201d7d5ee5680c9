"""The README demo: does GCA-HNG help? Multi-Similarity vs MS + GCA-HNG on MNIST-5k pairs.

MNIST-5k pairs (:class:`graphneg.data.MNIST5kPairsDataModule`): 100 two-digit classes made of real
digits, train on 0-49, zero-shot retrieval on the unseen 50-99, train / test images built from disjoint
halves of the source digits. Trains the configured runs through the same LightningCLI the ``graphneg``
command uses (``experiments/mnist_pairs_*.yaml``), then prints Recall@1/2/4/8 and MAP@R on the test
classes for raw pixels, the untrained network and each trained network (mean ± half-width of the 95%
t confidence interval over seeds) and the per-seed paired MAP@R difference GCA-HNG − N-pair.

    python experiments/demo.py                          # MS vs MS + GCA-HNG, 3 seeds (README table)
    python experiments/demo.py --runs N-pair "N-pair + GCA-HNG"   # the official N-pair baseline instead
    python experiments/demo.py --seeds 0 --epochs 4     # a quick look

The full study (5 seeds, MS loss, ablations, diagnostics) is ``experiments/gca_hng_study.py``.
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
    "MS": ROOT / "experiments" / "mnist_pairs_ms.yaml",
    "MS + GCA-HNG": ROOT / "experiments" / "mnist_pairs_ms_gca_hng.yaml",
    "N-pair": ROOT / "experiments" / "mnist_pairs_npair.yaml",
    "N-pair + GCA-HNG": ROOT / "experiments" / "mnist_pairs_gca_hng.yaml",
}
DEFAULT_RUNS = ["MS", "MS + GCA-HNG"]  # the clearest difference in experiments/results/gca_hng_study.md


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
        "--config", str(config), f"--seed_everything={seed}", f"--data.init_args.seed={seed}",
        f"--trainer.max_epochs={epochs}",
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
        cli.model.train()  # Lightning keeps the mode it finds: without this BatchNorm would train in eval mode
    with quiet_lightning():  # no cloud-service tips / Lightning-internal deprecation warnings
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    cli.model.eval()
    rows["trained"] = evaluate(cli.model.encoder, loader)
    return rows, cli.trainer.logger.log_dir


def ci95(vals: List[float]) -> float:
    """Half-width of the 95% t confidence interval of the mean (Student t, n - 1 dof)."""
    from scipy import stats

    return float(stats.t.ppf(0.975, len(vals) - 1) * statistics.stdev(vals) / len(vals) ** 0.5)


def fmt(vals: List[float]) -> str:
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    return f"{statistics.mean(vals):.3f} ± {ci95(vals):.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=None, help="override each config's max_epochs")
    p.add_argument("--runs", nargs="+", default=DEFAULT_RUNS, choices=list(RUNS))
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
        f"MNIST-5k pairs zero-shot retrieval (train classes 00-49, test on the unseen 50-99), "
        f"seeds {args.seeds}, {time.time() - t0:.0f} s; mean ± 95% CI over seeds",
        "",
        "| embedding | " + " | ".join(k.replace("recall", "R") .replace("map@r", "MAP@R") for k in KEYS) + " |",
        "|---|" + "---|" * len(KEYS),
    ]
    for label, res in table.items():
        lines.append(f"| {label} | " + " | ".join(fmt(res[k]) for k in KEYS) + " |")
    for name in args.runs:
        base = name.replace(" + GCA-HNG", "")
        if name == base or base not in table or name not in table:
            continue
        d = [y - x for x, y in zip(table[base]["map@r"], table[name]["map@r"])]
        lines += ["", f"MAP@R difference {name} − {base}, paired per seed: "
                  + ", ".join(f"{v:+.3f}" for v in d)
                  + (f"; mean {fmt(d)}" if len(d) > 1 else "")
                  + f"; GCA-HNG higher on {sum(v > 0 for v in d)}/{len(d)} seeds"]
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
