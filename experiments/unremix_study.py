"""UnReMix study (issue 10): graph training recipe selection, then the 5-seed comparison.

Two phases, each appending one JSON line per finished run to a JSONL file and skipping runs already
there (resumable; an interrupted run keeps its numbers):

* ``--phase select`` (hyper-parameters, validation only): the graph training recipe (learning rate,
  GraphCL augmentation, schedule) is chosen with InfoNCE on **selection seeds 100, 101** (disjoint
  from the study seeds) and scored by the SVC protocol on a fixed stratified **validation half** of
  the graphs (split seed 12345); the untrained encoder of the same seeds is scored on the same half.
  Output: ``experiments/results/unremix_select.jsonl``. The chosen recipe is the one with the best
  mean validation accuracy; it is then fixed in ``RECIPES`` below for the study.
* ``--phase study``: MNIST-5k (contrastive), MUTAG and Cuneiform, seeds 0-4, the losses of
  ``STUDY_LOSSES`` plus the untrained encoder of the same seed, on the test protocol (MNIST-5k:
  weighted kNN and linear probe on the 1,000 test digits; graphs: 10-fold SVC on all graphs,
  Cuneiform 8 folds). Output: ``experiments/results/unremix_study.jsonl``; ``--report`` renders
  ``experiments/results/unremix_study.md`` (mean, 95% t-interval over seeds, paired per-seed
  difference to HCL with its 95% t-interval, and to the untrained encoder).

Run single-threaded and niced, in the background::

    nohup nice -n 10 python experiments/unremix_study.py --phase select > select.log 2>&1 &
    nohup nice -n 10 python experiments/unremix_study.py --phase study > study.log 2>&1 &
    python experiments/unremix_study.py --report
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional

import lightning as L
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from compare_contrastive import CachedViewsMNIST, mnist_probe_run, trainer  # noqa: E402
from graphneg.data import TUDataModule  # noqa: E402
from graphneg.callbacks import embed_loader  # noqa: E402
from graphneg.losses import DebiasedContrastiveLoss, HCLLoss, InfoNCELoss, UnReMixLoss  # noqa: E402
from graphneg.metrics.graph_protocol import svc_protocol  # noqa: E402
from graphneg.models import GINEncoder, GraphContrastiveModule  # noqa: E402

T, TAU_PLUS, BETA = 0.5, 0.1, 1.0
RESULTS = ROOT / "experiments" / "results"
SELECT_SEEDS = [100, 101]
STUDY_SEEDS = [0, 1, 2, 3, 4]
VAL_SPLIT_SEED = 12345
TU_NAMES = {"mutag": "MUTAG", "cuneiform": "Cuneiform"}

# graph recipes searched in the select phase (name -> lr, augmentation, scheduler)
SELECT_RECIPES = {
    "old": dict(lr=1e-3, augment="random4", scheduler="none"),
    "lr01_random4": dict(lr=1e-2, augment="random4", scheduler="none"),
    "lr01_node_drop": dict(lr=1e-2, augment="node_drop", scheduler="none"),
    "lr01_subgraph": dict(lr=1e-2, augment="subgraph", scheduler="none"),
    # Cuneiform's continuous node attributes (wedge positions/orientations) on top of the node labels
    "lr01_subgraph_attr": dict(lr=1e-2, augment="subgraph", scheduler="none", node_attr=True),
    "lr01_node_drop_attr": dict(lr=1e-2, augment="node_drop", scheduler="none", node_attr=True),
}
# the recipe used by the study, per dataset (set from the select phase, see the results file)
RECIPES: Dict[str, str] = {"mutag": "lr01_subgraph", "cuneiform": "old"}

UR = dict(temperature=T, tau_plus=TAU_PLUS, beta=BETA)
STUDY_LOSSES = {
    "infonce": lambda: InfoNCELoss(T),
    "dcl": lambda: DebiasedContrastiveLoss(T, TAU_PLUS),
    "hcl": lambda: HCLLoss(T, TAU_PLUS, BETA),
    # full mixes (sim + unc + rep): both representativeness directions x both uncertainty variants
    "ur_density": lambda: UnReMixLoss(**UR, weights=(1, 1, 1), k=10, representativeness="density"),
    "ur_diversity": lambda: UnReMixLoss(**UR, weights=(1, 1, 1), k=None, representativeness="diversity"),
    "ur_diversity_pl": lambda: UnReMixLoss(**UR, weights=(1, 1, 1), k=None, representativeness="diversity",
                                           uncertainty="pseudo_label"),
    # single scores
    "ur_sim": lambda: UnReMixLoss(**UR, weights=(1, 0, 0)),
    "ur_unc": lambda: UnReMixLoss(**UR, weights=(0, 1, 0)),
    "ur_unc_pl": lambda: UnReMixLoss(**UR, weights=(0, 1, 0), uncertainty="pseudo_label"),
    "ur_rep_density": lambda: UnReMixLoss(**UR, weights=(0, 0, 1), k=10, representativeness="density"),
    "ur_rep_diversity": lambda: UnReMixLoss(**UR, weights=(0, 0, 1), k=None, representativeness="diversity"),
    # last: run only when the budget allows (the pseudo-label mix is also measured with diversity)
    "ur_density_pl": lambda: UnReMixLoss(**UR, weights=(1, 1, 1), k=10, representativeness="density",
                                         uncertainty="pseudo_label"),
}
LABELS = {
    "untrained": "untrained encoder", "infonce": "InfoNCE", "dcl": "DCL", "hcl": "HCL",
    "ur_density": "UnReMix sim+unc+rep, density, grad-unc",
    "ur_diversity": "UnReMix sim+unc+rep, diversity, grad-unc",
    "ur_density_pl": "UnReMix sim+unc+rep, density, pseudo-label unc",
    "ur_diversity_pl": "UnReMix sim+unc+rep, diversity, pseudo-label unc",
    "ur_sim": "UnReMix sim only (detached HCL weight)", "ur_unc": "UnReMix unc only (gradient)",
    "ur_unc_pl": "UnReMix unc only (pseudo-label)", "ur_rep_density": "UnReMix rep only (density, k=10)",
    "ur_rep_diversity": "UnReMix rep only (diversity, all candidates)",
}

GRAPH_EPOCHS, MNIST_EPOCHS, TRAIN_PER_CLASS = 20, 4, 150


# ------------------------------------------------------------------------------------ runs
def val_half(labels: torch.Tensor) -> torch.Tensor:
    """Fixed stratified half of the graphs (indices), the validation split of the select phase."""
    g = torch.Generator().manual_seed(VAL_SPLIT_SEED)
    idx = []
    for c in labels.unique():
        members = (labels == c).nonzero(as_tuple=True)[0]
        members = members[torch.randperm(members.numel(), generator=g)]
        idx.append(members[: (members.numel() + 1) // 2])
    return torch.cat(idx).sort().values


def run_graph(ds: str, recipe: str, loss_name: str, seed: int, epochs: int, validation: bool) -> Dict:
    rc = SELECT_RECIPES[recipe]
    dm = TUDataModule(TU_NAMES[ds], root=str(ROOT / "datasets" / "tu"), batch_size=128,
                      augment=rc["augment"], aug_ratio=0.2, seed=seed,
                      use_node_attr=rc.get("node_attr", False))
    dm.setup()
    L.seed_everything(seed, verbose=False)
    loss = STUDY_LOSSES["infonce" if loss_name == "untrained" else loss_name]()
    model = GraphContrastiveModule(GINEncoder(dm.num_features, 32, 3), loss, lr=rc["lr"],
                                   scheduler=rc["scheduler"], log_histograms=False)
    t0 = time.time()
    if loss_name != "untrained":
        trainer(epochs).fit(model, dm)
    fit_s = time.time() - t0
    emb, lab = embed_loader(model, dm.test_dataloader())
    emb, lab = emb.float().cpu(), lab.cpu()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="svc_protocol: the smallest class")
        if validation:
            idx = val_half(lab)
            res = svc_protocol(emb[idx], lab[idx], folds=10, seed=seed)
        else:
            res = svc_protocol(emb, lab, folds=10, seed=seed)
    return {"acc": res["mean"], "fold_std": res["std"], "fit_s": fit_s}


def run_mnist(loss_name: str, seed: int, dm: CachedViewsMNIST) -> Dict:
    loss = STUDY_LOSSES["infonce" if loss_name == "untrained" else loss_name]()
    r = mnist_probe_run(loss, seed, MNIST_EPOCHS, dm, train=loss_name != "untrained")
    return {"acc": r["knn"], "linear": r["linear"], "fit_s": r["fit_s"]}


def load(path: Path) -> List[dict]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def key(r: dict) -> tuple:
    return (r["dataset"], r.get("recipe", ""), r["loss"], r["seed"])


def append(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ------------------------------------------------------------------------------------ phases
def phase_select(args) -> None:
    out = RESULTS / "unremix_select.jsonl"
    done = {key(r) for r in load(out)}
    for ds in args.datasets:
        if ds == "mnist5k":
            continue
        for seed in SELECT_SEEDS:
            for recipe in SELECT_RECIPES:
                attr = SELECT_RECIPES[recipe].get("node_attr", False)
                if attr and ds != "cuneiform":
                    continue
                first = recipe == ("lr01_subgraph_attr" if attr else "old")
                for loss_name in (["untrained"] if first else []) + ["infonce"]:
                    rec = ("any_attr" if attr else "any") if loss_name == "untrained" else recipe
                    row = {"dataset": ds, "recipe": rec, "loss": loss_name, "seed": seed}
                    if key(row) in done:
                        continue
                    t0 = time.time()
                    row.update(run_graph(ds, recipe, loss_name, seed, GRAPH_EPOCHS, validation=True))
                    row["total_s"] = time.time() - t0
                    append(out, row)
                    done.add(key(row))
                    print(json.dumps(row), flush=True)


# priority order of the study: blocks of (dataset, losses), each run for every seed before the next
# block starts, so that whatever finishes in the budget has all 5 seeds per row
PLAN = [
    ("mutag", ["untrained", "infonce", "dcl", "hcl", "ur_density", "ur_diversity", "ur_diversity_pl"]),
    ("mnist5k", ["untrained", "hcl", "ur_density", "ur_diversity"]),
    ("cuneiform", ["untrained", "hcl", "ur_density", "ur_diversity"]),
    ("mutag", ["ur_unc_pl", "ur_rep_diversity", "ur_rep_density", "ur_unc", "ur_sim"]),
    ("mnist5k", ["infonce", "dcl", "ur_diversity_pl", "ur_unc_pl", "ur_rep_diversity", "ur_rep_density",
                 "ur_unc", "ur_sim"]),
    ("cuneiform", ["infonce", "dcl", "ur_diversity_pl", "ur_unc_pl", "ur_rep_diversity", "ur_rep_density",
                   "ur_unc", "ur_sim"]),
    ("mutag", ["ur_density_pl"]),
]


def phase_study(args) -> None:
    out = RESULTS / "unremix_study.jsonl"
    done = {key(r) for r in load(out)}
    for ds, block in PLAN:
        if ds not in args.datasets:
            continue
        losses = [n for n in block if n == "untrained" or n in args.losses]
        for seed in args.seeds:
            todo = [n for n in losses if (ds, RECIPES.get(ds, "mnist"), n, seed) not in done]
            if not todo:
                continue
            cache = CachedViewsMNIST(TRAIN_PER_CLASS, MNIST_EPOCHS, seed) if ds == "mnist5k" else None
            for loss_name in todo:
                t0 = time.time()
                if ds == "mnist5k":
                    res = run_mnist(loss_name, seed, cache)
                else:
                    res = run_graph(ds, RECIPES[ds], loss_name, seed, GRAPH_EPOCHS, validation=False)
                row = {"dataset": ds, "recipe": RECIPES.get(ds, "mnist"), "loss": loss_name, "seed": seed,
                       **res, "total_s": time.time() - t0}
                append(out, row)
                done.add(key(row))
                print(json.dumps(row), flush=True)


# ------------------------------------------------------------------------------------ report
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def ci(xs: List[float]) -> str:
    """``mean ± half-width`` of the 95% t-interval over seeds, in %."""
    n = len(xs)
    if n == 0:
        return "-"
    m = sum(xs) / n
    if n == 1:
        return f"{100 * m:.1f}"
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    return f"{100 * m:.1f} ± {100 * T975[n - 1] * s / math.sqrt(n):.1f}"


def paired(rows: List[dict], name: str, ref: str, field: str = "acc") -> str:
    a = {r["seed"]: r[field] for r in rows if r["loss"] == name}
    b = {r["seed"]: r[field] for r in rows if r["loss"] == ref}
    seeds = sorted(set(a) & set(b))
    if not seeds or name == ref:
        return "-"
    d = [a[s] - b[s] for s in seeds]
    return ci(d) + ("" if len(seeds) == 5 else f" (n={len(seeds)})")


def feature_ceiling(ds: str) -> Dict[str, float]:
    """What any function of the node-feature multiset can reach on ``ds`` (GIN cannot exceed it on
    graphs whose WL colourings coincide; on Cuneiform the node-label multiset already determines the
    WL class): the number of distinct multisets, the best training-set accuracy (majority label per
    multiset) and the accuracy of that lookup under the study's stratified CV (same folds as the SVC
    protocol, seeds 0-4; an unseen multiset counts as an error)."""
    import collections

    from sklearn.model_selection import StratifiedKFold

    dm = TUDataModule(TU_NAMES[ds], root=str(ROOT / "datasets" / "tu"))
    dm.setup()
    keys = np.array([hash(tuple(sorted(map(tuple, g.x.tolist())))) for g in dm.dataset])
    y = np.array([int(g.y) for g in dm.dataset])
    groups = collections.defaultdict(collections.Counter)
    for k_, l_ in zip(keys, y):
        groups[k_][l_] += 1
    best = sum(c.most_common(1)[0][1] for c in groups.values()) / len(y)
    folds = min(10, int(np.bincount(y).min()))
    accs = []
    for seed in STUDY_SEEDS:
        for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(keys, y):
            table = collections.defaultdict(collections.Counter)
            for k_, l_ in zip(keys[tr], y[tr]):
                table[k_][l_] += 1
            pred = np.array([table[k_].most_common(1)[0][0] if k_ in table else -1 for k_ in keys[te]])
            accs.append(float((pred == y[te]).mean()))
    return {"distinct": len(groups), "graphs": len(y), "train_ceiling": best, "cv_lookup": float(np.mean(accs))}


CONTRASTS = [
    ("ur_diversity", "ur_density", "diversity - density (full mix, gradient unc.)"),
    ("ur_rep_diversity", "ur_rep_density", "diversity - density (representativeness only)"),
    ("ur_diversity_pl", "ur_diversity", "pseudo-label - gradient unc. (full mix, diversity)"),
    ("ur_density_pl", "ur_density", "pseudo-label - gradient unc. (full mix, density)"),
    ("ur_unc_pl", "ur_unc", "pseudo-label - gradient unc. (uncertainty only)"),
    ("ur_sim", "hcl", "detached - back-propagated HCL weight"),
]


def report(args) -> str:
    rows = load(RESULTS / "unremix_study.jsonl")
    sel = load(RESULTS / "unremix_select.jsonl")
    lines = ["# UnReMix study (issue 10): representativeness direction, uncertainty variants, graph recipe", "",
             "Produced by `experiments/unremix_study.py` (`--phase select`, `--phase study`, `--report`); "
             "per-run numbers in `unremix_study.jsonl` / `unremix_select.jsonl` next to this file. CPU, "
             "1 torch thread, `nice -n 10` on a shared 2-core machine.", ""]
    # select phase
    if sel:
        lines += ["## 1. Graph recipe selection (validation only)", "",
                  f"InfoNCE, {GRAPH_EPOCHS} epochs, batch 128, GIN 3 x 32, sum pooling, concatenated readouts "
                  "(96-d), GraphCL head. Selection seeds " + ", ".join(map(str, SELECT_SEEDS)) +
                  " (not study seeds); score = SVC protocol (10-fold, C grid 1e-3..1e3) on a fixed stratified "
                  f"half of the graphs (split seed {VAL_SPLIT_SEED}). Accuracy %, mean over the selection seeds.",
                  "", "| recipe | lr | augmentation | schedule | MUTAG val | Cuneiform val |", "|---|---|---|---|---|---|"]
        for rec in ["any", "any_attr"] + list(SELECT_RECIPES):
            cells = []
            for ds in ("mutag", "cuneiform"):
                xs = [r["acc"] for r in sel if r["dataset"] == ds and r["recipe"] == rec]
                cells.append(f"{100 * sum(xs) / len(xs):.1f} (n={len(xs)})" if xs else "-")
            if rec.startswith("any"):
                feats = " (node attributes)" if rec == "any_attr" else ""
                lines.append(f"| untrained encoder{feats} | - | - | - | {cells[0]} | {cells[1]} |")
            else:
                rc = SELECT_RECIPES[rec]
                aug = rc["augment"] + (" + node attributes" if rc.get("node_attr") else "")
                lines.append(f"| {rec} | {rc['lr']} | {aug} | {rc['scheduler']} | {cells[0]} | {cells[1]} |")
        lines += ["", "Chosen for the study: " + ", ".join(f"{ds}: `{r}`" for ds, r in RECIPES.items()) + ".", ""]
    lines += ["## 2. Study: 5 seeds, test protocol", "",
              "Losses share t = 0.5, tau_plus = 0.1, beta = 1; UnReMix weights (1, 1, 1) for the full mix, density "
              "k = 10, diversity over all candidates (k = None). Cells: mean ± half-width of the 95% t-interval "
              "over seeds (t with n-1 dof), in accuracy points; 'Δ HCL' / 'Δ untrained' are the paired per-seed "
              "differences (same seed: same initialisation, views and batch order) with their 95% t-interval. "
              "`untrained` = the same encoder at its random initialisation.", ""]
    for ds in ("mnist5k", "mutag", "cuneiform"):
        sub = [r for r in rows if r["dataset"] == ds]
        if not sub:
            continue
        if ds == "mnist5k":
            lines += [f"### MNIST-5k (contrastive): SmallCNN, {MNIST_EPOCHS} epochs on {10 * TRAIN_PER_CLASS} digits, "
                      "batch 64, lr 2e-3 (the recipe of compare_contrastive.py); weighted kNN (k=20) top-1 on "
                      "the 1,000 test digits and linear probe", "",
                      "| loss | kNN top-1 | Δ HCL (kNN) | Δ untrained (kNN) | linear top-1 | seeds | fit s |",
                      "|---|---|---|---|---|---|---|"]
        else:
            rc = SELECT_RECIPES[RECIPES[ds]]
            lines += [f"### {TU_NAMES[ds]}: GIN 3 x 32, {GRAPH_EPOCHS} epochs, batch 128, lr {rc['lr']}, augmentation "
                      f"{rc['augment']}, schedule {rc['scheduler']}; SVC protocol on all graphs", "",
                      "| loss | SVC accuracy | Δ HCL | Δ untrained | mean fold std | seeds | fit s |",
                      "|---|---|---|---|---|---|---|"]
        for name in ["untrained"] + list(STUDY_LOSSES):
            rs = [r for r in sub if r["loss"] == name]
            if not rs:
                continue
            fit = sum(r["fit_s"] for r in rs) / len(rs)
            if ds == "mnist5k":
                lines.append(f"| {LABELS[name]} | {ci([r['acc'] for r in rs])} | {paired(sub, name, 'hcl')} | "
                             f"{paired(sub, name, 'untrained')} | {ci([r['linear'] for r in rs])} | {len(rs)} | {fit:.0f} |")
            else:
                fold = 100 * sum(r["fold_std"] for r in rs) / len(rs)
                lines.append(f"| {LABELS[name]} | {ci([r['acc'] for r in rs])} | {paired(sub, name, 'hcl')} | "
                             f"{paired(sub, name, 'untrained')} | {fold:.1f} | {len(rs)} | {fit:.0f} |")
        contrasts = []
        for a, b, what in CONTRASTS:
            d = paired(sub, a, b)
            if d != "-":
                contrasts.append(f"{what}: {d}")
        if contrasts:
            lines += ["", "Paired contrasts (per-seed difference, 95% t-interval, accuracy points"
                      + (", kNN" if ds == "mnist5k" else "") + "): " + "; ".join(contrasts) + "."]
        if ds == "cuneiform":  # there the multiset classes are the WL classes (30 = 30, checked)
            fc = feature_ceiling(ds)
            lines += ["", f"Node-feature ceiling: the {fc['graphs']} graphs have {fc['distinct']} distinct node-feature "
                      f"multisets; the majority label per multiset reaches {100 * fc['train_ceiling']:.1f}% on all graphs "
                      f"and {100 * fc['cv_lookup']:.1f}% under the same stratified CV (a lookup table of the "
                      "multisets, `feature_ceiling`)."]
        missing = []
        for n in ["untrained"] + list(STUDY_LOSSES):
            seeds = [s_ for s_ in STUDY_SEEDS if not any(r["loss"] == n and r["seed"] == s_ for r in sub)]
            if seeds:
                missing.append(f"{n} (seeds {', '.join(map(str, seeds))})")
        if missing:
            lines += ["", "Not run (outside the priority plan of the budget: the density + pseudo-label mix was planned for MUTAG only): " + "; ".join(missing) + "."]
        lines.append("")
    text = "\n".join(lines)
    return text


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phase", choices=["select", "study"], default=None)
    p.add_argument("--datasets", nargs="+", default=["mutag", "cuneiform", "mnist5k"])
    p.add_argument("--losses", nargs="+", default=list(STUDY_LOSSES))
    p.add_argument("--seeds", nargs="+", type=int, default=STUDY_SEEDS)
    p.add_argument("--report", action="store_true", help="render the markdown from the .jsonl files")
    p.add_argument("--notes", default=None, help="a markdown file appended to the report")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    if args.phase == "select":
        phase_select(args)
    elif args.phase == "study":
        phase_study(args)
    if args.report:
        text = report(args)
        if args.notes:
            text += "\n" + Path(args.notes).read_text()
        out = RESULTS / "unremix_study.md"
        tmp = out.with_suffix(".md.tmp")
        tmp.write_text(text)
        os.replace(tmp, out)
        print(text)


if __name__ == "__main__":
    from graphneg.cli import quiet_lightning

    with quiet_lightning():  # no cloud-service tips / Lightning-internal deprecation warnings
        main()
