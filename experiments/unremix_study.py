"""UnReMix study (issue 10): graph training recipe selection, then the 5-seed comparison.

Two phases, each appending one JSON line per finished run to a JSONL file and skipping runs already
there (resumable; an interrupted run keeps its numbers):

* ``--phase select`` (hyper-parameters, validation only): the graph training recipe (learning rate,
  GraphCL augmentation, schedule) is chosen with InfoNCE on **selection seeds 100, 101** (disjoint
  from the study seeds) and scored by the SVC protocol on a fixed stratified **validation half** of
  the graphs (split seed 12345); the untrained encoder of the same seeds is scored on the same half.
  Output: ``experiments/results/unremix_select.jsonl``. The chosen recipe (training recipe x SVC
  evaluation, ``EVALS``) is the one with the best mean validation accuracy of the trained encoder (a
  tie goes to the reference evaluation, concatenated readouts without scaling); it is then fixed in
  ``RECIPES`` below for the study.
* ``--phase study``: MNIST-5k (contrastive), MUTAG and Cuneiform, seeds 0-4, the losses of
  ``STUDY_LOSSES`` plus the untrained encoder of the same seed, on the test protocol (MNIST-5k:
  weighted kNN and linear probe on the 1,000 test digits; graphs: 10-fold SVC on all graphs,
  Cuneiform 8 folds). Output: ``experiments/results/unremix_study.jsonl``; ``--report`` renders
  ``experiments/results/unremix_study.md`` (mean, 95% t-interval over seeds, paired per-seed
  difference to HCL with its 95% t-interval, and to the untrained encoder).

Every run trains through the ``graphneg`` CLI and a YAML config, as a user would: the graph runs are
``graphneg fit --config experiments/unremix/mutag.yaml`` with the recipe, dataset, loss and seed as
overrides (``compare_contrastive.graph_cli``), the MNIST-5k runs ``--config
experiments/mnist5k_views.yaml`` (``compare_contrastive.mnist_probe_run``); the statistics and
JSONL records are ``experiments/_common.py``'s, the WL features ``graphneg.metrics.wl``'s and the
validation half ``graphneg.metrics.graph_protocol.stratified_half``.

Run single-threaded and niced, in the background::

    nohup nice -n 10 python experiments/unremix_study.py --phase select > select.log 2>&1 &
    nohup nice -n 10 python experiments/unremix_study.py --phase study > study.log 2>&1 &
    python experiments/unremix_study.py --report
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from _common import (  # noqa: E402
    append_jsonl, atomic_write, by_seed, fmt_ci, fmt_paired, markdown_table, quiet_study, read_jsonl,
)
from compare_contrastive import graph_cli, loss_spec, mnist_probe_run  # noqa: E402
from graphneg.callbacks import embed_loader  # noqa: E402
from graphneg.data import TUDataModule  # noqa: E402
from graphneg.metrics.graph_protocol import layer_readout, stratified_half, svc_protocol  # noqa: E402
from graphneg.metrics.wl import wl_features, wl_graphs  # noqa: E402

T, TAU_PLUS, BETA = 0.5, 0.1, 1.0
RESULTS = ROOT / "experiments" / "results"
SELECT_SEEDS = [100, 101]
STUDY_SEEDS = [0, 1, 2, 3, 4]
VAL_SPLIT_SEED = 12345
TU_NAMES = {"mutag": "MUTAG", "cuneiform": "Cuneiform"}

# graph training recipes searched in the select phase. Fields: lr (Adam), augment (GraphCL
# augmentation of both views, You et al. NeurIPS 2020 Sec. 3.1 / Table 1: their per-dataset choice is node
# dropping or subgraph on the molecule sets, attribute masking where the node attributes carry meaning),
# scheduler ("none" or per-step "cosine"), epochs (GraphCL's unsupervised TU runs use 20), hidden (GIN
# width; InfoGraph / GraphCL: 32), pooling ("sum" = GIN's injective readout, or "mean"), node_attr (add the
# continuous node attributes), std_attr (z-score them, TUDataModule(standardize_node_attr=True)).
SELECT_RECIPES = {
    "old": dict(lr=1e-3, augment="random4", scheduler="none"),
    "lr01_random4": dict(lr=1e-2, augment="random4", scheduler="none"),
    "lr01_node_drop": dict(lr=1e-2, augment="node_drop", scheduler="none"),
    "lr01_subgraph": dict(lr=1e-2, augment="subgraph", scheduler="none"),
    # Cuneiform's continuous node attributes (wedge positions/orientations) on top of the node labels
    "lr01_subgraph_attr": dict(lr=1e-2, augment="subgraph", scheduler="none", node_attr=True),
    "lr01_node_drop_attr": dict(lr=1e-2, augment="node_drop", scheduler="none", node_attr=True),
    # second search (issue 10 follow-up): longer schedules, width, pooling, standardised attributes
    "lr01_subgraph_e60": dict(lr=1e-2, augment="subgraph", scheduler="none", epochs=60),
    "lr001_subgraph_e60": dict(lr=1e-3, augment="subgraph", scheduler="none", epochs=60),
    "lr01_subgraph_e60_cos": dict(lr=1e-2, augment="subgraph", scheduler="cosine", epochs=60),
    "lr01_node_drop_e60": dict(lr=1e-2, augment="node_drop", scheduler="none", epochs=60),
    "lr01_subgraph_h128": dict(lr=1e-2, augment="subgraph", scheduler="none", hidden=128),
    "lr01_subgraph_mean": dict(lr=1e-2, augment="subgraph", scheduler="none", pooling="mean"),
    "lr01_subgraph_mean_e60": dict(lr=1e-2, augment="subgraph", scheduler="none", pooling="mean", epochs=60),
    "lr001_subgraph_mean_e60": dict(lr=1e-3, augment="subgraph", scheduler="none", pooling="mean", epochs=60),
    "lr01_node_drop_mean": dict(lr=1e-2, augment="node_drop", scheduler="none", pooling="mean"),
    "lr01_attr_mask_std": dict(lr=1e-2, augment="attr_mask", scheduler="none", node_attr=True, std_attr=True),
    "lr001_attr_mask_std": dict(lr=1e-3, augment="attr_mask", scheduler="none", node_attr=True, std_attr=True),
    "lr01_subgraph_std": dict(lr=1e-2, augment="subgraph", scheduler="none", node_attr=True, std_attr=True),
    "lr01_attr_mask_std_e60": dict(lr=1e-2, augment="attr_mask", scheduler="none", node_attr=True,
                                   std_attr=True, epochs=60),
}
RECIPE_DEFAULTS = dict(node_attr=False, std_attr=False, epochs=20, hidden=32, pooling="sum")
# which datasets a recipe is tried on in the select phase (None: both)
RECIPE_DATASETS = {"lr01_subgraph_attr": ["cuneiform"], "lr01_node_drop_attr": ["cuneiform"],
                   "lr01_attr_mask_std": ["cuneiform"], "lr001_attr_mask_std": ["cuneiform"],
                   "lr01_subgraph_std": ["cuneiform"], "lr01_attr_mask_std_e60": ["cuneiform"],
                   "lr01_subgraph_e60_cos": ["mutag"], "lr01_subgraph_h128": ["mutag"],
                   "lr01_subgraph_mean": ["mutag"], "lr01_subgraph_mean_e60": ["mutag"],
                   "lr001_subgraph_mean_e60": ["mutag"], "lr01_node_drop_mean": ["mutag"], "lr01_node_drop_e60": ["mutag"],
                   "lr001_subgraph_e60": ["mutag"]}
# the embedding handed to the SVC (all from one trained encoder): readout "concat" = the concatenated
# per-layer readouts (InfoGraph Eq. 3-4 / GraphCL, the reference) or "last" = the last layer's only;
# scale = z-score every dimension on the training split (svc_protocol(scale=True); not the reference)
EVALS = {"concat": dict(readout="concat", scale=False), "concat_z": dict(readout="concat", scale=True),
         "last": dict(readout="last", scale=False), "last_z": dict(readout="last", scale=True)}
# the recipe used by the study, per dataset: (training recipe, evaluation), set from the select phase
# (first search: mutag ("lr01_subgraph", "concat"), cuneiform ("old", "concat"); their study rows are kept
# and reported as "previous recipe"). Second search: MUTAG lr01_subgraph_mean_e60 ties under concat and
# last_z (87.22 both), the tie goes to the reference evaluation (concat); Cuneiform: old with concat_z.
RECIPES: Dict[str, tuple] = {"mutag": ("lr01_subgraph_mean_e60", "concat"), "cuneiform": ("old", "concat_z")}
PREVIOUS = {"mutag": ("lr01_subgraph",), "cuneiform": ("old",)}  # study recipes of the first search


def recipe(name: str) -> dict:
    """The training recipe ``name`` with the defaults filled in."""
    return {**RECIPE_DEFAULTS, **SELECT_RECIPES[name]}


def encoder_tag(name: str) -> str:
    """Record name of the untrained encoder of recipe ``name`` in the select phase: it depends only on
    the encoder and its input (width, pooling, node attributes), not on lr / augmentation / schedule.
    ``any`` / ``any_attr`` are the names of the first search (GIN 3 x 32, sum)."""
    rc = recipe(name)
    tag = "any" + ("_stdattr" if rc["std_attr"] else "_attr" if rc["node_attr"] else "")
    if (rc["hidden"], rc["pooling"]) != (32, "sum"):
        tag += f"_h{rc['hidden']}_{rc['pooling']}"
    return tag


def study_recipe(ds: str) -> str:
    """Record name of the study's recipe on ``ds``: the training recipe, ``/eval`` unless ``concat``."""
    rec, ev = RECIPES[ds]
    return rec if ev == "concat" else f"{rec}/{ev}"


