"""What the studies and benchmarks of ``experiments/`` share: statistics over seeds, markdown tables, JSONL
records, the ``/proc`` peak-memory reader and a runner that trains through the YAML configs and the
``graphneg`` CLI (the path a user takes).

Import from a script in ``experiments/`` with ``sys.path.insert(0, str(Path(__file__).resolve().parent))``
then ``from _common import ...`` (the scripts are run as files, ``experiments/`` is not a package).

Statistics
    :func:`mean_ci` (mean and half-width of the Student-t confidence interval over seeds),
    :func:`fmt_ci`, :func:`paired_differences` / :func:`paired_summary` / :func:`fmt_paired` (per-seed
    differences of two rows that share seeds, i.e. initialisation, data order and augmentations).
Tables and files
    :func:`markdown_table`, :func:`read_jsonl`, :func:`append_jsonl`, :func:`atomic_write`.
Memory
    :func:`proc_status_bytes`, :func:`reset_peak_rss`, :class:`PeakRSS` (Linux ``/proc/self``).
Training
    :func:`build_cli` / :func:`run_config`: one run of ``graphneg fit --config ...`` in this process,
    :func:`final_metrics` reads the logged scalars back.
"""
from __future__ import annotations

import functools
import json
import math
import os
import resource
import statistics
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

PathLike = Union[str, os.PathLike]

# ------------------------------------------------------------------------------------ statistics


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> Tuple[float, float]:
    """``(mean, half_width)`` of the two-sided Student-t confidence interval of the mean of ``values``:
    ``t_{(1+confidence)/2, n-1} * s / sqrt(n)`` with ``s`` the sample standard deviation (n - 1 in the
    denominator); the half-width is ``nan`` for a single value. Source: the textbook t-interval (e.g.
    NIST/SEMATECH e-Handbook of Statistical Methods, Sec. 7.2.2.1); ``t`` from ``scipy.stats.t.ppf``."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("mean_ci: values is empty; pass at least one number")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"mean_ci: confidence must be in (0, 1), got {confidence}")
    n = len(vals)
    mean = statistics.fmean(vals)
    if n < 2:
        return mean, float("nan")
    from scipy import stats

    return mean, float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * statistics.stdev(vals) / math.sqrt(n)


def fmt_ci(values: Sequence[float], scale: float = 1.0, digits: int = 3, confidence: float = 0.95) -> str:
    """``"mean ± half-width"`` of :func:`mean_ci` after multiplying by ``scale`` (100: percent), ``digits``
    decimals; the mean alone for one value, ``"-"`` for none."""
    if len(values) == 0:
        return "-"
    m, h = mean_ci(values, confidence)
    if math.isnan(h):
        return f"{scale * m:.{digits}f}"
    return f"{scale * m:.{digits}f} ± {scale * h:.{digits}f}"


def paired_differences(a: Mapping[Any, float], b: Mapping[Any, float]) -> Tuple[List[Any], List[float]]:
    """``(seeds, [a[s] - b[s]])`` over the seeds (keys) present in both, in sorted order."""
    seeds = sorted(set(a) & set(b))
    return seeds, [float(a[s]) - float(b[s]) for s in seeds]


def paired_summary(a: Mapping[Any, float], b: Mapping[Any, float], confidence: float = 0.95) -> Dict[str, Any]:
    """The per-seed differences ``a - b`` and their summary: ``seeds``, ``diffs``, ``n``, ``mean``, ``half``
    (t-interval half-width, :func:`mean_ci`; ``nan`` for n < 2), ``wins`` (seeds with ``a > b``);
    ``mean`` and ``half`` are ``nan`` when no seed is shared."""
    seeds, diffs = paired_differences(a, b)
    mean, half = mean_ci(diffs, confidence) if diffs else (float("nan"), float("nan"))
    return {"seeds": seeds, "diffs": diffs, "n": len(diffs), "mean": mean, "half": half,
            "wins": sum(d > 0 for d in diffs)}


def fmt_paired(a: Mapping[Any, float], b: Mapping[Any, float], scale: float = 1.0, digits: int = 3,
               expect_n: Optional[int] = None) -> str:
    """:func:`fmt_ci` of the per-seed differences ``a - b`` (``"-"`` without a shared seed), with
    ``" (n=k)"`` appended when ``expect_n`` is given and only ``k != expect_n`` seeds are shared."""
    _, diffs = paired_differences(a, b)
    if not diffs:
        return "-"
    note = "" if expect_n is None or len(diffs) == expect_n else f" (n={len(diffs)})"
    return fmt_ci(diffs, scale, digits) + note


def by_seed(rows: Iterable[Mapping[str, Any]], field: str, seed_key: str = "seed", **match: Any) -> Dict[Any, float]:
    """``{row[seed_key]: row[field]}`` of the rows whose items equal ``match`` (e.g. ``loss="hcl"``)."""
    return {r[seed_key]: r[field] for r in rows if all(r.get(k) == v for k, v in match.items())}


# ------------------------------------------------------------------------------------ tables, files


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: Optional[str] = None) -> List[str]:
    """A GitHub markdown table as lines: ``| h1 | h2 |``, the separator (``align``: one character per
    column, ``l`` -> ``---``, ``r`` -> ``---:``, ``c`` -> ``:---:``; default all ``---``), one line a row
    (cells through ``str``)."""
    if align is None:
        align = "l" * len(header)
    if len(align) != len(header):
        raise ValueError(f"markdown_table: align has {len(align)} characters for {len(header)} columns")
    marks = {"l": "---", "r": "---:", "c": ":---:"}
    if set(align) - set(marks):
        raise ValueError(f"markdown_table: align characters must be l, r or c, got {align!r}")
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
    for row in rows:
        row = list(row)
        if len(row) != len(header):
            raise ValueError(f"markdown_table: a row has {len(row)} cells for {len(header)} columns: {row}")
        lines.append("| " + " | ".join(map(str, row)) + " |")
    return lines


def read_jsonl(path: PathLike) -> List[dict]:
    """The JSON objects of the non-empty lines of ``path``; ``[]`` when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_jsonl(path: PathLike, row: Mapping[str, Any]) -> None:
    """Append ``row`` as one JSON line to ``path`` (parents created), flushed and fsync-ed so that an
    interrupted study keeps every finished run."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def atomic_write(path: PathLike, data: Union[str, bytes]) -> None:
    """Write ``data`` (text or bytes) to ``path`` through a temporary file in the same folder and
    ``os.replace``, so a reader never sees a half-written file (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data.encode() if isinstance(data, str) else bytes(data))
    os.replace(tmp, path)


