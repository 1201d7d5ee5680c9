"""The prepared accelerator check (issue 21): one command, under 8 minutes on one GPU, that writes
``report.json`` and ``report.md`` into ``--out``.

    python experiments/device_check.py --out experiments/results/device_check      # on a CUDA machine
    python experiments/device_check.py --out /tmp/dc --small                        # CPU, tiny sizes (a test)
    nox -s device -- --out experiments/results/device_check

Sections (each wrapped: an exception is recorded with its traceback and the next section runs; each has
a time budget, checked between its items, and items past it are listed as skipped):

1. ``gpu_tests``: ``pytest -m gpu tests/test_gpu.py`` (CUDA equals CPU for the layers, the generator,
   the losses, the kNN kernel and the retrieval metrics; autocast bf16 / fp16 tolerances); the counts
   of passed / failed / skipped tests and the failures' names.
2. ``gca_step``: one GCA-HNG training step (``out = gen(z, y, j_mean)``; ``generator_loss(out, classifier,
   ...).total + node_loss(out)`` of :mod:`graphneg.losses.gca_hng`; backward; as ``experiments/bench_gca.py``)
   with D = 512, 2 blocks, 4 heads, chain random weighting, the padded output (``static_shapes=True``, the
   CUDA default, no host sync; also on the CPU with ``--small``), the official batch layouts (``bench_gca.layout``: 27 x 3 at B = 81, B/4 x 4
   otherwise): complete graph at B = 81, 256, 1024 and class-aware kNN (k = 16) at B = 1024, 4096, 16384;
   float32 and bf16 autocast, eager and ``torch.compile`` (of the generator's forward); the dense
   ``[B, B, D]`` reference (``bench_gca.dense_step``, imported, same weights) where it fits. Median time
   of the repetitions, peak ``torch.cuda.max_memory_allocated`` beyond the inputs, the loss.
3. ``backbones``: one training step of ``MetricLearningModule`` built from the benchmark configs
   (ResNet-50 with frozen BN at 27 x 3 and 40 x 2, GoogLeNet at 27 x 3 and 40 x 2; 224 x 224 synthetic
   images; random weights; ``warmup_epochs`` set to 0 so the whole encoder trains) through a Lightning
   ``Trainer``, with and without the config's GCA-HNG generator: images/s and peak memory.
4. ``retrieval``: SOP-size evaluation (60,502 x 512, SOP-like labels, Recall@{1,10,100,1000}, MAP@R,
   R-Precision) with graphneg's kernel on the device next to faiss-cpu's exact flat index on the same
   embeddings (all CPU threads); time, peak device memory, and whether the metrics agree (|diff| < 1e-4).
5. ``losses``: InfoNCE, HCL and UnReMix (forward + backward, two views of B x 128) at B = 4096 and 16384.

``--small`` runs the same code on the CPU at tiny sizes (no ``torch.compile`` items: tracing the generator
takes ~10 s of CPU; one backbone config at 32 x 32, 2 x 2 images) (the default test suite runs it:
tests/test_device_check.py), so the script cannot rot. Peak memory is reported on CUDA only (``null``
on the CPU). Time is the median over ``reps`` steps after ``warmup`` steps, with
``torch.cuda.synchronize()`` around each.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import atomic_write, markdown_table  # noqa: E402  (experiments/ is not a package)

SECTIONS = ("gpu_tests", "gca_step", "backbones", "retrieval", "losses")

#: sizes and per-section time budgets (seconds); the full run adds up to < 8 minutes on one GPU
FULL = {
    "budget": {"gpu_tests": 110, "gca_step": 150, "backbones": 80, "retrieval": 70, "losses": 40},
    "dim": 512, "layers": 2, "heads": 4, "knn_k": 16,
    "complete_sizes": (81, 256, 1024), "knn_sizes": (1024, 4096, 16384),
    "compile_sizes": {"complete": (256,), "knn": (4096,)}, "compile_backend": "inductor",
    "reps": 5, "warmup": 1,
    "configs": ("cub200_resnet50", "sop_resnet50", "cub200_googlenet", "sop_googlenet"),
    "image_size": 224, "layout_override": None, "backbone_steps": (2, 5),
    "retrieval": {"n": 60502, "dim": 512, "classes": 11316, "ks": (1, 10, 100, 1000)},
    "loss_sizes": (4096, 16384), "loss_dim": 128,
    "dense_max_bytes_fraction": 0.8,
}
SMALL = {
    # generous budgets: the CPU test must run every item whatever the load of the machine
    "budget": {"gpu_tests": 300, "gca_step": 300, "backbones": 300, "retrieval": 300, "losses": 300},
    "dim": 32, "layers": 2, "heads": 4, "knn_k": 4,
    "complete_sizes": (12,), "knn_sizes": (24,),
    # no torch.compile items: tracing the generator costs ~10 s of CPU, too much for a default test
    "compile_sizes": {"complete": (), "knn": ()}, "compile_backend": "aot_eager",
    "reps": 2, "warmup": 1,
    "configs": ("cub200_resnet50",),
    "image_size": 32, "layout_override": (2, 2), "backbone_steps": (1, 2),
    "retrieval": {"n": 600, "dim": 16, "classes": 100, "ks": (1, 10)},
    "loss_sizes": (64,), "loss_dim": 16,
    "dense_max_bytes_fraction": 0.8,
}


# ------------------------------------------------------------------------------------------ helpers
class Section:
    """Collects one section's rows; ``over()`` says whether its time budget is spent."""

    def __init__(self, name: str, budget_s: float):
        self.name, self.budget_s, self.t0 = name, float(budget_s), time.perf_counter()
        self.rows: List[Dict[str, Any]] = []
        self.skipped: List[str] = []
        self.notes: List[str] = []
        self.status = "ok"

    def over(self) -> bool:
        return time.perf_counter() - self.t0 > self.budget_s

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.t0)

    def item(self, label: str, fn: Callable[[], Dict[str, Any]], min_left: float = 0.0,
             **fields) -> Optional[Dict[str, Any]]:
        """Run one measurement unless the budget is spent (or less than ``min_left`` seconds of it are
        left, for items known to be long); an exception becomes an ``error`` / ``oom`` row."""
        if self.over() or self.left() < min_left:
            self.skipped.append(label)
            return None
        row = dict(fields)
        try:
            row.update(fn())
            row.setdefault("status", "ok")
        except Exception as exc:  # one failure is recorded, the rest still runs
            row["status"] = "oom" if _is_oom(exc) else "error"
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            _free()
        self.rows.append(row)
        return row

    def to_dict(self) -> Dict[str, Any]:
        if self.skipped and self.status == "ok":
            self.status = "partial"
        return {"status": self.status, "wall_s": round(time.perf_counter() - self.t0, 3),
                "budget_s": self.budget_s, "rows": self.rows, "skipped": self.skipped, "notes": self.notes}


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _free() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(step: Callable[[], Any], device, reps: int, warmup: int) -> Dict[str, Any]:
    """Median wall time of ``step`` over ``reps`` calls after ``warmup`` calls, and (CUDA) the peak
    ``max_memory_allocated`` during the timed calls beyond what was allocated before them."""
    import torch

    first = None
    for i in range(warmup):
        t0 = time.perf_counter()
        step()
        _sync(device)
        if i == 0:
            first = time.perf_counter() - t0
    base = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    times, out = [], None
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        out = step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if base is not None else None
    return {"median_s": statistics.median(times), "min_s": min(times), "first_call_s": first,
            "peak_MiB": peak, "reps": reps, "last": out}