UR = dict(temperature=T, tau_plus=TAU_PLUS, beta=BETA)
ALL = dict(weights=[1, 1, 1])
# the losses as config entries (model.init_args.loss of the run's YAML config, compare_contrastive.loss_spec)
STUDY_LOSSES = {
    "infonce": loss_spec("InfoNCELoss", temperature=T),
    "dcl": loss_spec("DebiasedContrastiveLoss", temperature=T, tau_plus=TAU_PLUS),
    "hcl": loss_spec("HCLLoss", **UR),
    # full mixes (sim + unc + rep): both representativeness directions x both uncertainty variants
    "ur_density": loss_spec("UnReMixLoss", **UR, **ALL, k=10, representativeness="density"),
    "ur_diversity": loss_spec("UnReMixLoss", **UR, **ALL, k=None, representativeness="diversity"),
    "ur_diversity_pl": loss_spec("UnReMixLoss", **UR, **ALL, k=None, representativeness="diversity",
                                 uncertainty="pseudo_label"),
    # single scores
    # (representativeness weight 0: its kind is pinned to the default of the time the rows were measured)
    "ur_sim": loss_spec("UnReMixLoss", **UR, weights=[1, 0, 0], k=10, representativeness="density"),
    "ur_unc": loss_spec("UnReMixLoss", **UR, weights=[0, 1, 0], k=10, representativeness="density"),
    "ur_unc_pl": loss_spec("UnReMixLoss", **UR, weights=[0, 1, 0], k=10, representativeness="density",
                           uncertainty="pseudo_label"),
    "ur_rep_density": loss_spec("UnReMixLoss", **UR, weights=[0, 0, 1], k=10, representativeness="density"),
    "ur_rep_diversity": loss_spec("UnReMixLoss", **UR, weights=[0, 0, 1], k=None, representativeness="diversity"),
    # last: run only when the budget allows (the pseudo-label mix is also measured with diversity)
    "ur_density_pl": loss_spec("UnReMixLoss", **UR, **ALL, k=10, representativeness="density",
                               uncertainty="pseudo_label"),
    # full mixes with the scores computed from the live (not detached) embeddings: gradients flow
    # through the weights, as through HCL's importance weight in joshr17/HCL (issue 10 follow-up)
    "ur_density_bp": loss_spec("UnReMixLoss", **UR, **ALL, k=10, representativeness="density",
                               detach_scores=False),
    "ur_diversity_bp": loss_spec("UnReMixLoss", **UR, **ALL, k=None, representativeness="diversity",
                                 detach_scores=False),
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
    "ur_density_bp": "UnReMix sim+unc+rep, density, grad-unc, scores back-propagated",
    "ur_diversity_bp": "UnReMix sim+unc+rep, diversity, grad-unc, scores back-propagated",
}

