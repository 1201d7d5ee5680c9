"""GCA-HNG study on MNIST-5k pairs (100 two-digit classes, zero-shot 0-49 / 50-99): does it help, and why?

Three phases, each resumable (a run already in the JSONL file is skipped; results are appended as each
run finishes, so partial results survive):

    python experiments/gca_hng_study.py val      # hyper-parameter search on the validation split
                                                  # (train classes 0-39, evaluate 40-49; test half unread)
    python experiments/gca_hng_study.py test     # the grid: 4 main rows + ablations, 5 seeds, on the
                                                  # test classes 50-99, GCA-HNG settings chosen on val
    python experiments/gca_hng_study.py report   # experiments/results/gca_hng_study.md + PNGs
    python experiments/gca_hng_study.py all      # the three in order (what produced the committed results)

Rows (``test``): the official baseline N-pair loss (:class:`graphneg.losses.NPairLoss`) and
Multi-Similarity, each without and with GCA-HNG; ablations on N-pair + GCA-HNG: lambda replaced by a
constant (``fixed_lambda=1``: plain HDML interpolation), sparse kNN edges instead of the complete graph,
Dirichlet random weighting and no random weighting (instead of the official chain).

Every run records its per-epoch evaluation curve (Recall@K, MAP@R on the evaluation classes) and the
GCA-HNG diagnostics (:func:`graphneg.models.metric.generator_diagnostics`, also logged to TensorBoard).
Reported numbers are the *last* epoch's (no epoch is picked on the test classes).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "experiments" / "results"
JSONL = RESULTS / "gca_hng_study.jsonl"

# ---------------------------------------------------------------- the schedule (sized to ~1 CPU core-hour)
SCHEDULE = dict(
    images_per_class=20,        # composed images per class (train and evaluation)
    classes_per_batch=16,       # official layout: many classes, few samples (CUB: 27 x 3)
    samples_per_class=3,
    epochs=6,
    embedding_dim=32,
    cnn_width=8,
    lr=1e-3,
    weight_decay=1e-4,
    augment=True,
)
# GCA-HNG: official G_CUB200.yml values (alpha 4, beta 30, softmax factor 20, dot / div weight 10,
# GNN lr 3e-4, classifier lr 1e-3, grad value clip 10), with a smaller GNN (1 block x 2 heads instead
# of 2 x 4) so that the grid fits the CPU budget.
GCA_DEFAULT = dict(alpha=4.0, softmax_factor=20.0, dot_weight=10.0, div_weight=10.0, num_layers=1, heads=2,
                   edges="complete", rw="chain")
MODULE_DEFAULT = dict(synthetic_beta=30.0, warmup_epochs=0, generator_lr=3e-4, classifier_lr=1e-3)

# validation search (split="val"): what the paper's behaviour hinges on; one change at a time
VAL_CANDIDATES: Dict[str, dict] = {
    "official": {},
    "alpha=16 (harder)": {"gen": {"alpha": 16.0}},
    "weak generator losses (softmax 5, dot 2.5)": {"gen": {"softmax_factor": 5.0, "dot_weight": 2.5}},
    "warm-up 1 epoch": {"module": {"warmup_epochs": 1}},
}
VAL_SEEDS = [100]
VAL_EPOCHS = None  # the search runs the test grid's schedule


def main_rows(gca: dict) -> Dict[str, dict]:
    """Row name -> run spec (loss, generator kwargs or None, module kwargs)."""
    g, m = gca.get("gen", {}), gca.get("module", {})
    # a warm-up (encoder frozen except its head) chosen for GCA-HNG applies to the baselines too, as in
    # the official train.py (WARM_UP_EPOCH acts on the feature extractor whatever the loss)
    base = {"warmup_epochs": m["warmup_epochs"]} if m.get("warmup_epochs") else {}
    rows = {
        "N-pair": {"loss": "npair", "gen": None, "module": dict(base)},
        "N-pair + GCA-HNG": {"loss": "npair", "gen": {**g}, "module": {**m}},
        "MS": {"loss": "ms", "gen": None, "module": dict(base)},
        "MS + GCA-HNG": {"loss": "ms", "gen": {**g}, "module": {**m}},
    }
    return rows


def ablation_rows(gca: dict) -> Dict[str, dict]:
    g, m = gca.get("gen", {}), gca.get("module", {})
    return {
        "N-pair + GCA-HNG, constant lambda = 1 (HDML)": {"loss": "npair", "gen": {**g, "fixed_lambda": 1.0},
                                                          "module": {**m}},
        "N-pair + GCA-HNG, kNN edges (k=8)": {"loss": "npair", "gen": {**g, "edges": "knn", "k": 8}, "module": {**m}},
        "N-pair + GCA-HNG, Dirichlet weighting": {"loss": "npair", "gen": {**g, "rw": "dirichlet"}, "module": {**m}},
        "N-pair + GCA-HNG, no random weighting": {"loss": "npair", "gen": {**g, "rw": None}, "module": {**m}},
    }


BASELINE_OF = {"npair": "N-pair", "ms": "MS"}

# Diagnosis (phase "diag", validation split, after the grid): which part of the three-step update moves
# the encoder where. J_syn off: synthetic_beta = 0 (weight 1 - exp(0) = 0); J_gce off: node_loss_weight = 0;
# milder negatives: alpha scaled to the loss (MS's J_m ~ 0.8 vs N-pair's ~ 3.5, so alpha 1 gives MS the
# exp(-alpha / J_m) ~ 0.3 that the official alpha 4 gives N-pair); a trained classifier: classifier_lr 1e-2.
def diag_runs(gca: dict) -> Dict[str, dict]:
    g, m = gca.get("gen", {}), gca.get("module", {})
    runs = {}
    for loss, lname in (("ms", "MS"), ("npair", "N-pair")):
        if loss == "ms":  # N-pair's baseline and plain GCA-HNG runs are the validation search's
            runs[f"{lname} (baseline)"] = {"loss": loss, "gen": None}
            runs[f"{lname} + GCA-HNG"] = {"loss": loss, "gen": {**g}, "module": {**m}}
        runs[f"{lname} + GCA-HNG, J_syn off"] = {"loss": loss, "gen": {**g}, "module": {**m, "synthetic_beta": 0.0}}
        runs[f"{lname} + GCA-HNG, J_gce off"] = {"loss": loss, "gen": {**g}, "module": {**m, "node_loss_weight": 0.0}}
    runs["MS + GCA-HNG, alpha=1"] = {"loss": "ms", "gen": {**g, "alpha": 1.0}, "module": {**m}}
    runs["MS + GCA-HNG, classifier lr 1e-2"] = {"loss": "ms", "gen": {**g}, "module": {**m, "classifier_lr": 1e-2}}
    return runs


def followup_rows(records: List[dict], gca: dict) -> Dict[str, dict]:
    """For each loss, the diagnosis variant with the best validation MAP@R, if it beats the plain
    GCA-HNG setting there: run on the test classes with 5 seeds (chosen on validation only)."""
    diag = {r["name"]: r for r in records if r["phase"] == "diag"}
    best_val, _, _ = chosen_gca(records)
    for r in records:
        if r["phase"] == "val" and r["name"] == f"GCA: {best_val}":
            diag.setdefault("N-pair + GCA-HNG", r)
    rows = {}
    for lname in ("MS", "N-pair"):
        plain = diag.get(f"{lname} + GCA-HNG")
        # "J_syn off" is a diagnosis (no generated negatives at all), not a GCA-HNG setting to run
        cands = {n: r for n, r in diag.items() if n.startswith(f"{lname} + GCA-HNG, ") and "J_syn off" not in n}
        if plain is None or not cands:
            continue
        best = max(cands, key=lambda n: cands[n]["final"]["val/map@r"])
        if cands[best]["final"]["val/map@r"] > plain["final"]["val/map@r"]:
            rows[f"{best} (chosen on validation)"] = cands[best]["spec"]
    return rows
TEST_SEEDS = [0, 1, 2, 3, 4]


# ---------------------------------------------------------------- one run
def run_one(spec: dict, seed: int, split: str, schedule: dict, logdir: Optional[Path]) -> dict:
    import lightning as L
    import torch

    from graphneg.data import MNIST5kPairsDataModule
    from graphneg.losses import MultiSimilarityLoss, NPairLoss
    from graphneg.models import MetricLearningModule, SmallCNN
    from graphneg.nn import GCAHNG

    torch.set_num_threads(1)
    s = schedule
    L.seed_everything(seed, verbose=False)
    dm = MNIST5kPairsDataModule(
        split=split, images_per_class=s["images_per_class"], classes_per_batch=s["classes_per_batch"],
        samples_per_class=s["samples_per_class"], augment=s["augment"], seed=seed, eval_batch_size=500,
    )
    num_classes = dm.num_train_classes
    loss = NPairLoss() if spec["loss"] == "npair" else MultiSimilarityLoss(mining=True)
    gen = None
    if spec.get("gen") is not None:
        gen = GCAHNG(s["embedding_dim"], num_classes, **{**GCA_DEFAULT, **spec["gen"]})
    module_kw = {**MODULE_DEFAULT, **spec.get("module", {})} if gen is not None else dict(spec.get("module", {}))
    model = MetricLearningModule(
        SmallCNN(1, s["embedding_dim"], width=s["cnn_width"]), loss, generator=gen, num_classes=num_classes,
        lr=s["lr"], weight_decay=s["weight_decay"], eval_nmi=False, projector_max=100, **module_kw,
    )
    if gen is not None:
        model.objective.rw_generator.manual_seed(seed)

    curve: List[dict] = []

    class Curve(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            row = {"epoch": trainer.current_epoch + 1}
            for k, v in trainer.callback_metrics.items():
                if k.startswith(("val/", "gca/")) or k.endswith("_epoch"):
                    row[k.replace("_epoch", "")] = float(v)
            curve.append(row)

    logger = False
    if logdir is not None:
        from lightning.pytorch.loggers import TensorBoardLogger

        logger = TensorBoardLogger(str(logdir), name="", version=None)
    t0 = time.time()
    trainer = L.Trainer(
        max_epochs=s["epochs"], accelerator="cpu", devices=1, logger=logger, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=10,
        callbacks=[Curve()],
    )
    trainer.fit(model, dm)
    seconds = time.time() - t0
    final = {k: v for k, v in curve[-1].items() if k.startswith("val/")}
    return {"final": final, "curve": curve, "seconds": seconds,
            "logdir": None if logdir is None else str(trainer.logger.log_dir)}


# ---------------------------------------------------------------- bookkeeping
def load(path: Path = JSONL) -> List[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def key(phase: str, name: str, seed: int) -> str:
    return f"{phase}|{name}|{seed}"


def execute(phase: str, runs: Dict[str, dict], seeds: List[int], split: str, args, epochs: int = None) -> None:
    done = {key(r["phase"], r["name"], r["seed"]) for r in load(args.jsonl)}
    schedule = {**SCHEDULE, **({"epochs": epochs} if epochs else {}), **({"epochs": args.epochs} if args.epochs else {})}
    order = [(name, seed) for seed in seeds for name in runs]
    for name, seed in order:
        if key(phase, name, seed) in done:
            continue
        spec = runs[name]
        print(f"[{time.strftime('%H:%M:%S')}] {phase}: {name}, seed {seed}", flush=True)
        logdir = Path(args.logroot) / phase / name.replace(" ", "_").replace(",", "").replace("+", "").replace(
            "(", "").replace(")", "").replace("=", "") / f"seed{seed}" if args.logroot else None
        res = run_one(spec, seed, split, schedule, logdir)
        rec = {"phase": phase, "name": name, "seed": seed, "split": split, "spec": spec, "schedule": schedule,
               "gca_defaults": GCA_DEFAULT, "module_defaults": MODULE_DEFAULT, **res}
        args.jsonl.parent.mkdir(parents=True, exist_ok=True)
        with open(args.jsonl, "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(f"    MAP@R {res['final'].get('val/map@r', float('nan')):.4f}  "
              f"R@1 {res['final'].get('val/recall@1', float('nan')):.4f}  {res['seconds']:.0f} s", flush=True)


def chosen_gca(records: List[dict]) -> tuple:
    """The validation candidate with the best mean validation MAP@R (last epoch), or the official one."""
    scores = {}
    for name in VAL_CANDIDATES:
        vals = [r["final"]["val/map@r"] for r in records if r["phase"] == "val" and r["name"] == f"GCA: {name}"]
        if vals:
            scores[name] = statistics.mean(vals)
    if not scores:
        return "official", VAL_CANDIDATES["official"], scores
    best = max(scores, key=scores.get)
    return best, VAL_CANDIDATES[best], scores


def val_runs() -> Dict[str, dict]:
    runs = {"N-pair (baseline)": {"loss": "npair", "gen": None}}
    for name, c in VAL_CANDIDATES.items():
        runs[f"GCA: {name}"] = {"loss": "npair", "gen": dict(c.get("gen", {})), "module": dict(c.get("module", {}))}
    return runs


# ---------------------------------------------------------------- statistics
def ci95(vals: List[float]) -> tuple:
    """Mean and half-width of the 95% t confidence interval."""
    from scipy import stats

    n = len(vals)
    mean = statistics.mean(vals)
    if n < 2:
        return mean, float("nan")
    return mean, stats.t.ppf(0.975, n - 1) * statistics.stdev(vals) / math.sqrt(n)


def fmt_ci(vals: List[float]) -> str:
    m, h = ci95(vals)
    return f"{m:.3f} ± {h:.3f}" if not math.isnan(h) else f"{m:.3f}"


def report(args) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = load(args.jsonl)
    best, cfg, scores = chosen_gca(recs)
    test = [r for r in recs if r["phase"] == "test"]
    # the follow-up rows were chosen on the diagnosis records of --choose-from when given (the
    # 6-epoch study's for the 24-epoch file), as in the followup phase
    choice = load(args.choose_from) if args.choose_from else recs
    rows = list(main_rows(cfg)) + list(ablation_rows(cfg)) + list(followup_rows(choice, cfg))
    by = {name: {r["seed"]: r for r in test if r["name"] == name} for name in rows}
    keys = ("val/recall@1", "val/recall@2", "val/recall@4", "val/recall@8", "val/map@r")
    out = []
    out.append("| row | seeds | R@1 | R@2 | R@4 | R@8 | MAP@R | MAP@R − baseline, paired (wins) | s / run |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for name in rows:
        runs = by[name]
        if not runs:
            out.append(f"| {name} | 0 | not run | | | | | | |")
            continue
        seeds = sorted(runs)
        cells = [fmt_ci([runs[s]["final"][k] for s in seeds]) for k in keys]
        spec = runs[seeds[0]]["spec"]
        diff = ""
        if spec.get("gen") is not None:
            base = by[BASELINE_OF[spec["loss"]]]
            common = [s for s in seeds if s in base]
            d = [runs[s]["final"]["val/map@r"] - base[s]["final"]["val/map@r"] for s in common]
            if d:
                diff = f"{fmt_ci(d)} vs {BASELINE_OF[spec['loss']]} ({sum(x > 0 for x in d)}/{len(d)})"
        secs = statistics.mean(runs[s]["seconds"] for s in seeds)
        out.append(f"| {name} | {len(seeds)} | " + " | ".join(cells) + f" | {diff} | {secs:.0f} |")
    table = "\n".join(out)

    # validation table
    vrecs = [r for r in recs if r["phase"] == "val"]
    vt = ["| validation run (train 0-39, evaluate 40-49) | seeds | val MAP@R | val R@1 |", "|---|---|---|---|"]
    for name in val_runs():
        rr = [r for r in vrecs if r["name"] == name]
        if rr:
            vt.append(f"| {name} | {len(rr)} | {statistics.mean(r['final']['val/map@r'] for r in rr):.3f} | "
                      f"{statistics.mean(r['final']['val/recall@1'] for r in rr):.3f} |")
    vtable = "\n".join(vt)
    drecs = [r for r in choice if r["phase"] == "diag"]
    src = f", records of {Path(args.choose_from).name}" if args.choose_from else ""
    gt = [f"| diagnosis run (validation split, seed 100{src}) | val MAP@R | val R@1 | cos(a, src) | cos(a, syn) | "
          "e^(-α/J_m) | J_gce | classifier CE |", "|---|---|---|---|---|---|---|---|"]
    for r in drecs:
        c = r["curve"][-1]
        f = lambda k: f"{c[k]:.3f}" if k in c else ""  # noqa: E731
        ce = f"{c['train/J_softce'] / 10:.3f}" if "train/J_softce" in c else ""
        gt.append(f"| {r['name']} | {c['val/map@r']:.3f} | {c['val/recall@1']:.3f} | {f('gca/cos_anchor_source')} | "
                  f"{f('gca/cos_anchor_synthetic')} | {f('gca/lambda_scale')} | {f('train/J_gce')} | {ce} |")
    gtable = "\n".join(gt)

    # diagnostics table (last epoch, mean over seeds) and per-epoch means for the N-pair + GCA-HNG row
    dkeys = ["gca/cos_anchor_source", "gca/cos_anchor_synthetic", "gca/hardness_gain", "gca/hard_fraction",
             "gca/lambda_mean", "gca/lambda_std", "gca/lambda_scale", "gca/loss_real", "gca/loss_synthetic",
             "train/e_bj"]
    dt = ["| row | cos(a, source neg.) | cos(a, synthetic) | gain | share d+<d- | λ mean | λ std | "
          "e^(-α/J_m) | loss real | loss synthetic | e^(-β/J_gen) |", "|---" * 11 + "|"]
    for name in rows:
        runs = by[name]
        if not runs or runs[min(runs)]["spec"].get("gen") is None:
            continue
        vals = []
        for k in dkeys:
            v = [runs[s]["curve"][-1].get(k) for s in runs if runs[s]["curve"][-1].get(k) is not None]
            vals.append(f"{statistics.mean(v):.3f}" if v else "")
        dt.append(f"| {name} | " + " | ".join(vals) + " |")
    dtable = "\n".join(dt)
    ep = ["| epoch | " + " | ".join(k.split("/")[1] for k in dkeys) + " | test MAP@R (GCA) | test MAP@R (N-pair) |",
          "|---" * (len(dkeys) + 3) + "|"]
    g = by.get("N-pair + GCA-HNG", {})
    b = by.get("N-pair", {})
    if g:
        n_ep = len(g[min(g)]["curve"])
        for e in range(n_ep):
            cells = []
            for k in dkeys:
                v = [g[s]["curve"][e].get(k) for s in g if e < len(g[s]["curve"]) and g[s]["curve"][e].get(k) is not None]
                cells.append(f"{statistics.mean(v):.3f}" if v else "")
            gm = statistics.mean(g[s]["curve"][e]["val/map@r"] for s in g if e < len(g[s]["curve"]))
            bm = [b[s]["curve"][e]["val/map@r"] for s in b if e < len(b[s]["curve"])]
            ep.append(f"| {e + 1} | " + " | ".join(cells) + f" | {gm:.3f} | {statistics.mean(bm):.3f} |" if bm else
                      f"| {e + 1} | " + " | ".join(cells) + f" | {gm:.3f} | |")
    eptable = "\n".join(ep)

    # plots: learning curves (test MAP@R per epoch, mean and min/max over seeds) and diagnostics
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for name in rows:
        runs = by[name]
        if not runs:
            continue
        n_ep = min(len(r["curve"]) for r in runs.values())
        xs = list(range(1, n_ep + 1))
        ax = axes[1] if name in ablation_rows(cfg) else axes[0]
        m = [statistics.mean(r["curve"][e]["val/map@r"] for r in runs.values()) for e in range(n_ep)]
        lo = [min(r["curve"][e]["val/map@r"] for r in runs.values()) for e in range(n_ep)]
        hi = [max(r["curve"][e]["val/map@r"] for r in runs.values()) for e in range(n_ep)]
        line, = ax.plot(xs, m, label=f"{name} ({len(runs)} seeds)")
        ax.fill_between(xs, lo, hi, alpha=0.15, color=line.get_color())
    if b:
        n_ep = min(len(r["curve"]) for r in b.values())
        xs = list(range(1, n_ep + 1))
        axes[1].plot(xs, [statistics.mean(r["curve"][e]["val/map@r"] for r in b.values()) for e in range(n_ep)],
                     "k--", label="N-pair (baseline)")
    for ax, title in zip(axes[:2], ("main rows and the follow-up row", "N-pair + GCA-HNG ablations")):
        ax.set_xlabel("epoch")
        ax.set_ylabel("MAP@R, test classes 50-99")
        ax.set_title(title)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    ax = axes[2]
    if g:
        n_ep = min(len(r["curve"]) for r in g.values())
        xs = list(range(1, n_ep + 1))
        for k in ("gca/hardness_gain", "gca/hard_fraction", "gca/lambda_mean", "gca/lambda_std",
                  "gca/lambda_scale", "train/e_bj"):
            ys = [statistics.mean(r["curve"][e].get(k, float("nan")) for r in g.values()) for e in range(n_ep)]
            ax.plot(xs, ys, label=k.split("/")[1])
        ax.set_title("N-pair + GCA-HNG diagnostics (mean over seeds)")
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    png = args.jsonl.with_suffix(".png")
    fig.savefig(png, dpi=110)
    plt.close(fig)

    s = test[0]["schedule"] if test else SCHEDULE
    text = f"""<!-- generated by `python experiments/gca_hng_study.py report` from {args.jsonl.name} -->
