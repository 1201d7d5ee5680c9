"""Benchmark: SOP-scale retrieval evaluation (60,502 x 512 embeddings, Recall@{1,10,100,1000}, MAP@R,
R-Precision) with graphneg's chunked evaluator, next to an exact faiss flat index.

What is measured: ``graphneg.metrics.retrieval_metrics(emb, labels, ks=(1, 10, 100, 1000), nmi=False,
backend=B)`` on random embeddings of SOP's test size (60,502 x 512, float32) with SOP-like labels
(11,316 classes of 2 + Multinomial sizes, mean 5.35 images a class; the evaluator's cost does not depend
on what the embeddings encode). ``backend="torch"`` is graphneg's one kNN kernel
(:func:`graphneg.ops.knn.chunked_topk`, at most ``max_block_elements`` = 2**24 similarities a block; on
the CPU its ``"prefilter"`` selection over 4096-wide GEMM tiles); ``backend="faiss"`` an exact
``IndexFlatIP`` search (the ``faiss`` extra), printed as "not installed" when faiss-cpu is missing. Both
run in the same invocation, one after the other, and the script prints their time ratio. Both backends
compute the same metrics (checked below).

Memory: each backend runs in a fresh subprocess with ``MALLOC_MMAP_THRESHOLD_=65536`` (large blocks are
mmap-ed and returned to the OS when freed, so the resident set tracks live tensors). After the
embeddings exist, the process resets its peak-RSS counter (``echo 5 > /proc/self/clear_refs``) and
records ``VmRSS``; after the evaluation it reads ``VmHWM``. "Peak beyond embeddings" = ``VmHWM -
VmRSS(before)``: every allocation of the evaluation (the normalised copy, similarity blocks, top-k
buffers, faiss's index copy). Falls back to ``ru_maxrss`` when ``clear_refs`` is not writable (flagged).

Load-matched ratio: the subprocess runs above happen one after the other, so on a shared machine they
can see different loads; a third subprocess runs both neighbour searches (the part of the evaluation
that differs between the backends; the metric arithmetic on the ``[c, K]`` neighbour lists costs ~1 %)
in one process, advanced alternately chunk by chunk, and prints their time ratio.

Time: wall clock and process CPU time of one evaluation (the CPU time is what the load of a shared
machine changes least; the 1-minute load average at the start and end of each run is printed), single-threaded by default (``--threads``; the reference machine
has 2 cores shared with other jobs). Usage:
``python experiments/bench_retrieval_eval.py [--n 60502] [--out experiments/results/bench_retrieval_eval.md]``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import PeakRSS  # noqa: E402  (the studies' one /proc peak-memory reader)

KS = (1, 10, 100, 1000)


def child(backend: str, n: int, dim: int, classes: int, seed: int, threads: int) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from graphneg.metrics.retrieval import retrieval_metrics
    from graphneg.ops.knn import faiss_available

    if backend == "faiss" and not faiss_available():
        return {"backend": backend, "installed": False}
    if backend == "faiss":
        import faiss

        faiss.omp_set_num_threads(threads)
    rng = np.random.default_rng(seed)
    sizes = 2 + rng.multinomial(n - 2 * classes, np.full(classes, 1.0 / classes))
    labels = torch.from_numpy(rng.permutation(np.repeat(np.arange(classes), sizes)))
    emb = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
    emb_bytes = emb.numel() * emb.element_size()
    load0 = os.getloadavg()[0]
    with PeakRSS() as mem:  # VmHWM after - VmRSS before, peak counter reset first
        t0, c0 = time.perf_counter(), time.process_time()
        res = retrieval_metrics(emb, labels, ks=KS, nmi=False, backend=backend)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"backend": backend, "installed": True, "wall_s": wall, "cpu_s": cpu, "load": [load0, os.getloadavg()[0]],
            "peak_beyond_MiB": mem.bytes / 2**20,
            "embeddings_MiB": emb_bytes / 2**20, "exact_peak": mem.exact, "metrics": res,
            "max_class": int(sizes.max()), "min_class": int(sizes.min())}


def interleaved(n: int, dim: int, classes: int, seed: int, threads: int) -> dict:
    """Both backends' neighbour searches in one process, advanced alternately (the one that has
    covered fewer queries takes the next chunk), so that both see the same load of a shared machine.
    Times each chunk (wall and process CPU) and sums them per backend."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from graphneg.ops.knn import faiss_available, nearest_neighbours

    if not faiss_available():
        return {"installed": False}
    import faiss

    faiss.omp_set_num_threads(threads)
    rng = np.random.default_rng(seed)
    sizes = 2 + rng.multinomial(n - 2 * classes, np.full(classes, 1.0 / classes))
    emb = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
    k_max = min(max(KS[-1], int(sizes.max()) - 1), n - 1)  # what retrieval_metrics searches
    gens = {b: nearest_neighbours(emb, emb, k_max, True, backend=b) for b in ("torch", "faiss")}
    done = {b: 0 for b in gens}
    wall = {b: 0.0 for b in gens}
    cpu = {b: 0.0 for b in gens}
    load = [os.getloadavg()[0]]
    while gens:
        b = min(gens, key=lambda name: done[name])
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            _, idx = next(gens[b])
        except StopIteration:
            del gens[b]
            continue
        wall[b] += time.perf_counter() - t0
        cpu[b] += time.process_time() - c0
        done[b] += idx.size(0)
    load.append(os.getloadavg()[0])
    return {"installed": True, "wall_s": wall, "cpu_s": cpu, "queries": done, "load": load, "k": k_max}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=60502)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--classes", type=int, default=11316)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the markdown table here")
    p.add_argument("--child", choices=("torch", "faiss", "interleaved"), default=None, help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true",
                   help="n = 10,000 and 1,000 classes (as the other benchmarks' --quick: `nox -s bench -- --quick`)")
    args = p.parse_args()
    if args.quick:
        args.n, args.classes = 10000, 1000
    if args.child == "interleaved":
        print(json.dumps(interleaved(args.n, args.dim, args.classes, args.seed, args.threads)))
        return
    if args.child:
        print(json.dumps(child(args.child, args.n, args.dim, args.classes, args.seed, args.threads)))
        return
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS=str(args.threads))
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    rows = {}
    for backend in ("torch", "faiss", "interleaved"):
        cmd = [sys.executable, __file__, "--child", backend, "--n", str(args.n), "--dim", str(args.dim),
               "--classes", str(args.classes), "--threads", str(args.threads), "--seed", str(args.seed)]
        # the memory runs need the low mmap threshold; the timing-only interleaved run uses the default
        # allocator (what users run: it reuses freed blocks instead of faulting in fresh pages)
        run_env = env if backend != "interleaved" else {k: v for k, v in env.items() if k != "MALLOC_MMAP_THRESHOLD_"}
        out = subprocess.run(cmd, env=run_env, capture_output=True, text=True, check=True).stdout
        rows[backend] = json.loads(out.strip().splitlines()[-1])
    t = rows["torch"]
    lines = [
        f"# SOP-scale retrieval evaluation: {args.n:,} x {args.dim} float32 embeddings "
        f"({t['embeddings_MiB']:.0f} MiB), {args.classes:,} classes ({t['min_class']}-{t['max_class']} images), "
        f"Recall@{{1,10,100,1000}} + MAP@R + R-Precision, {args.threads} thread(s)",
        "",
        "| evaluator | wall time (s) | CPU time (s) | load avg (start, end) | peak memory beyond the embeddings (MiB) "
        "| recall@1 | recall@1000 | map@r |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for backend, label in (("torch", "graphneg chunked top-k (torch)"), ("faiss", "faiss IndexFlatIP (exact)")):
        r = rows[backend]
        if not r["installed"]:
            lines.append(f"| {label} | not installed | - | - | not installed | - | - | - |")
            continue
        flag = "" if r["exact_peak"] else " (ru_maxrss)"
        m = r["metrics"]
        lines.append(f"| {label} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['load'][0]:.1f}, {r['load'][1]:.1f} | "
                     f"{r['peak_beyond_MiB']:.0f}{flag} | {m['recall@1']:.5f} | "
                     f"{m['recall@1000']:.5f} | {m['map@r']:.5f} |")
    lines.append("")
    lines.append(f"graphneg peak beyond the embeddings: {t['peak_beyond_MiB']:.0f} MiB "
                 f"({'under' if t['peak_beyond_MiB'] < 1024 else 'OVER'} the 1 GiB target).")
    f = rows["faiss"]
    if f["installed"]:
        same = all(abs(t["metrics"][k] - f["metrics"][k]) < 1e-4 for k in t["metrics"])
        lines.append(f"Ratios graphneg / faiss (same run): time {t['wall_s'] / f['wall_s']:.2f}x "
                     f"(CPU time {t['cpu_s'] / f['cpu_s']:.2f}x), "
                     f"peak memory {t['peak_beyond_MiB'] / max(f['peak_beyond_MiB'], 1e-9):.2f}x; "
                     f"metrics {'agree' if same else 'DIFFER'} (|diff| < 1e-4).")
    il = rows["interleaved"]
    if il["installed"]:
        w, c = il["wall_s"], il["cpu_s"]
        lines += [
            "",
            f"Load-matched (one process, the two searches advanced chunk by chunk in turn, k = {il['k']}, "
            f"load {il['load'][0]:.1f} -> {il['load'][1]:.1f}): graphneg {w['torch']:.1f} s wall / "
            f"{c['torch']:.1f} s CPU, faiss {w['faiss']:.1f} s / {c['faiss']:.1f} s; "
            f"**torch / faiss time ratio {w['torch'] / w['faiss']:.2f}x** (CPU time {c['torch'] / c['faiss']:.2f}x).",
        ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