GRAPH_EPOCHS, MNIST_EPOCHS, TRAIN_PER_CLASS = 20, 4, 150


# ------------------------------------------------------------------------------------ runs
def run_graph(ds: str, recipe_name: str, loss_name: str, seed: int, validation: bool,
              evals: List[str]) -> Dict[str, Dict]:
    """Train (unless ``untrained``) one encoder through ``experiments/unremix/mutag.yaml`` with recipe
    ``recipe_name`` (``compare_contrastive.graph_cli``) and score it under every evaluation of ``evals``:
    ``{eval: {"acc", "fold_std", "fit_s"}}``; ``validation``: on the fixed stratified half of the graphs
    (``stratified_half``, split seed ``VAL_SPLIT_SEED``)."""
    rc = recipe(recipe_name)
    loss = STUDY_LOSSES["infonce" if loss_name == "untrained" else loss_name]
    cli, fit_s = graph_cli(TU_NAMES[ds], loss, seed, rc["epochs"], str(ROOT / "datasets" / "tu"),
                           train=loss_name != "untrained", lr=rc["lr"], augment=rc["augment"], hidden=rc["hidden"],
                           pooling=rc["pooling"], scheduler=rc["scheduler"], node_attr=rc["node_attr"],
                           std_attr=rc["std_attr"])
    cli.datamodule.setup()
    emb, lab = embed_loader(cli.model, cli.datamodule.test_dataloader())
    emb, lab = emb.float().cpu(), lab.cpu()
    out = {}
    for ev in evals:
        e = EVALS[ev]
        x = layer_readout(emb, 3, e["readout"])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="svc_protocol: the smallest class")
            if validation:
                idx = stratified_half(lab, VAL_SPLIT_SEED)
                res = svc_protocol(x[idx], lab[idx], folds=10, seed=seed, scale=e["scale"])
            else:
                res = svc_protocol(x, lab, folds=10, seed=seed, scale=e["scale"])
        out[ev] = {"acc": res["mean"], "fold_std": res["std"], "fit_s": fit_s}
    return out


