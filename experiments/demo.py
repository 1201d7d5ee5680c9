"""The README demo: does GCA-HNG help its paper's baseline? N-pair vs N-pair + GCA-HNG on MNIST-5k pairs.

MNIST-5k pairs (:class:`graphneg.data.MNIST5kPairsDataModule`): 100 two-digit classes made of real digits;
train on the 50 classes with an even digit sum, retrieve the 50 unseen odd-sum combinations (every digit
appears on both sides in training), train and test images built from disjoint halves of the source
digits. Trains each run through the same YAML configs and LightningCLI the ``graphneg`` command uses
(``experiments/mnist_pairs_npair.yaml``, ``experiments/mnist_pairs_gca_hng.yaml``: the paper's pairing,
official head, schedule shape and GNN size, in the regime chosen on validation in
``experiments/results/gca_hng_regime.md``), then prints Recall@1/2/4/8 and MAP@R on the test classes for
raw pixels, the untrained network and each trained network (mean ± half-width of the 95% t interval over
seeds), the per-seed paired MAP@R difference, and a one-line verdict computed from those numbers.

    python experiments/demo.py                      # N-pair vs N-pair + GCA-HNG (+ constant λ), 3 seeds
    python experiments/demo.py --runs N-pair "N-pair + GCA-HNG" --seeds 0   # a quick look

The 5-seed study with MS, the ablations and the diagnostics is ``experiments/gca_hng_study.py``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import atomic_write, build_cli, fmt_ci, markdown_table, paired_summary, quiet_study  # noqa: E402

KEYS = ("val/recall@1", "val/recall@2", "val/recall@4", "val/recall@8", "val/map@r")
NPAIR, GCA = ROOT / "experiments" / "mnist_pairs_npair.yaml", ROOT / "experiments" / "mnist_pairs_gca_hng.yaml"
RUNS = {
    "N-pair": (NPAIR, []),
    "N-pair + GCA-HNG": (GCA, []),
    "N-pair + GCA-HNG, constant λ = 1 (HDML)": (GCA, ["--model.init_args.generator.init_args.fixed_lambda=1.0"]),
}
BASELINE = "N-pair"


def run(name: str, seed: int, root: str, references: bool) -> Dict[str, Dict[str, float]]:
    """Train ``name`` with ``seed`` through the CLI; its test-class scores (and, with ``references``, those of
    raw pixels and of the untrained network, by ``trainer.validate`` before training)."""
    import torch

    from graphneg.cli import quiet_lightning
    from graphneg.models import Flatten, MetricLearningModule

    quiet_study(threads=1)  # after the imports: importing Lightning resets its loggers to INFO

    config, extra = RUNS[name]
    cli = build_cli(config, [f"--seed_everything={seed}", f"--data.init_args.seed={seed}",
                             "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
                             # evaluated once after training (below), not every epoch: same training, less time
                             "--trainer.check_val_every_n_epoch=1000", *extra],
                    Path(root) / name.split(",")[0].replace(" ", "_").replace("+", "") / f"seed{seed}")
    model, dm, trainer = cli.model, cli.datamodule, cli.trainer
    # the random-weighting draws of GCA-HNG's training object, seeded per run
    rw = getattr(getattr(model, "objective", None), "rw_generator", None)
    if isinstance(rw, torch.Generator):
        rw.manual_seed(seed)
    out = {}
    with quiet_lightning():
        if references:
            out["raw pixels"] = trainer.validate(MetricLearningModule(Flatten(), model.loss, eval_nmi=False),
                                                 datamodule=dm, verbose=False)[0]
            out["untrained network"] = trainer.validate(model, datamodule=dm, verbose=False)[0]
        trainer.fit(model, datamodule=dm)
        out[name] = trainer.validate(model, datamodule=dm, verbose=False)[0]
    print(f"  {name}, seed {seed}: MAP@R {out[name]['val/map@r']:.3f}", flush=True)
    return {k: {m: float(v[m]) for m in KEYS} for k, v in out.items()}


def verdict(table: Dict[str, Dict[str, Dict[int, float]]], gca: str = "N-pair + GCA-HNG") -> str:
    """One line from the numbers: the paired MAP@R difference of ``gca`` minus N-pair (its 95% t interval
    decides "higher" / "lower" / "no clear difference"), and where the trained baseline stands against raw
    pixels."""
    if gca not in table or BASELINE not in table:
        return ""
    s = paired_summary(table[gca]["val/map@r"], table[BASELINE]["val/map@r"])
    diff = f"{s['mean']:+.3f} ± {s['half']:.3f} MAP@R, higher on {s['wins']}/{s['n']} seeds"
    if s["n"] < 2:
        word = "higher" if s["mean"] > 0 else "lower"
        head = f"{gca} is {word} than N-pair on the one seed run ({s['mean']:+.3f} MAP@R)"
    elif s["mean"] - s["half"] > 0:
        head = f"{gca} beats N-pair ({diff})"
    elif s["mean"] + s["half"] < 0:
        head = f"{gca} is below N-pair ({diff})"
    else:
        head = f"no clear difference between {gca} and N-pair ({diff}; the 95% interval contains 0)"
    base = statistics.fmean(table[BASELINE]["val/map@r"].values())
    raw = statistics.fmean(table["raw pixels"]["val/map@r"].values()) if "raw pixels" in table else float("nan")
    where = "above" if base > raw else "below"
    return f"Verdict: {head}; trained N-pair is {where} raw pixels ({base:.3f} vs {raw:.3f} MAP@R)."


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="runs in parallel, one torch thread each (default: 2 or the number of CPUs)")
    p.add_argument("--root", default="runs/demo", help="TensorBoard / checkpoint folder")
    p.add_argument("--out", default=None, help="also write the table and verdict to this markdown file")
    args = p.parse_args()
    quiet_study(threads=1)
    jobs = [(name, seed, args.root, name == args.runs[0]) for name in args.runs for seed in args.seeds]
    print(f"training {len(jobs)} runs ({', '.join(args.runs)}; seeds {args.seeds}) in {args.workers} processes",
          flush=True)
    t0 = time.time()
    if args.workers > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
            results = list(pool.map(run, *zip(*jobs)))
    else:
        results = [run(*job) for job in jobs]
    table: Dict[str, Dict[str, Dict[int, float]]] = {}
    for (name, seed, _, _), res in zip(jobs, results):
        for row, scores in res.items():
            for k, v in scores.items():
                table.setdefault(row, {}).setdefault(k, {})[seed] = v
    order = [r for r in ("raw pixels", "untrained network") if r in table] + [r for r in args.runs if r in table]
    rows = []
    for r in order:
        diff = ""
        if r != BASELINE and r in args.runs and BASELINE in table:
            s = paired_summary(table[r]["val/map@r"], table[BASELINE]["val/map@r"])
            diff = f"{fmt_ci(s['diffs'])} ({s['wins']}/{s['n']})"
        rows.append([r, *[fmt_ci(list(table[r][k].values())) for k in KEYS], diff])
    lines = [f"MNIST-5k pairs zero-shot retrieval (train the 50 even-digit-sum classes, test on the 50 unseen "
             f"odd-sum combinations), seeds {args.seeds}, {time.time() - t0:.0f} s; mean ± 95% CI over seeds", ""]
    lines += markdown_table(["embedding", "R@1", "R@2", "R@4", "R@8", "MAP@R", "MAP@R − N-pair, paired (wins)"], rows)
    lines += ["", verdict(table)]
    text = "\n".join(lines)
    print()
    print(text)
    print(f"\nTensorBoard logs: tensorboard --logdir {args.root}")
    if args.out:
        atomic_write(args.out, text + "\n")


if __name__ == "__main__":
    main()