def _finite(x) -> Optional[float]:
    x = float(x)
    return x if math.isfinite(x) else None


# ------------------------------------------------------------------------------------------ 1. gpu tests
def section_gpu_tests(sec: Section, cfg, device, out_dir: Path) -> None:
    xml = out_dir / "gpu_tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "-rA",
           str(ROOT / "tests" / "test_gpu.py"), f"--junitxml={xml}"]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=max(sec.budget_s - 5, 10))
    except subprocess.TimeoutExpired as exc:
        sec.status = "timeout"
        sec.notes.append(f"pytest did not finish within {sec.budget_s:.0f} s")
        (out_dir / "gpu_tests.log").write_text((exc.stdout or b"").decode(errors="replace")
                                               if isinstance(exc.stdout, bytes) else (exc.stdout or ""))
        return
    (out_dir / "gpu_tests.log").write_text(proc.stdout + proc.stderr)
    counts = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    if xml.exists():
        for case in ET.parse(xml).getroot().iter("testcase"):
            name = f"{case.get('classname')}::{case.get('name')}"
            kind = "passed"
            for child in case:
                if child.tag in ("failure", "error", "skipped"):
                    kind = {"failure": "failed"}.get(child.tag, child.tag)
                    msg = (child.get("message") or "").splitlines()[0][:300] if child.get("message") else ""
                    break
            else:
                msg = ""
            counts[kind] += 1
            sec.rows.append({"test": name, "outcome": kind, "message": msg, "time_s": float(case.get("time", 0))})
    sec.notes.append(f"pytest exit code {proc.returncode} in {time.perf_counter() - t0:.1f} s; "
                     + ", ".join(f"{v} {k}" for k, v in counts.items()))
    if counts["failed"] or counts["error"] or (proc.returncode not in (0, 5) and not counts["skipped"]):
        sec.status = "failed"