## Results table

{table}

Mean ± half-width of the 95% t confidence interval over seeds (last epoch, never a picked epoch);
"MAP@R − baseline": the per-seed paired difference to the same loss without GCA-HNG (mean ± 95% CI,
seeds where GCA-HNG is higher). GCA-HNG setting chosen on the validation split: **{best}**.

## Validation search (hyper-parameters chosen here, never on test classes)

{vtable}

## Diagnosis runs (validation split: which term of the three-step update does what)

{gtable}

## Diagnostics at the last epoch (mean over seeds)

{dtable}

## N-pair + GCA-HNG diagnostics per epoch (mean over seeds)

{eptable}

Schedule: {s['images_per_class']} images per class, C x m = {s['classes_per_batch']} x {s['samples_per_class']},
{s['epochs']} epochs, SmallCNN width {s['cnn_width']}, {s['embedding_dim']}-d embedding, AdamW lr {s['lr']},
cosine schedule, augmentation {s['augment']}. GCA-HNG defaults {GCA_DEFAULT}, module {MODULE_DEFAULT}.
"""
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", choices=["val", "test", "diag", "followup", "report", "all"])
    p.add_argument("--jsonl", type=Path, default=JSONL)
    p.add_argument("--epochs", type=int, default=None, help="override the schedule's epochs")
    p.add_argument("--seeds", type=int, nargs="+", default=TEST_SEEDS)
    p.add_argument("--rows", choices=["main", "npair", "ablations", "all"], default="all",
                   help="test rows: the 4 main rows, only the two N-pair main rows, the ablations, or all")
    p.add_argument("--choose-from", type=Path, default=None,
                   help="followup: take the validation diagnosis (phase diag) from this JSONL instead of --jsonl "
                        "(e.g. the 6-epoch study's, to test its validation choice on a longer schedule)")
    p.add_argument("--logroot", default="runs/gca_study", help="TensorBoard root ('' disables)")
    args = p.parse_args()
    if args.phase in ("val", "all"):
        execute("val", val_runs(), VAL_SEEDS, "val", args, epochs=VAL_EPOCHS)
    if args.phase in ("test", "all"):
        best, cfg, scores = chosen_gca(load(args.jsonl))
        print(f"GCA-HNG setting chosen on validation: {best} {cfg} (val MAP@R {scores})", flush=True)
        if args.rows in ("main", "all"):
            execute("test", main_rows(cfg), args.seeds, "test", args)
        if args.rows == "npair":
            execute("test", {k: v for k, v in main_rows(cfg).items() if k.startswith("N-pair")}, args.seeds,
                    "test", args)
        if args.rows in ("ablations", "all"):
            execute("test", ablation_rows(cfg), args.seeds, "test", args)
    if args.phase == "diag":
        best, cfg, _ = chosen_gca(load(args.jsonl))
        execute("diag", diag_runs(cfg), VAL_SEEDS, "val", args)
    if args.phase == "followup":
        best, cfg, _ = chosen_gca(load(args.jsonl))
        source = args.choose_from or args.jsonl
        rows = followup_rows(load(source), cfg)
        print(f"follow-up rows chosen on validation ({source}):", list(rows), flush=True)
        execute("test", rows, args.seeds, "test", args)
    if args.phase in ("report", "all"):
        text = report(args)
        # the generated tables go between the markers of gca_hng_study.md (the written diagnosis around
        # them is kept); without the markers they go to a file of their own
        out = args.jsonl.with_suffix(".md")
        begin, end = "<!-- tables:begin -->", "<!-- tables:end -->"
        doc = out.read_text() if out.is_file() else ""
        if begin in doc and end in doc:
            head, rest = doc.split(begin, 1)
            out.write_text(head + begin + "\n" + text + "\n" + end + rest.split(end, 1)[1])
        else:
            args.jsonl.with_name(args.jsonl.stem + "_tables.md").write_text(text)
        print(text)


if __name__ == "__main__":
    from graphneg.cli import quiet_lightning

    with quiet_lightning():  # no cloud-service tips / Lightning-internal deprecation warnings
        main()