def run_mnist(loss_name: str, seed: int) -> Dict:
    loss = STUDY_LOSSES["infonce" if loss_name == "untrained" else loss_name]
    r = mnist_probe_run(loss, seed, MNIST_EPOCHS, TRAIN_PER_CLASS, train=loss_name != "untrained")
    return {"acc": r["knn"], "linear": r["linear"], "fit_s": r["fit_s"]}


def key(r: dict) -> tuple:
    return (r["dataset"], r.get("recipe", ""), r["loss"], r["seed"], r.get("eval", "concat"))


# ------------------------------------------------------------------------------------ phases
def phase_select(args) -> None:
    """Every recipe of ``args.recipes`` (default: all) on its datasets, InfoNCE, selection seeds, under every
    evaluation of ``EVALS`` (one training run scored four ways); plus the untrained encoder of each encoder
    configuration (``encoder_tag``) under the same evaluations."""
    out = RESULTS / "unremix_select.jsonl"
    done = {key(r) for r in read_jsonl(out)}
    names = args.recipes or list(SELECT_RECIPES)
    for ds in args.datasets:
        if ds == "mnist5k":
            continue
        for seed in SELECT_SEEDS:
            for name in names:
                if ds not in RECIPE_DATASETS.get(name, [ds]):
                    continue
                if recipe(name)["node_attr"] and ds != "cuneiform":
                    continue
                for loss_name in ["untrained", "infonce"]:
                    rec = encoder_tag(name) if loss_name == "untrained" else name
                    todo = [ev for ev in EVALS if (ds, rec, loss_name, seed, ev) not in done]
                    if not todo:
                        continue
                    t0 = time.time()
                    res = run_graph(ds, name, loss_name, seed, validation=True, evals=todo)
                    for ev, r in res.items():
                        row = {"dataset": ds, "recipe": rec, "loss": loss_name, "seed": seed, "eval": ev, **r,
                               "total_s": time.time() - t0}
                        append_jsonl(out, row)
                        done.add(key(row))
                        print(json.dumps(row), flush=True)


# priority order of the study: blocks of (dataset, losses), each run for every seed before the next
# block starts, so that whatever finishes in the budget has all 5 seeds per row
PLAN = [
    ("mutag", ["untrained", "infonce", "hcl", "ur_density", "ur_diversity"]),
    ("cuneiform", ["untrained", "infonce", "hcl", "ur_density", "ur_diversity"]),
    ("mnist5k", ["untrained", "hcl", "ur_density_bp", "ur_diversity_bp"]),
    ("mutag", ["dcl", "ur_diversity_pl", "ur_sim", "ur_unc", "ur_unc_pl", "ur_rep_density", "ur_rep_diversity",
               "ur_density_pl"]),
    ("cuneiform", ["dcl", "ur_diversity_pl", "ur_sim", "ur_unc", "ur_unc_pl", "ur_rep_density",
                   "ur_rep_diversity", "ur_density_pl"]),
    ("mnist5k", ["infonce", "dcl", "ur_density", "ur_diversity", "ur_diversity_pl", "ur_unc_pl",
                 "ur_rep_diversity", "ur_rep_density", "ur_unc", "ur_sim", "ur_density_pl"]),
    ("mutag", ["ur_density_bp", "ur_diversity_bp"]),
    ("cuneiform", ["ur_density_bp", "ur_diversity_bp"]),
]