# ------------------------------------------------------------------------------------------ 2. GCA-HNG step
def _bench_gca():
    import bench_gca  # the dense [B, B, D] reference and the official layouts (reused, not copied)

    return bench_gca


def gca_train_step(gen, classifier, z0, y, amp_dtype, device, seed: int = 0):
    """One generator training step, as experiments/bench_gca.py ``step``: forward, the generator's
    losses and the node CE, backward. ``amp_dtype``: ``None`` (float32) or an autocast dtype."""
    import torch

    from graphneg.losses.gca_hng import generator_loss, node_loss

    gen.zero_grad(set_to_none=True)
    classifier.zero_grad(set_to_none=True)
    z = z0.clone().requires_grad_(True)
    with torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
        out = gen(z, y, j_mean=2.0, generator=torch.Generator().manual_seed(seed))
        loss = (generator_loss(out, classifier, gen.softmax_factor, gen.dot_weight, gen.div_weight).total
                + node_loss(out))
    loss.backward()
    return loss.detach()


def section_gca_step(sec: Section, cfg, device, out_dir: Path) -> None:
    import torch

    from graphneg.nn import GCAHNG

    bg = _bench_gca()
    d = cfg["dim"]
    total_mem = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
    dtypes = {"float32": None, "bf16": torch.bfloat16}
    cache: Dict[Any, Any] = {}

    def setup(edges, b):
        key = (edges, b)
        if key not in cache:
            cache.clear()
            _free()
            n_cls, m = bg.layout(b)  # the official layouts: 27 x 3 at B = 81, B/4 x 4 otherwise
            torch.manual_seed(0)
            gen = GCAHNG(d, num_classes=n_cls, num_layers=cfg["layers"], heads=cfg["heads"], dropout=0.0,
                         rw="chain", edges=edges, k=cfg["knn_k"] if edges == "knn" else None,
                         static_shapes=True).to(device)  # the CUDA default layout, on the CPU (--small) too
            torch.manual_seed(1)
            clf = torch.nn.Linear(d, n_cls).to(device)
            y = torch.arange(n_cls, device=device).repeat(m)
            z0 = torch.randn(b, d, generator=torch.Generator().manual_seed(2)).to(device)
            cache[key] = (gen, clf, y, z0, n_cls, m)
        return cache[key]

    def run(edges, b, dtype_name, mode):
        def fn():
            gen, clf, y, z0, n_cls, m = setup(edges, b)
            amp = dtypes[dtype_name]
            if mode == "dense":
                u = bg.chain_draws(m, 0)  # the generator's draws for seed 0

                def step():
                    gen.zero_grad(set_to_none=True)
                    clf.zero_grad(set_to_none=True)
                    z = z0.clone().requires_grad_(True)
                    with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
                        loss = bg.dense_step(gen, z, y, m, 2.0, u, clf)
                    loss.backward()
                    return loss.detach()
            else:
                # .loss / .node_loss of the compiled module are gen's own (eager)
                model = torch.compile(gen, backend=cfg["compile_backend"]) if mode == "compile" else gen

                def step():
                    return gca_train_step(model, clf, z0, y, amp, device)
            r = measure(step, device, cfg["reps"], cfg["warmup"])
            loss = r.pop("last")
            r["loss_value"] = _finite(loss)
            with torch.no_grad():
                r["E"] = b * b if mode == "dense" else int(gen.build_graph(z0, y).edge_index.size(1))
            return r
        return fn

    complete, knn = cfg["complete_sizes"], cfg["knn_sizes"]
    plan = []  # priority order: what matters most runs first
    plan += [("complete", b, "float32", "eager") for b in complete]
    plan += [("knn", b, "float32", "eager") for b in knn]
    for b in complete:  # the dense reference where its [B, B, D] tensors fit (~40 of them are kept)
        need = 40 * b * b * d * 4
        if total_mem is None or need < cfg["dense_max_bytes_fraction"] * total_mem:
            plan.append(("complete", b, "float32", "dense"))
        else:
            sec.notes.append(f"dense reference at B={b} skipped: ~{need / 2**30:.0f} GiB of [B, B, D] tensors "
                             f"would not fit in {total_mem / 2**30:.0f} GiB")
    plan += [("complete", b, "bf16", "eager") for b in complete]
    plan += [("knn", b, "bf16", "eager") for b in knn]
    plan += [(e, b, dt, "compile") for e in ("complete", "knn") for b in cfg["compile_sizes"][e]
             for dt in ("float32", "bf16")]
    for edges, b, dt, mode in plan:  # a compilation (inductor) takes about a minute: start it only with time left
        sec.item(f"{edges} B={b} {dt} {mode}", run(edges, b, dt, mode), min_left=60 if mode == "compile" else 0,
                 edges=edges, B=b, dtype=dt, mode=mode)
    cache.clear()
    _free()
    # the dense reference and the graph implementation compute the same loss (same weights, same draws)
    for row in sec.rows:
        if row.get("mode") == "dense" and row.get("status") == "ok":
            twin = [r for r in sec.rows if r.get("mode") == "eager" and r.get("edges") == "complete"
                    and r.get("B") == row["B"] and r.get("dtype") == row["dtype"] and r.get("status") == "ok"]
            if twin and row["loss_value"] is not None and twin[0]["loss_value"] is not None:
                ref = twin[0]["loss_value"]
                row["loss_rel_diff_vs_graph"] = abs(row["loss_value"] - ref) / max(abs(ref), 1e-12)