def atomic_write_text(path: PathLike, text: str) -> None:
    """Deprecated name of :func:`atomic_write` (the first version of this module wrote text only)."""
    import warnings

    warnings.warn("atomic_write_text is deprecated; use atomic_write", DeprecationWarning, stacklevel=2)
    atomic_write(path, text)


# ------------------------------------------------------------------------------------ memory


def proc_status_bytes(field: str, status_file: PathLike = "/proc/self/status") -> int:
    """The value of ``field`` (``VmRSS``, ``VmHWM``, ...) in ``/proc/self/status``, in bytes (the file
    reports kB)."""
    with open(status_file) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in {status_file}")


def reset_peak_rss() -> bool:
    """Reset this process's peak resident set (``VmHWM``) to the current one by writing ``5`` to
    ``/proc/self/clear_refs`` (Linux >= 4.0, ``Documentation/filesystems/proc.rst``); ``False`` when the
    file is not writable."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakRSS:
    """Extra resident memory of a block: ``with PeakRSS() as m: ...; m.bytes``.

    ``VmHWM`` after the block minus ``VmRSS`` before it, after :func:`reset_peak_rss` (``exact=True``);
    where ``clear_refs`` is not writable, the growth of ``ru_maxrss`` (``exact=False``: a lower bound, the
    peak may predate the block). Run allocation-heavy blocks with ``MALLOC_MMAP_THRESHOLD_=65536`` so that
    freed tensors leave the resident set."""

    def __enter__(self) -> "PeakRSS":
        self.exact = reset_peak_rss()
        self.before = proc_status_bytes("VmRSS")
        self._maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.bytes = 0
        return self

    def __exit__(self, *exc) -> None:
        if self.exact:
            self.bytes = proc_status_bytes("VmHWM") - self.before
        else:  # ru_maxrss is in kB on Linux
            self.bytes = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self._maxrss) * 1024


# ------------------------------------------------------------------------------------ training


def quiet_study(threads: Optional[int] = 1) -> None:
    """What every study sets before training: ``threads`` torch threads (``None``: unchanged), Lightning's
    loggers at ERROR, and no UserWarning / FutureWarning (the studies' logs stay readable)."""
    import logging
    import warnings

    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def cli_args(config: Union[PathLike, Sequence[PathLike]], overrides: Sequence[str] = (),
             run_dir: Optional[PathLike] = None) -> List[str]:
    """The argument list of ``graphneg fit``: ``--config`` for each config file (later ones override
    earlier ones, as on the command line), ``--trainer.default_root_dir=run_dir`` when given, then
    ``overrides`` (``"--key=value"`` strings, applied last)."""
    configs = [config] if isinstance(config, (str, os.PathLike)) else list(config)
    if not configs:
        raise ValueError("cli_args: config is empty; pass a YAML config path (or several)")
    args: List[str] = []
    for c in configs:
        if not Path(c).is_file():
            raise FileNotFoundError(f"config {c} does not exist; pass a YAML file such as experiments/unremix/mutag.yaml")
        args += ["--config", str(c)]
    if run_dir is not None:
        args.append(f"--trainer.default_root_dir={run_dir}")
    for o in overrides:
        if not str(o).startswith("--"):
            raise ValueError(f"override {o!r} must look like '--trainer.max_epochs=2'")
    return args + [str(o) for o in overrides]


def build_cli(config: Union[PathLike, Sequence[PathLike]], overrides: Sequence[str] = (),
              run_dir: Optional[PathLike] = None):
    """The ``graphneg`` CLI object (model, datamodule, trainer instantiated from the configs, nothing run):
    ``graphneg.cli.cli_main(cli_args(...), run=False)``."""
    from graphneg.cli import cli_main

    return cli_main(cli_args(config, overrides, run_dir), run=False)


def final_metrics(trainer) -> Dict[str, float]:
    """The trainer's last logged scalars (``trainer.callback_metrics``) as floats."""
    out = {}
    for k, v in trainer.callback_metrics.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            continue
    return out


@functools.lru_cache(maxsize=None)
def _metrics_curve_class():
    import lightning as L

    class MetricsCurve(L.Callback):
        """A Lightning callback recording, at the end of every training epoch, the trainer's logged scalars
        whose name starts with one of ``prefixes`` (``None``: all) as ``{"epoch": e, name: value, ...}`` rows
        in ``self.rows`` (``_epoch`` suffixes dropped): the learning curve of a run, for a study's record."""

        def __init__(self, prefixes: Optional[Sequence[str]] = None):
            self.rows: List[Dict[str, float]] = []
            self.prefixes = None if prefixes is None else tuple(prefixes)

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            row: Dict[str, float] = {"epoch": trainer.current_epoch + 1}
            for k, v in final_metrics(trainer).items():
                name = k[: -len("_epoch")] if k.endswith("_epoch") else k
                if self.prefixes is None or name.startswith(self.prefixes):
                    row[name] = v
            self.rows.append(row)

    return MetricsCurve


def __getattr__(name: str):
    # MetricsCurve subclasses lightning's Callback: built on first use so that the benchmarks' child
    # processes, which import this module for PeakRSS, do not import Lightning
    if name == "MetricsCurve":
        return _metrics_curve_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_config(config: Union[PathLike, Sequence[PathLike]], overrides: Sequence[str] = (),
               run_dir: Optional[PathLike] = None, test: bool = False, return_cli: bool = False,
               callbacks: Sequence[Any] = ()):
    """Train one run as ``graphneg fit --config CONFIG [--trainer.default_root_dir RUN_DIR] OVERRIDES`` does,
    in this process, and return its final metrics (``{"val/...": x, "probe/...": y, "fit_s": seconds}``;
    with ``test=True`` also ``trainer.test`` on the trained model, ``test/...``). ``callbacks`` (Lightning
    callback objects, e.g. :class:`MetricsCurve`) are added to the configured ones. ``return_cli=True``
    returns ``(metrics, cli)`` to evaluate the trained model further."""
    from graphneg.cli import quiet_lightning

    cli = build_cli(config, overrides, run_dir)
    cli.trainer.callbacks.extend(callbacks)
    t0 = time.time()
    with quiet_lightning():
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    metrics = final_metrics(cli.trainer)
    metrics["fit_s"] = time.time() - t0
    if test:
        with quiet_lightning():
            cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
        metrics.update({k: v for k, v in final_metrics(cli.trainer).items() if k.startswith("test/")})
    return (metrics, cli) if return_cli else metrics


__all__ = [
    "mean_ci", "fmt_ci", "paired_differences", "paired_summary", "fmt_paired", "by_seed", "markdown_table",
    "read_jsonl", "append_jsonl", "atomic_write", "atomic_write_text", "proc_status_bytes", "reset_peak_rss", "PeakRSS",
    "quiet_study", "cli_args", "build_cli", "final_metrics", "MetricsCurve", "run_config",
]

#: Trainer overrides of a study run: no progress bar, summary, sanity or validation loop and no configured
#: callbacks (the studies evaluate the trained model themselves), on the CPU. The logger stays (TensorBoard
#: under the run's folder; the CLI's learning-rate monitor needs one).
STUDY_TRAINER = (
    "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    "--trainer.num_sanity_val_steps=0", "--trainer.limit_val_batches=0", "--trainer.callbacks=[]",
    "--trainer.accelerator=cpu", "--trainer.devices=1",
)


def class_arg(key: str, class_path: str, **init_args: Any) -> str:
    """The override ``--KEY={"class_path": ..., "init_args": {...}}`` that replaces the whole object at
    ``KEY`` (e.g. ``model.init_args.loss``): no init argument of the config's class is carried over."""
    return f"--{key}=" + json.dumps({"class_path": class_path, "init_args": init_args})


__all__ += ["STUDY_TRAINER", "class_arg"]