def phase_study(args) -> None:
    out = RESULTS / "unremix_study.jsonl"
    done = {key(r) for r in read_jsonl(out)}
    for ds, block in PLAN:
        if ds not in args.datasets:
            continue
        losses = [n for n in block if n == "untrained" or n in args.losses]
        for seed in args.seeds:
            rec = study_recipe(ds) if ds in RECIPES else "mnist"
            todo = [n for n in losses if (ds, rec, n, seed, "concat") not in done]
            if not todo:
                continue
            for loss_name in todo:
                t0 = time.time()
                if ds == "mnist5k":
                    res = run_mnist(loss_name, seed)
                else:
                    ev = RECIPES[ds][1]
                    res = run_graph(ds, RECIPES[ds][0], loss_name, seed, validation=False, evals=[ev])[ev]
                row = {"dataset": ds, "recipe": rec, "loss": loss_name, "seed": seed,
                       **res, "total_s": time.time() - t0}
                append_jsonl(out, row)
                done.add(key(row))
                print(json.dumps(row), flush=True)


# ------------------------------------------------------------------------------------ report
def ci(xs: List[float]) -> str:
    """``mean ± half-width`` of the 95% t-interval over seeds, in %."""
    return fmt_ci(xs, scale=100, digits=1)


def paired(rows: List[dict], name: str, ref: str, field: str = "acc") -> str:
    """Per-seed difference ``name - ref`` with its 95% t-interval, in % (``(n=k)`` when not all 5 seeds)."""
    if name == ref:
        return "-"
    return fmt_paired(by_seed(rows, field, loss=name), by_seed(rows, field, loss=ref), scale=100, digits=1,
                      expect_n=len(STUDY_SEEDS))


def wl_baseline(ds: str, rounds: int = 3) -> Dict[str, float]:
    """The WL subtree feature map (``wl_features``, node labels, ``rounds`` refinements) under the study's
    SVC protocol (RBF, all graphs, seeds 0-4, raw counts and z-scored): what a fixed, untrained WL-style
    map reaches, the reference point for an untrained GIN with sum pooling (GIN is at most as expressive
    as WL and a random injective-ish GIN approximates it: Xu et al., ICLR 2019, Lemma 2 / Theorem 3)."""
    cache = RESULTS / "unremix_wl.json"  # deterministic: computed once, re-read by --report
    stored = json.loads(cache.read_text()) if cache.exists() else {}
    if f"{ds}/{rounds}" in stored:
        return stored[f"{ds}/{rounds}"]
    dm = TUDataModule(TU_NAMES[ds], root=str(ROOT / "datasets" / "tu"))
    dm.setup()
    x = wl_features(wl_graphs(dm.dataset), rounds)
    y = np.array([int(g.y) for g in dm.dataset])
    out = {}
    for scale in (False, True):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="svc_protocol: the smallest class")
            accs = [svc_protocol(x, y, folds=10, seed=sd, scale=scale)["mean"] for sd in STUDY_SEEDS]
        out["z" if scale else "raw"] = accs
    out["dim"] = x.shape[1]
    stored[f"{ds}/{rounds}"] = out
    cache.write_text(json.dumps(stored, indent=1) + "\n")
    return out


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
    ("ur_density_bp", "ur_density", "back-propagated - detached UnReMix scores (full mix, density)"),
    ("ur_diversity_bp", "ur_diversity", "back-propagated - detached UnReMix scores (full mix, diversity)"),
]


def describe(name: str) -> str:
    """One-line description of training recipe ``name``."""
    rc = recipe(name)
    feats = ("node labels + z-scored attributes" if rc["std_attr"] else
             "node labels + raw attributes" if rc["node_attr"] else "node labels")
    return (f"GIN 3 x {rc['hidden']}, {rc['pooling']} pooling, {rc['epochs']} epochs, batch 128, lr {rc['lr']}, "
            f"augmentation {rc['augment']}, schedule {rc['scheduler']}, features: {feats}")


