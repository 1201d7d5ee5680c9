"""Benchmark the contrastive loss family: forward+backward time and peak memory.

For each batch size B (two views of B samples, D-dim embeddings, so 2B anchors and a [2B, 2B]
similarity matrix) every loss runs forward + backward on the same random inputs. Repetitions are
interleaved (round r runs the losses in an order rotated by r) so machine noise hits all losses alike;
the table reports medians and ratios to InfoNCELoss measured in the same run.

Peak memory of one forward+backward (inputs excluded, their gradients included):
* CUDA: ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, minus the memory
  allocated before the call;
* CPU: a ``torch.profiler`` trace with ``profile_memory=True``; every allocation and free event
  (``self_cpu_memory_usage``) is replayed in time order and the running total's maximum is the peak.

Usage::

    python experiments/bench_losses.py                 # B in {256, 1024, 4096}, D=128
    python experiments/bench_losses.py --quick         # B in {128, 256, 512}, fewer repetitions
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import atomic_write, markdown_table  # noqa: E402
from graphneg.losses import DebiasedContrastiveLoss, HCLLoss, InfoNCELoss, UnReMixLoss  # noqa: E402


def make_losses():
    return {
        "InfoNCELoss": InfoNCELoss(temperature=0.5),
        "DCLLoss": DebiasedContrastiveLoss(temperature=0.5, tau_plus=0.1),
        "HCLLoss": HCLLoss(temperature=0.5, tau_plus=0.1, beta=1.0),
        "UnReMixLoss": UnReMixLoss(temperature=0.5, tau_plus=0.1, beta=1.0, weights=(1, 1, 1), k=10,
                                   representativeness="density"),
    }


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step(loss_fn, z1, z2):
    z1.grad = None
    z2.grad = None
    loss_fn(z1, z2).backward()


def time_once(loss_fn, z1, z2, device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    step(loss_fn, z1, z2)
    _sync(device)
    return time.perf_counter() - t0


def peak_memory(loss_fn, z1, z2, device) -> int:
    """Peak bytes allocated during one forward+backward (see the module docstring)."""
    z1.grad = None
    z2.grad = None
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step(loss_fn, z1, z2)
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(loss_fn, z1, z2)
    events = [e for e in prof.events() if e.self_cpu_memory_usage != 0]
    events.sort(key=lambda e: (e.time_range.start, e.time_range.end))
    current = peak = 0
    for e in events:
        current += e.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


def run(sizes, dim, reps, device, seed, min_time=1.0, max_reps=50, budget=60.0):
    rows = []
    for b in sizes:
        g = torch.Generator().manual_seed(seed + b)
        z1 = torch.randn(b, dim, generator=g).to(device).requires_grad_()
        z2 = torch.randn(b, dim, generator=g).to(device).requires_grad_()
        losses = make_losses()
        names = list(losses)
        # warm-up (allocator, kernels, lazy imports), timed only to choose the number of repetitions
        warm = {name: time_once(losses[name], z1, z2, device) for name in names}
        # small batches are fast and noisy: repeat until each loss ran about min_time seconds;
        # large ones are slow: cap a round of all losses at budget / reps seconds (at least 3 reps)
        n_reps = min(max(reps, math.ceil(min_time / max(min(warm.values()), 1e-6))), max_reps)
        n_reps = max(3, min(n_reps, int(budget // max(sum(warm.values()), 1e-6))))
        times = {name: [] for name in names}
        for r in range(n_reps):
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                times[name].append(time_once(losses[name], z1, z2, device))
        mems = {name: peak_memory(losses[name], z1, z2, device) for name in names}
        med = {name: statistics.median(v) for name, v in times.items()}
        for name in names:
            rows.append({
                "B": b, "loss": name, "time_s": med[name], "time_ratio": med[name] / med["InfoNCELoss"],
                "mem": mems[name], "mem_ratio": mems[name] / max(mems["InfoNCELoss"], 1),
                "bytes_per_entry": mems[name] / (2 * b) ** 2, "reps": n_reps,
            })
        print(f"B={b}: " + ", ".join(f"{n} {med[n] * 1e3:.1f} ms / {mems[n] / 2**20:.1f} MiB" for n in names),
              flush=True)
        del z1, z2
    return rows


def to_markdown(rows, args, device, total_s):
    by = {(r["B"], r["loss"]): r for r in rows}
    sizes = sorted({r["B"] for r in rows})
    names = list(dict.fromkeys(r["loss"] for r in rows))
    lines = [
        "# Contrastive loss benchmark (forward + backward)",
        "",
        "Command: `" + " ".join(["python experiments/bench_losses.py"] + sys.argv[1:]) + "`",
        f"Date: {datetime.datetime.now().isoformat(timespec='seconds')}; total run {total_s:.0f} s",
        f"Device: {device_name(device)}; torch {torch.__version__}; threads {torch.get_num_threads()}; "
        f"Python {platform.python_version()}; 1-min load average at start / end: "
        f"{args.load_start:.1f} / {os.getloadavg()[0]:.1f} (other jobs share the machine: compare ratios "
        "within this run, not absolute times across runs)",
        f"Setup: D={args.dim}, two views of B samples (2B anchors, [2B, 2B] similarities), float32, "
        f"interleaved repetitions per loss after one warm-up ({args.reps} by default, more for small B "
        f"until each loss ran about {args.min_time:g} s, fewer (>= 3) for large B to stay within "
        f"{args.budget:g} s per size; column 'reps'), median time. "
        "UnReMixLoss: weights=(1, 1, 1), k=10, representativeness density, detach_scores=True; all losses temperature 0.5, "
        "tau_plus 0.1, beta 1.",
        "Peak memory: " + (
            "`torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`, minus memory allocated "
            "before the step." if device.type == "cuda" else
            "`torch.profiler` trace with `profile_memory=True`; allocation/free events replayed in time "
            "order, maximum of the running total (inputs excluded, their gradients included)."
        ),
        "",
    ]
    lines += markdown_table(
        ["B", "loss", "reps", "time (ms)", "time / InfoNCE", "peak mem (MiB)", "mem / InfoNCE",
         "bytes per (2B)^2 entry"],
        [[b, n, r["reps"], f"{r['time_s'] * 1e3:.1f}", f"{r['time_ratio']:.2f}", f"{r['mem'] / 2**20:.1f}",
          f"{r['mem_ratio']:.2f}", f"{r['bytes_per_entry']:.1f}"]
         for b in sizes for n in names for r in [by[(b, n)]]], align="rlrrrrrr")
    lines += ["", "## Memory growth (O(B^2) check)", "",
              "Peak memory ratio between consecutive batch sizes; O(B^2) means (B2/B1)^2.", ""]
    lines += markdown_table(
        ["loss"] + [f"{a} -> {b}" for a, b in zip(sizes, sizes[1:])],
        [[n] + [f"{by[(b, n)]['mem'] / max(by[(a, n)]['mem'], 1):.2f} (B^2: {(b / a) ** 2:.0f})"
                for a, b in zip(sizes, sizes[1:])] for n in names], align="l" + "r" * (len(sizes) - 1))
    lines += ["", "## Target", ""]
    ref_b = 1024 if 1024 in sizes else sizes[len(sizes) // 2]
    ratio = by[(ref_b, "UnReMixLoss")]["time_s"] / by[(ref_b, "HCLLoss")]["time_s"]
    mem_ratio = by[(ref_b, "UnReMixLoss")]["mem"] / max(by[(ref_b, "HCLLoss")]["mem"], 1)
    verdict = "met" if ratio <= 1.5 else "missed"
    lines.append(
        f"UnReMixLoss / HCLLoss at B={ref_b}: time {ratio:.2f}x, memory {mem_ratio:.2f}x "
        f"(target time <= 1.5x: {verdict})."
    )
    return "\n".join(lines) + "\n"


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} logical cores)"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--min-time", type=float, default=3.0,
                   help="repeat small batches until each loss ran about this many seconds")
    p.add_argument("--budget", type=float, default=60.0,
                   help="seconds of timed repetitions per batch size (at least 3 repetitions)")
    p.add_argument("--quick", action="store_true", help="B in {128, 256, 512}, 3+ repetitions, 0.3 s")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (default 1: on a shared machine OpenMP regions with more threads "
                        "than free cores stall for ~100 ms and swamp the measurement)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "bench_losses.md"))
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.reps, args.min_time = [128, 256, 512], 3, 0.3
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    args.load_start = os.getloadavg()[0]
    t0 = time.perf_counter()
    rows = run(args.sizes, args.dim, args.reps, device, args.seed, args.min_time, budget=args.budget)
    md = to_markdown(rows, args, device, time.perf_counter() - t0)
    out = Path(args.out)
    atomic_write(out, md)
    print(md)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
