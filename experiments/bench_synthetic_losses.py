"""Benchmark: the metric losses on GCA-HNG's synthetic negatives, compact vs padded layout.

What is measured: forward + backward of each graphneg metric loss with the synthetic negatives of one
GCA-HNG generator call (``loss(z, y, neg_embeddings=x, neg_labels=, anchor_index=[, neg_mask=])``,
gradients to ``z`` and ``x``), once with the compact layout (``GCAHNG(static_shapes=False)``, ``M`` = one
row per synthetic negative, the CPU default) and once with the padded one (``static_shapes=True``, the CUDA
default: a static ``M`` rows with ``neg_mask``, no host sync). Both come from the same generator weights
and draws, so the real rows are the same and the losses agree (checked, printed). The padded ``M`` is
``min(E, B * min(num_classes - 1, B - 1))`` with ``num_classes`` the *training* class count, so it grows
with the dataset's classes while the compact ``M = B * (classes in the batch - 1)`` does not.

Batches follow the official layouts (``bench_gca.layout``: 27 classes x 3 at B = 81, B/4 x 4 otherwise),
D = 512, ``num_classes`` = 100 (CUB-200's and Cars196's training classes are 100 and 98). Time: median
of ``--reps`` repetitions, compact and padded interleaved (same machine load), one CPU thread; peak memory
is not measured here (the losses' extra tensors are ``O(M)`` except the triplet loss's all-triplets
``[M, B]`` block).

    python experiments/bench_synthetic_losses.py [--sizes 81 256] [--reps 5]
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import atomic_write, markdown_table  # noqa: E402
from bench_gca import layout  # noqa: E402
from graphneg.losses import MultiSimilarityLoss, NPairLoss, ProxyAnchorLoss, TripletMarginLoss  # noqa: E402
from graphneg.nn import GCAHNG  # noqa: E402
from graphneg.validation import value_checks  # noqa: E402

DIM, NUM_CLASSES = 512, 100
LOSSES = {
    "MultiSimilarityLoss(mining=True)": lambda: MultiSimilarityLoss(mining=True),
    "NPairLoss(anchors='official')": lambda: NPairLoss(anchors="official"),
    "TripletMarginLoss() (all triplets)": TripletMarginLoss,
    "TripletMarginLoss(mining='hard')": lambda: TripletMarginLoss(mining="hard"),
    "ProxyAnchorLoss": lambda: ProxyAnchorLoss(NUM_CLASSES, DIM),
}


def negatives(b: int, static: bool):
    n_cls, m = layout(b)
    torch.manual_seed(0)
    gen = GCAHNG(DIM, num_classes=NUM_CLASSES, num_layers=2, heads=4, dropout=0.0, static_shapes=static)
    torch.manual_seed(1)
    z = torch.randn(b, DIM)
    y = torch.arange(n_cls).repeat(m)
    with torch.no_grad(), value_checks(False):
        out = gen(z, y, j_mean=2.0, generator=torch.Generator().manual_seed(0))
    return z, y, out


def step(loss, z0, y, out):
    z = z0.clone().requires_grad_(True)
    x = out.x.clone().requires_grad_(True)
    kw = {} if out.mask is None else {"neg_mask": out.mask}
    value = loss(z, y, neg_embeddings=x, neg_labels=out.labels, anchor_index=out.anchor_index, **kw)
    value.backward()
    return float(value.detach())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[81, 256])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="B = 81 only, 2 repetitions (as the other benchmarks' --quick)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "bench_synthetic_losses.md"))
    args = p.parse_args()
    if args.quick:
        args.sizes, args.reps = [81], 2
    torch.set_num_threads(1)
    load = os.getloadavg()
    t_start = time.perf_counter()
    rows = []
    for b in args.sizes:
        data = {static: negatives(b, static) for static in (False, True)}
        m_c, m_p = data[False][2].x.size(0), data[True][2].x.size(0)
        for name, make in LOSSES.items():
            losses = {}
            for static in (False, True):
                torch.manual_seed(2)
                losses[static] = make()
            times = {False: [], True: []}
            values = {}
            with value_checks(False):
                for static in (False, True):  # warm-up
                    values[static] = step(losses[static], *data[static])
                for r in range(args.reps):
                    for static in ((False, True) if r % 2 == 0 else (True, False)):
                        t0 = time.perf_counter()
                        step(losses[static], *data[static])
                        times[static].append(time.perf_counter() - t0)
            tc, tp = statistics.median(times[False]), statistics.median(times[True])
            same = abs(values[False] - values[True]) <= 1e-4 * max(1.0, abs(values[False]))
            rows.append([b, name, m_c, m_p, f"{1e3 * tc:.1f}", f"{1e3 * tp:.1f}", f"{tp / tc:.2f}",
                         f"{values[False]:.5f} / {values[True]:.5f}" + ("" if same else " DIFFER")])
            print(" | ".join(str(c) for c in rows[-1]), flush=True)
    table = "\n".join(markdown_table(
        ["B", "loss", "M compact", "M padded", "compact (ms)", "padded (ms)", "padded / compact",
         "loss compact / padded"], rows))
    text = f"""# Metric losses on GCA-HNG's synthetic negatives: compact vs padded layout

`python experiments/bench_synthetic_losses.py --sizes {' '.join(map(str, args.sizes))} --reps {args.reps}` -
CPU ({platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, 1 thread), load average at
start {load[0]:.1f} (shared machine: absolute times are noisy; the two layouts run interleaved, so their
ratio is comparable), {datetime.date.today()}, {time.perf_counter() - t_start:.0f} s.

Forward + backward of each loss on the negatives of one GCA-HNG call (chain random weighting, D = {DIM},
{NUM_CLASSES} training classes, the official batch layouts), median of {args.reps} repetitions. The last
column is the check that both layouts give the same loss.

{table}
"""
    atomic_write(args.out, text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