def select_table(sel: List[dict], ds: str) -> List[str]:
    """Validation table of one dataset: every recipe x evaluation, mean over the selection seeds and the
    mean paired difference to the untrained encoder of the same configuration and evaluation."""
    sub = [r for r in sel if r["dataset"] == ds]
    lines = [f"### {TU_NAMES[ds]}", "",
             "| recipe | lr | augmentation | epochs | schedule | width, pooling | features | "
             + " | ".join(f"{ev} (Δ untrained)" for ev in EVALS) + " |",
             "|---|---|---|---|---|---|---|" + "---|" * len(EVALS)]
    for name in SELECT_RECIPES:
        if not any(r["recipe"] == name for r in sub):
            continue
        rc, tag = recipe(name), encoder_tag(name)
        cells = []
        for ev in EVALS:
            tr = {r["seed"]: r["acc"] for r in sub if r["recipe"] == name and r.get("eval", "concat") == ev}
            un = {r["seed"]: r["acc"] for r in sub if r["recipe"] == tag and r.get("eval", "concat") == ev}
            if not tr:
                cells.append("-")
                continue
            m = 100 * sum(tr.values()) / len(tr)
            both = sorted(set(tr) & set(un))
            d = (f" ({100 * sum(tr[s_] - un[s_] for s_ in both) / len(both):+.1f})" if both else "")
            cells.append(f"{m:.1f}{d}" + ("" if len(tr) == len(SELECT_SEEDS) else f" n={len(tr)}"))
        feats = "labels + z-scored attr." if rc["std_attr"] else "labels + raw attr." if rc["node_attr"] else "labels"
        lines.append(f"| {name} | {rc['lr']} | {rc['augment']} | {rc['epochs']} | {rc['scheduler']} | "
                     f"{rc['hidden']}, {rc['pooling']} | {feats} | " + " | ".join(cells) + " |")
    tags = sorted({r["recipe"] for r in sub if r["loss"] == "untrained"})
    for tag in tags:
        cells = []
        for ev in EVALS:
            xs = [r["acc"] for r in sub if r["recipe"] == tag and r.get("eval", "concat") == ev]
            cells.append(f"{100 * sum(xs) / len(xs):.1f}" + ("" if len(xs) == len(SELECT_SEEDS) else f" n={len(xs)}")
                         if xs else "-")
        lines.append(f"| untrained `{tag}` | - | - | - | - | - | - | " + " | ".join(cells) + " |")
    return lines


def graph_section(ds: str, rec: str, sub: List[dict], title: str) -> List[str]:
    """Study table of one graph dataset for the records of recipe ``rec`` (``name`` or ``name/eval``)."""
    name, _, ev = rec.partition("/")
    ev = ev or "concat"
    e = EVALS[ev]
    sub = [r for r in sub if r["recipe"] == rec]
    lines = [f"### {TU_NAMES[ds]}{title}: {describe(name)}; SVC on the "
             f"{'concatenated per-layer' if e['readout'] == 'concat' else 'last-layer'} readout"
             f"{', z-scored per dimension on each training split' if e['scale'] else ''} of all graphs", ""]
    lines += loss_table(sub, ["SVC accuracy", "Δ HCL", "Δ untrained", "mean fold std"], lambda n, rs: [
        ci([r["acc"] for r in rs]), paired(sub, n, "hcl"), paired(sub, n, "untrained"),
        f"{100 * sum(r['fold_std'] for r in rs) / len(rs):.1f}"])
    lines += contrast_lines(sub, ds)
    return lines


def loss_table(sub: List[dict], header: List[str], cells) -> List[str]:
    """Markdown table of the study's losses with records in ``sub`` (``untrained`` first): label,
    ``cells(name, records)`` under ``header``, the number of seeds and the mean fit time."""
    rows = []
    for n in ["untrained"] + list(STUDY_LOSSES):
        rs = [r for r in sub if r["loss"] == n]
        if rs:
            rows.append([LABELS[n], *cells(n, rs), len(rs), f"{sum(r['fit_s'] for r in rs) / len(rs):.0f}"])
    return markdown_table(["loss", *header, "seeds", "fit s"], rows)


