"""Collect finished benchmark runs (TensorBoard event files) into a paper-shaped table and a Recall@K plot.

    python experiments/report.py                       # runs/gca_hng -> runs/gca_hng/report.md, report.png
    python experiments/report.py RUNS --out table.md --plot recall.png --select last --overwrite

A run is a folder holding ``events.out.tfevents.*`` (Lightning's ``<default_root_dir>/lightning_logs/
version_N``); its name is the path below RUNS without ``lightning_logs/version_N`` (the config's
``default_root_dir``, e.g. ``cub200_resnet50`` or ``baselines/sop_resnet50_ms``), and its dataset the
first ``_``-separated part of the last component. For each run the evaluation at the epoch with the best
``val/recall@1`` is reported (``--select best``, as the official ``train.py`` keeps ``bestR_1.pth``) or
the last one (``--select last``); ``test/*`` scalars, when present, are reported instead of ``val/*``.

The markdown has one table per dataset, shaped like the paper's: rows = runs, columns = Recall@K of the
dataset's protocol (in %), MAP@R and R-Precision (in %). The PNG (matplotlib, in the ``dev`` and ``demo``
extras) has one panel per dataset with Recall@K against K. Existing output files are kept unless
``--overwrite``; outputs are written atomically.
"""
from __future__ import annotations

import argparse
import io
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import atomic_write, markdown_table  # noqa: E402
from graphneg.metrics.retrieval import RECALL_KS  # noqa: E402  (the K of each benchmark's protocol)

TITLES = {"cub200": "CUB-200-2011", "cars196": "Cars196", "sop": "Stanford Online Products", "inshop": "In-Shop"}


def read_scalars(run_dir: Path) -> Dict[str, List[Tuple[int, float]]]:
    """All scalar series of the event files in ``run_dir``: ``{tag: [(step, value), ...]}``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags().get("scalars", [])}


def run_name(run_dir: Path, root: Path) -> str:
    parts = list(run_dir.relative_to(root).parts)
    if len(parts) >= 2 and parts[-2] == "lightning_logs" and re.fullmatch(r"version_\d+", parts[-1]):
        parts = parts[:-2]
    return "/".join(parts) or run_dir.name


def summarise(scalars: Dict[str, List[Tuple[int, float]]], select: str) -> Optional[Dict[str, float]]:
    """The metrics of one evaluation: best ``recall@1`` epoch or the last one."""
    stage = "test" if any(t.startswith("test/recall@") for t in scalars) else "val"
    r1 = scalars.get(f"{stage}/recall@1")
    if not r1:
        return None
    pick = max(range(len(r1)), key=lambda i: (r1[i][1], -i)) if select == "best" else len(r1) - 1
    out = {}
    for tag, series in scalars.items():
        if tag.startswith(stage + "/") and len(series) == len(r1):
            out[tag.split("/", 1)[1]] = series[pick][1]
    out["step"] = float(r1[pick][0])
    return out


def collect(root: Path, select: str = "best") -> Dict[str, Dict[str, Dict[str, float]]]:
    """``{dataset: {run name: metrics}}`` for every run under ``root`` (newest version of a name wins)."""
    found: Dict[str, Tuple[float, Path]] = {}
    for ev in root.rglob("events.out.tfevents.*"):
        name = run_name(ev.parent, root)
        mtime = ev.stat().st_mtime
        if name not in found or mtime > found[name][0]:
            found[name] = (mtime, ev.parent)
    table: Dict[str, Dict[str, Dict[str, float]]] = defaultdict(dict)
    for name, (_, d) in sorted(found.items()):
        res = summarise(read_scalars(d), select)
        if res is None:
            continue
        dataset = name.split("/")[-1].split("_")[0]
        table[dataset if dataset in RECALL_KS else "other"][name] = res
    return dict(table)


def markdown(table: Dict[str, Dict[str, Dict[str, float]]], select: str) -> str:
    lines = [f"# Retrieval benchmarks ({select} Recall@1 evaluation of each run; values in %)", ""]
    for ds in [d for d in RECALL_KS if d in table] + [d for d in table if d not in RECALL_KS]:
        ks = RECALL_KS.get(ds) or sorted({int(m[7:]) for r in table[ds].values() for m in r if m.startswith("recall@")})
        lines += [f"## {TITLES.get(ds, ds)}", ""]
        head = ["run"] + [f"R@{k}" for k in ks] + ["MAP@R", "RP", "step"]
        rows = [[name] + [_pct(m.get(f"recall@{k}")) for k in ks]
                + [_pct(m.get("map@r")), _pct(m.get("r_precision")), str(int(m["step"]))]
                for name, m in table[ds].items()]
        lines += markdown_table(head, rows) + [""]
    return "\n".join(lines)


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def plot(table: Dict[str, Dict[str, Dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [d for d in RECALL_KS if d in table]
    fig, axes = plt.subplots(1, max(len(datasets), 1), figsize=(4.2 * max(len(datasets), 1), 3.6), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        ks = RECALL_KS[ds]
        for name, m in table[ds].items():
            ax.plot(ks, [100 * m.get(f"recall@{k}", float("nan")) for k in ks], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_xticks(ks)
        ax.set_xticklabels([str(k) for k in ks])
        ax.set_title(TITLES[ds])
        ax.set_xlabel("K")
        ax.set_ylabel("Recall@K (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="?", default="runs/gca_hng")
    p.add_argument("--out", default=None, help="markdown file (default RUNS/report.md)")
    p.add_argument("--plot", default=None, help="PNG file (default RUNS/report.png)")
    p.add_argument("--select", choices=("best", "last"), default="best")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    args = p.parse_args(argv)
    root = Path(args.runs)
    if not root.is_dir():
        print(f"error: {root} is not a folder of runs (trainer.default_root_dir of the configs)", file=sys.stderr)
        return 1
    out = Path(args.out) if args.out else root / "report.md"
    png = Path(args.plot) if args.plot else root / "report.png"
    for f in (out, png):
        if f.exists() and not args.overwrite:
            print(f"error: {f} exists; pass --overwrite to replace it or choose another path", file=sys.stderr)
            return 1
    table = collect(root, args.select)
    if not table:
        print(f"error: no run under {root} has logged val/recall@1 or test/recall@1", file=sys.stderr)
        return 1
    text = markdown(table, args.select)
    atomic_write(out, text)
    plot(table, png)
    print(text)
    print(f"wrote {out} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