# ------------------------------------------------------------------------------------------ 3. backbones
def instantiate(spec):
    """``{"class_path": ..., "init_args": {...}}`` -> object (recursively), as LightningCLI does."""
    import importlib

    if isinstance(spec, dict) and "class_path" in spec:
        mod, _, name = spec["class_path"].rpartition(".")
        cls = getattr(importlib.import_module(mod), name)
        return cls(**{k: instantiate(v) for k, v in (spec.get("init_args") or {}).items()})
    return spec


def section_backbones(sec: Section, cfg, device, out_dir: Path) -> None:
    import lightning as L
    import torch
    import yaml

    warm, reps = cfg["backbone_steps"]

    class StepTimer(L.Callback):
        def __init__(self):
            self.times: List[float] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            _sync(device)
            if batch_idx == warm and device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            _sync(device)
            if batch_idx >= warm:
                self.times.append(time.perf_counter() - self.t0)

    def run(name, with_gen):
        def fn():
            conf = yaml.safe_load((HERE / "gca_hng" / f"{name}.yaml").read_text())
            model_args = dict(conf["model"]["init_args"])
            enc = dict(model_args["encoder"])
            enc["init_args"] = dict(enc.get("init_args") or {}, weights=None)  # synthetic run: random weights
            model_args["encoder"] = enc
            if not with_gen:
                model_args["generator"] = None
            model_args["warmup_epochs"] = 0  # the whole encoder trains (the warm-up trains the head only)
            data = conf["data"]["init_args"]
            c, m = cfg["layout_override"] or (data["classes_per_batch"], data["samples_per_class"])
            # the sizes graphneg's CLI links from the encoder and the data module (not in the YAML):
            # the embedding size, and the number of classes (the synthetic batch's labels are 0..c-1)
            dim = (enc["init_args"] or {}).get("embedding_dim", 512)
            n_cls = c if cfg["layout_override"] else model_args.get("num_classes") or c
            model_args["num_classes"] = n_cls
            if model_args.get("generator"):
                gen_spec = dict(model_args["generator"])
                gen_spec["init_args"] = dict(gen_spec.get("init_args") or {}, dim=dim, num_classes=n_cls)
                model_args["generator"] = gen_spec
            if "num_classes" in (model_args["loss"].get("init_args") or {}):
                loss_spec = dict(model_args["loss"])
                loss_spec["init_args"] = dict(loss_spec["init_args"], num_classes=n_cls, embedding_size=dim)
                model_args["loss"] = loss_spec
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "random weights" warnings of the backbones
                module = instantiate({"class_path": conf["model"]["class_path"], "init_args": model_args})
            size = cfg["image_size"]
            g = torch.Generator().manual_seed(0)
            x = torch.randn(c * m, 3, size, size, generator=g)
            y = torch.arange(c).repeat(m)  # the official chunked layout: C classes, m chunks
            loader = torch.utils.data.DataLoader([(x, y)] * (warm + reps), batch_size=None)
            timer = StepTimer()
            trainer = L.Trainer(
                max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, callbacks=[timer],
                precision=conf.get("trainer", {}).get("precision", "32-true"),
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trainer.fit(module, loader)
            med = statistics.median(timer.times)
            peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
            del trainer, module
            _free()
            return {"batch": f"{c} x {m}", "B": c * m, "image": size, "median_step_s": med,
                    "images_per_s": c * m / med, "peak_MiB": peak, "steps_timed": len(timer.times)}
        return fn

    for name in cfg["configs"]:
        for with_gen in (False, True):
            sec.item(f"{name} {'with' if with_gen else 'without'} GCA-HNG", run(name, with_gen), config=name,
                     gca_hng=with_gen)
    for name in cfg["configs"]:  # the generator's share of the step
        pair = {r["gca_hng"]: r for r in sec.rows if r.get("config") == name and r.get("status") == "ok"}
        if len(pair) == 2:
            pair[True]["gca_overhead"] = pair[True]["median_step_s"] / pair[False]["median_step_s"]


# ------------------------------------------------------------------------------------------ 4. retrieval
def sop_like(n: int, dim: int, classes: int, seed: int = 0):
    """Random embeddings with SOP-like labels: ``classes`` classes of 2 + Multinomial sizes (as
    experiments/bench_retrieval_eval.py)."""
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    sizes = 2 + rng.multinomial(n - 2 * classes, np.full(classes, 1.0 / classes))
    labels = torch.from_numpy(rng.permutation(np.repeat(np.arange(classes), sizes)))
    emb = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
    return emb, labels


def section_retrieval(sec: Section, cfg, device, out_dir: Path) -> None:
    import torch

    from graphneg.metrics.retrieval import retrieval_metrics
    from graphneg.ops.knn import faiss_available

    rc = cfg["retrieval"]
    emb, labels = sop_like(rc["n"], rc["dim"], rc["classes"])
    results = {}

    def run_torch():
        e, lab = emb.to(device), labels.to(device)
        _sync(device)
        base = None
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        t0 = time.perf_counter()
        res = retrieval_metrics(e, lab, ks=rc["ks"], nmi=False, backend="torch")
        _sync(device)
        wall = time.perf_counter() - t0
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if base is not None else None
        results["torch"] = res
        return {"wall_s": wall, "peak_MiB": peak, "recall@1": res["recall@1"], "map@r": res["map@r"]}

    def run_faiss():
        if not faiss_available():
            return {"status": "not installed"}
        import faiss

        faiss.omp_set_num_threads(os.cpu_count() or 1)
        t0 = time.perf_counter()
        res = retrieval_metrics(emb, labels, ks=rc["ks"], nmi=False, backend="faiss")
        results["faiss"] = res
        return {"wall_s": time.perf_counter() - t0, "peak_MiB": None, "threads": os.cpu_count(),
                "recall@1": res["recall@1"], "map@r": res["map@r"]}

    sec.item("graphneg kernel", run_torch, evaluator=f"graphneg chunked_topk ({device.type})",
             N=rc["n"], D=rc["dim"])
    sec.item("faiss", run_faiss, evaluator="faiss-cpu IndexFlatIP (exact)", N=rc["n"], D=rc["dim"])
    if "torch" in results and "faiss" in results:
        diff = max(abs(results["torch"][k] - results["faiss"][k]) for k in results["torch"])
        sec.notes.append(f"max |metric difference| graphneg vs faiss: {diff:.2e} "
                         f"({'agree' if diff < 1e-4 else 'DIFFER'} at 1e-4)")
        sec.rows[0]["metrics_agree_with_faiss"] = diff < 1e-4
        if diff >= 1e-4:
            sec.status = "failed"


# ------------------------------------------------------------------------------------------ 5. losses
def section_losses(sec: Section, cfg, device, out_dir: Path) -> None:
    import torch

    from graphneg.losses import HCLLoss, InfoNCELoss, UnReMixLoss

    losses = {"InfoNCE": InfoNCELoss, "HCL": HCLLoss, "UnReMix": UnReMixLoss}
    for b in cfg["loss_sizes"]:
        for name, cls in losses.items():
            def fn(b=b, cls=cls):
                loss = cls().to(device)
                g = torch.Generator().manual_seed(0)
                z1 = torch.randn(b, cfg["loss_dim"], generator=g).to(device).requires_grad_(True)
                z2 = torch.randn(b, cfg["loss_dim"], generator=g).to(device).requires_grad_(True)

                def step():
                    z1.grad = z2.grad = None
                    val = loss(z1, z2)
                    val.backward()
                    return val.detach()
                r = measure(step, device, cfg["reps"], cfg["warmup"])
                r["loss_value"] = _finite(r.pop("last"))
                return r
            sec.item(f"{name} B={b}", fn, loss=name, B=b, views=2, D=cfg["loss_dim"])


# ------------------------------------------------------------------------------------------ report
RUNNERS = {"gpu_tests": section_gpu_tests, "gca_step": section_gca_step, "backbones": section_backbones,
           "retrieval": section_retrieval, "losses": section_losses}


def _meta(device, small: bool, argv) -> Dict[str, Any]:
    import torch

    meta = {"argv": argv, "small": small, "device": str(device), "torch": torch.__version__,
            "python": platform.python_version(), "cpu_count": os.cpu_count(), "load_avg": os.getloadavg(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        meta.update(gpu=p.name, gpu_memory_GiB=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
    try:
        import faiss

        meta["faiss"] = faiss.__version__
    except ImportError:
        meta["faiss"] = None
    try:
        meta["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                        text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        meta["commit"] = None
    return meta


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "/")


def markdown(report: Dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [f"# Device check ({'--small, CPU' if meta['small'] else meta.get('gpu', meta['device'])})", ""]
    lines.append(", ".join(f"{k}: {_fmt(v)}" for k, v in meta.items() if k != "argv"))
    lines.append("")
    lines.append(f"Total wall time: {report['wall_s']:.1f} s.")
    for name, sec in report["sections"].items():
        lines += ["", f"## {name}: {sec['status']} ({sec['wall_s']:.1f} s of {sec['budget_s']:.0f} s)", ""]
        if sec.get("error"):
            lines += ["```", sec["error"].rstrip(), "```", ""]
        rows = sec["rows"]
        if rows:
            cols: List[str] = []
            for r in rows:
                cols += [c for c in r if c not in cols and c != "message"]
            lines += markdown_table(cols, ([_fmt(r.get(c)) for c in cols] for r in rows))
        for note in sec["notes"]:
            lines.append(f"- {note}")
        if sec["skipped"]:
            lines.append(f"- skipped (time budget): {', '.join(sec['skipped'])}")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for report.json and report.md")
    p.add_argument("--small", action="store_true", help="tiny sizes on the CPU (the test-suite run)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    args = p.parse_args(argv)
    sections = [s for s in args.sections.split(",") if s]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        p.error(f"--sections: unknown {unknown}; choose from {SECTIONS}")

    import torch

    cfg = SMALL if args.small else FULL
    if not args.small and not torch.cuda.is_available():
        p.error("no CUDA device: run on a GPU machine, or pass --small for the CPU check")
    device = torch.device("cpu" if args.small else "cuda")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    report: Dict[str, Any] = {"meta": _meta(device, args.small, argv if argv is not None else sys.argv[1:]),
                              "sections": {}}
    for name in sections:
        sec = Section(name, cfg["budget"][name])
        try:
            RUNNERS[name](sec, cfg, device, out_dir)
        except Exception:
            sec.status = "error"
            d = sec.to_dict()
            d["error"] = traceback.format_exc()
            report["sections"][name] = d
            _free()
        else:
            report["sections"][name] = sec.to_dict()
        report["wall_s"] = time.perf_counter() - t0
        # written after every section: a later crash or timeout keeps what was measured
        atomic_write(out_dir / "report.json", json.dumps(report, indent=1, default=str))
        atomic_write(out_dir / "report.md", markdown(report))
        print(f"[device_check] {name}: {report['sections'][name]['status']} "
              f"({report['sections'][name]['wall_s']:.1f} s)", flush=True)
    return report


if __name__ == "__main__":
    main()