def contrast_lines(sub: List[dict], ds: str) -> List[str]:
    contrasts = []
    for a, b, what in CONTRASTS:
        d = paired(sub, a, b)
        if d != "-":
            contrasts.append(f"{what}: {d}")
    if not contrasts:
        return []
    return ["", "Paired contrasts (per-seed difference, 95% t-interval, accuracy points"
            + (", kNN" if ds == "mnist5k" else "") + "): " + "; ".join(contrasts) + "."]


def missing_line(sub: List[dict]) -> List[str]:
    missing = []
    for n in ["untrained"] + list(STUDY_LOSSES):
        seeds = [s_ for s_ in STUDY_SEEDS if not any(r["loss"] == n and r["seed"] == s_ for r in sub)]
        if seeds:
            missing.append(f"{n} (seeds {', '.join(map(str, seeds))})" if len(seeds) < len(STUDY_SEEDS) else n)
    return ["", "Not run in the budget (priority order `PLAN`): " + "; ".join(missing) + "."] if missing else []


def report(args) -> str:
    rows = read_jsonl(RESULTS / "unremix_study.jsonl")
    sel = read_jsonl(RESULTS / "unremix_select.jsonl")
    lines = ["# UnReMix study (issue 10): representativeness direction, uncertainty variants, graph recipe", "",
             "Produced by `experiments/unremix_study.py` (`--phase select`, `--phase study`, `--report`); "
             "per-run numbers in `unremix_study.jsonl` / `unremix_select.jsonl` next to this file. CPU, "
             "1 torch thread, `nice -n 10` on a shared 2-core machine.", ""]
    if sel:
        lines += ["## 1. Graph recipe selection (validation only)", "",
                  "InfoNCE, batch 128, GIN with 3 layers, GraphCL head, Adam. Selection seeds "
                  + ", ".join(map(str, SELECT_SEEDS)) + " (not study seeds); score = SVC protocol (10-fold, C grid "
                  f"1e-3..1e3) on a fixed stratified half of the graphs (split seed {VAL_SPLIT_SEED}). Accuracy %, "
                  "mean over the selection seeds; in brackets the mean paired difference to the untrained encoder of "
                  "the same configuration (same seed, width, pooling, features) under the same evaluation. One "
                  "training run is scored under four evaluations: `concat` = the concatenated per-layer readouts "
                  "(InfoGraph / GraphCL), `last` = the last layer's readout only, `_z` = each embedding dimension "
                  "z-scored on the SVC's training split (`svc_protocol(scale=True)`). Rows of the first search "
                  "(recipes `old` .. `lr01_node_drop_attr`) were scored under `concat` only.", ""]
        for ds in ("mutag", "cuneiform"):
            lines += select_table(sel, ds) + [""]
        lines += ["Chosen for the study: " + ", ".join(f"{ds}: `{study_recipe(ds)}`" for ds in RECIPES) + ".", ""]
    lines += ["## 2. Study: 5 seeds, test protocol", "",
              "Losses share t = 0.5, tau_plus = 0.1, beta = 1; UnReMix weights (1, 1, 1) for the full mix, density "
              "k = 10, diversity over all candidates (k = None). Cells: mean ± half-width of the 95% t-interval "
              "over seeds (t with n-1 dof), in accuracy points; 'Δ HCL' / 'Δ untrained' are the paired per-seed "
              "differences (same seed: same initialisation, views and batch order) with their 95% t-interval. "
              "`untrained` = the same encoder (same features, width, pooling, readout, evaluation) at its random "
              "initialisation.", ""]
    for ds in ("mnist5k", "mutag", "cuneiform"):
        sub = [r for r in rows if r["dataset"] == ds]
        if not sub:
            continue
        if ds == "mnist5k":
            lines += [f"### MNIST-5k (contrastive): SmallCNN, {MNIST_EPOCHS} epochs on {10 * TRAIN_PER_CLASS} digits, "
                      "batch 64, lr 2e-3 (the recipe of compare_contrastive.py); weighted kNN (k=20) top-1 on "
                      "the 1,000 test digits and linear probe", ""]
            lines += loss_table(sub, ["kNN top-1", "Δ HCL (kNN)", "Δ untrained (kNN)", "linear top-1"],
                                lambda n, rs: [ci([r["acc"] for r in rs]), paired(sub, n, "hcl"),
                                               paired(sub, n, "untrained"), ci([r["linear"] for r in rs])])
            lines += contrast_lines(sub, ds) + missing_line(sub) + [""]
            continue
        chosen = study_recipe(ds)
        lines += graph_section(ds, chosen, sub, "") + missing_line([r for r in sub if r["recipe"] == chosen]) + [""]
        for rec in sorted({r["recipe"] for r in sub} - {chosen}):
            lines += graph_section(ds, rec, sub, " (previous recipe)" if rec in PREVIOUS.get(ds, ())
                                   else " (side check, not the study's recipe)") + [""]
        if ds == "mutag":
            sub_c = [r for r in sub if r["recipe"] == chosen]
            wl_lines = []
            for rounds in (1, 3):
                wl = wl_baseline(ds, rounds)
                rows_wl = [{"loss": "wl", "seed": sd, "acc": a} for sd, a in zip(STUDY_SEEDS, wl["raw"])]
                both = rows_wl + [r for r in sub_c if r["loss"] in ("untrained", "infonce", "hcl")]
                wl_lines.append(
                    f"{rounds} round{'s' if rounds > 1 else ''} ({wl['dim']} features): {ci(wl['raw'])} raw counts, "
                    f"{ci(wl['z'])} z-scored; paired WL - untrained GIN {paired(both, 'wl', 'untrained')}, "
                    f"WL - InfoNCE {paired(both, 'wl', 'infonce')}, WL - HCL {paired(both, 'wl', 'hcl')}")
            lines += ["Fixed Weisfeiler-Lehman subtree features (`wl_features`: counts of the WL labels of rounds "
                      "0..h, no training) under the same SVC protocol and folds (seeds 0-4): "
                      + "; ".join(wl_lines) + ". Paired differences against the rows of the chosen recipe.", ""]
        if ds == "cuneiform":  # there the multiset classes are the WL classes (30 = 30, checked)
            fc = feature_ceiling(ds)
            lines += [f"Node-feature ceiling with the node labels only: the {fc['graphs']} graphs have {fc['distinct']} "
                      f"distinct node-label multisets; the majority label per multiset reaches "
                      f"{100 * fc['train_ceiling']:.1f}% on all graphs and {100 * fc['cv_lookup']:.1f}% under the same "
                      "stratified CV (a lookup table of the multisets, `feature_ceiling`). The continuous node "
                      "attributes are not bound by it.", ""]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phase", choices=["select", "study"], default=None)
    p.add_argument("--datasets", nargs="+", default=["mutag", "cuneiform", "mnist5k"])
    p.add_argument("--losses", nargs="+", default=list(STUDY_LOSSES))
    p.add_argument("--seeds", nargs="+", type=int, default=STUDY_SEEDS)
    p.add_argument("--study-recipe", nargs="+", default=[], metavar="DATASET=RECIPE[/EVAL]",
                   help="study phase: run these datasets with another recipe than RECIPES (a side check; the "
                        "report lists its rows under 'other recipe')")
    p.add_argument("--recipes", nargs="+", default=None, choices=list(SELECT_RECIPES),
                   help="select phase: only these recipes (default: all)")
    p.add_argument("--report", action="store_true", help="render the markdown from the .jsonl files")
    p.add_argument("--notes", default=None, help="a markdown file appended to the report")
    args = p.parse_args(argv)
    for spec in args.study_recipe:
        ds, _, rec = spec.partition("=")
        name, _, ev = rec.partition("/")
        if ds not in TU_NAMES or name not in SELECT_RECIPES or (ev or "concat") not in EVALS:
            raise SystemExit(f"--study-recipe {spec!r}: expected DATASET=RECIPE[/EVAL] with DATASET in "
                             f"{list(TU_NAMES)}, RECIPE in SELECT_RECIPES and EVAL in {list(EVALS)}")
        RECIPES[ds] = (name, ev or "concat")
    quiet_study(1)
    if args.phase == "select":
        phase_select(args)
    elif args.phase == "study":
        phase_study(args)
    if args.report:
        text = report(args)
        if args.notes:
            text += "\n" + Path(args.notes).read_text()
        atomic_write(RESULTS / "unremix_study.md", text)
        print(text)


if __name__ == "__main__":
    from graphneg.cli import quiet_lightning

    with quiet_lightning():  # no cloud-service tips / Lightning-internal deprecation warnings
        main()
