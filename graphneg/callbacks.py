r"""Downstream probes of a frozen encoder as Lightning callbacks: weighted kNN, linear probe, SVC protocol.

A probe measures how good the representation ``h = f(x)`` (the encoder output, before any projection
head) is for classification, the evaluation of SimCLR / HCL (images) and InfoGraph / GraphCL / HCL
(graphs). The model only has to provide ``embed_batch(batch) -> (embeddings, labels)`` and return
``{"embeddings": h, "labels": y}`` from its ``validation_step`` / ``test_step`` (as
:class:`graphneg.models.ContrastiveModule` and :class:`graphneg.models.GraphContrastiveModule` do);
each probe then works in three places:

* **validation** (``on_validation=True``): collects the step outputs, and at the end of the epoch
  logs ``val/<name>`` with :meth:`~lightning.pytorch.core.LightningModule.log` (skipped during the
  sanity check and on epochs where the model returns no outputs);
* **test** (``on_test=True``): the same on the test loop, ``test/<name>``;
* **end of fit** (``at_fit_end=True``): embeds the DataModule's test set (else its validation set)
  itself under :func:`torch.inference_mode` and writes ``probe/<name>`` to every logger (the values
  are also kept in :attr:`EmbeddingProbe.results`).

Reference (training) set of the kNN and linear probes: with two or more evaluation loaders, loader 0
(``val_with_memory=True`` of :mod:`graphneg.data.vision`: ``[memory, test]``; HCL's ``memory_data``);
else the DataModule's ``memory_dataloader()`` or ``train_eval_dataloader()``
(:class:`graphneg.data.MNIST5kDataModule`), embedded by the probe; a DataModule with neither gets the
documented fallback: leave-one-out kNN (:func:`graphneg.metrics.probe.knn_loo_accuracy`) and a
linear probe on a seeded half / half split of the evaluation embeddings. Queries are the last loader.
The SVC protocol needs no reference set (cross-validation on the evaluation embeddings).

Probes compose from YAML through ``trainer.callbacks``::

    trainer:
      callbacks:
        - class_path: graphneg.callbacks.KNNProbe
          init_args: {k: 200, temperature: 0.5}
        - class_path: graphneg.callbacks.LinearProbe
          init_args: {epochs: 100}

and run on any model without a Trainer through :meth:`EmbeddingProbe.evaluate`.

Migration from the module arguments of earlier versions: ``ContrastiveModule(knn_k, knn_t,
knn_bank_limit)`` -> ``KNNProbe(k, temperature, reference_limit=...)``; ``probe_epochs, probe_lr, seed`` ->
``LinearProbe(epochs, lr, seed=...)``; ``probe_at_end=False`` -> ``at_fit_end=False`` on the probes;
``GraphContrastiveModule(eval="svc", val_folds, val_C_grid, test_folds, C_grid, svc_kernel, seed)`` ->
``SVCProbe(val_folds, val_C_grid, folds, C_grid, kernel, seed)``; ``eval="knn"`` -> ``KNNProbe(k=20)``
(leave-one-out on graphs); ``module.evaluate(dm)`` -> ``probe.evaluate(module, dm)``; the end-of-fit
values ``module.probe_results`` -> ``probe.results["probe/<name>"]``.
With several processes the collected embeddings are gathered before the probe
(:func:`graphneg.distributed.gather_rows`: the ranks' shards may differ in size); the end-of-fit probe embeds the whole DataModule set in every process. Several probes at
the end of one fit share the embeddings: the test and reference sets are embedded once, by the first
probe, and reused by the others (same weights, same loaders); the shared copy is dropped at
``on_fit_end``.
"""
from __future__ import annotations

import weakref
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import move_data_to_device, rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader

from graphneg.distributed import gather_layout, gather_rows
from graphneg.metrics.probe import knn_accuracy, knn_loo_accuracy, linear_probe
from graphneg.progress import ProgressBar, progress_enabled
from graphneg.validation import check_hyperparameter, check_k, check_temperature

__all__ = ["EmbeddingProbe", "KNNProbe", "LinearProbe", "SVCProbe", "embed_loader"]

Embedded = Tuple[Tensor, Tensor]


def _embed_fn(pl_module: LightningModule):
    fn = getattr(pl_module, "embed_batch", None)
    if not callable(fn):
        raise TypeError(
            f"{type(pl_module).__name__} has no embed_batch(batch) -> (embeddings, labels); the probes of "
            "graphneg.callbacks work with graphneg.models.ContrastiveModule / GraphContrastiveModule or any "
            "module defining it"
        )
    return fn


def _loader_size(loader, limit: Optional[int]) -> Optional[int]:
    """Number of samples ``loader`` will yield (``len(loader.dataset)``, capped at ``limit``), else None."""
    try:
        n = len(loader.dataset)
    except (AttributeError, TypeError):
        return limit
    return n if limit is None else min(n, limit)


def embed_loader(pl_module: LightningModule, loader, limit: Optional[int] = None,
                 progress: Optional[bool] = None) -> Embedded:
    """Embeddings ``[N, D]`` and labels ``[N]`` of the first ``limit`` samples of ``loader``.

    Runs ``pl_module.embed_batch`` in eval mode under :func:`torch.inference_mode` on the module's
    device (batches moved with :func:`lightning.pytorch.utilities.move_data_to_device`); the train /
    eval mode of the module is restored afterwards.

    ``progress``: a console bar over the embedded samples (:mod:`graphneg.progress`): ``None``
    (default) only for more than 20,000 samples (``len(loader.dataset)``, capped at ``limit``) on a
    terminal and when no other rich display (e.g. the fit's progress bar) is live; ``True`` always;
    ``False`` never. The embeddings do not depend on it.
    """
    if limit is not None:
        check_k(limit, "limit")
    total = _loader_size(loader, limit)
    bar = ProgressBar("embedding", total=total, enabled=progress_enabled(progress, total))
    embed_batch = _embed_fn(pl_module)
    was_training = pl_module.training
    pl_module.eval()
    embs: List[Tensor] = []
    labs: List[Tensor] = []
    kept = 0
    try:
        with torch.inference_mode(), bar:
            for batch in loader:
                emb, lab = embed_batch(move_data_to_device(batch, pl_module.device))
                emb, lab = emb.detach(), lab.detach().reshape(-1)
                if limit is not None:
                    emb, lab = emb[: limit - kept], lab[: limit - kept]
                embs.append(emb)
                labs.append(lab.to(emb.device))
                kept += emb.size(0)
                bar.advance(emb.size(0))
                if limit is not None and kept >= limit:
                    break
    finally:
        pl_module.train(was_training)
    if not embs:
        raise ValueError("the evaluation loader yielded no batch")
    return torch.cat(embs), torch.cat(labs)


def _reference_loader(datamodule):
    for name in ("memory_dataloader", "train_eval_dataloader"):
        if datamodule is not None and callable(getattr(datamodule, name, None)):
            return getattr(datamodule, name)()
    return None


def _query_loader(datamodule):
    fn = getattr(datamodule, "test_dataloader", None)
    loader = fn() if callable(fn) else datamodule.val_dataloader()
    if isinstance(loader, (list, tuple)) and loader and isinstance(loader[-1], DataLoader):
        loader = loader[-1]  # [memory, test] loaders of val_with_memory=True
    return loader


#: end-of-fit embeddings shared by the probes of one Trainer: ``trainer -> (global_step, {key: Embedded})``
_FIT_END_EMBEDDINGS: "weakref.WeakKeyDictionary[Trainer, tuple]" = weakref.WeakKeyDictionary()


def _fit_end_cache(trainer: Trainer) -> dict:
    """The embedding cache of this fit's end (keyed by the global step: a later fit starts afresh)."""
    step = trainer.global_step
    entry = _FIT_END_EMBEDDINGS.get(trainer)
    if entry is None or entry[0] != step:
        entry = (step, {})
        _FIT_END_EMBEDDINGS[trainer] = entry
    return entry[1]


class EmbeddingProbe(Callback):
    """Base class of the probes: collects ``(embeddings, labels)`` step outputs, runs :meth:`compute`.

    Subclasses set :attr:`needs_reference` and implement :meth:`compute`. See the module docstring for
    the stages, the reference set and the logged names.

    Args:
        on_validation: probe at the end of every validation epoch (``val/<name>``).
        on_test: probe at the end of the test epoch (``test/<name>``).
        at_fit_end: probe the DataModule's test set at the end of fit (``probe/<name>``).
        reference_limit: embed at most this many reference samples from the DataModule (``None``: all).
    """

    #: whether :meth:`compute` uses a reference (training) set
    needs_reference: bool = True

    def __init__(self, on_validation: bool = True, on_test: bool = True, at_fit_end: bool = True,
                 reference_limit: Optional[int] = None) -> None:
        super().__init__()
        if reference_limit is not None:
            check_k(reference_limit, "reference_limit")
        self.on_validation, self.on_test, self.at_fit_end = bool(on_validation), bool(on_test), bool(at_fit_end)
        self.reference_limit = reference_limit
        #: the last value of each logged name, e.g. ``{"val/knn_top1": 0.91, "probe/knn_top1": 0.93}``
        self.results: Dict[str, float] = {}
        self._outputs: Dict[int, Tuple[List[Tensor], List[Tensor]]] = {}

    # ------------------------------------------------------------------ the probe
    def compute(self, queries: Embedded, reference: Optional[Embedded], stage: str) -> Dict[str, float]:
        """Metrics ``{name: value}`` of the query embeddings; ``reference`` is ``None`` when none is
        available; ``stage`` is ``"val"``, ``"test"`` or ``"probe"`` (end of fit / :meth:`evaluate`)."""
        raise TypeError(f"{type(self).__name__} must define compute()")

    def evaluate(self, pl_module: LightningModule, datamodule, cache: Optional[dict] = None) -> Dict[str, float]:
        """The probe on the current model outside a Trainer: ``{name: value}``.

        Queries: the DataModule's test loader (else its validation loader); reference: its
        ``memory_dataloader()`` / ``train_eval_dataloader()`` (else the fallback). Also usable on an
        untrained model (the random-encoder baseline). ``cache``: a dict shared by several probes
        on the same model and DataModule (each set is then embedded once); ``None``: no sharing.
        """
        def embedded(key, loader_fn: Callable, limit: Optional[int]) -> Optional[Embedded]:
            if cache is not None and key in cache:
                return cache[key]
            loader = loader_fn(datamodule)
            result = None if loader is None else embed_loader(pl_module, loader, limit)
            if cache is not None:
                cache[key] = result
            return result

        queries = embedded("queries", _query_loader, None)
        reference = None
        if self.needs_reference:
            reference = embedded(("reference", self.reference_limit), _reference_loader, self.reference_limit)
        return self.compute(queries, reference, "probe")

    # ------------------------------------------------------------------ collection
    def _collect(self, outputs, dataloader_idx: int) -> None:
        if outputs is None:  # e.g. a validation epoch the model skips
            return
        if not isinstance(outputs, dict) or "embeddings" not in outputs or "labels" not in outputs:
            raise TypeError(
                f"{type(self).__name__} needs validation_step / test_step to return "
                "{'embeddings': h, 'labels': y}, got " + type(outputs).__name__
            )
        embs, labs = self._outputs.setdefault(dataloader_idx, ([], []))
        embs.append(outputs["embeddings"].detach())
        labs.append(outputs["labels"].detach().reshape(-1))

    @staticmethod
    def _gather(pl_module: LightningModule, *tensors: Tensor) -> Tuple[Tensor, ...]:
        """All ranks' shards of ``tensors`` (same rows each), in rank order; the ranks' shards may
        differ in size (:func:`graphneg.distributed.gather_layout` / :func:`~graphneg.distributed.gather_rows`)."""
        several = pl_module.trainer.world_size > 1
        out = gather_rows(gather_layout(tensors[0].size(0), several, tensors[0].device), *tensors)
        return out if isinstance(out, tuple) else (out,)

    def _finish(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        outputs, self._outputs = self._outputs, {}
        if not outputs:
            return
        gather = self._gather

        def cat(idx: int) -> Embedded:
            embs, labs = outputs[idx]
            return gather(pl_module, torch.cat(embs), torch.cat(labs))

        queries = cat(max(outputs))
        reference = None
        if self.needs_reference:
            if len(outputs) >= 2:  # [memory, test] loaders: 0 = reference, last = queries
                reference = cat(min(outputs))
            else:
                loader = _reference_loader(trainer.datamodule)
                if loader is not None:
                    reference = embed_loader(pl_module, loader, self.reference_limit)
        results = self.compute(queries, reference, stage)
        for name, value in results.items():
            pl_module.log(f"{stage}/{name}", value, prog_bar=self._prog_bar(name, stage),
                          batch_size=queries[0].size(0))
            self.results[f"{stage}/{name}"] = value

    def _prog_bar(self, name: str, stage: str) -> bool:
        return stage == "val" and not name.endswith("_std")

    # ------------------------------------------------------------------ hooks
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._outputs = {}

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.on_validation and not trainer.sanity_checking:
            self._collect(outputs, dataloader_idx)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.on_validation and not trainer.sanity_checking:
            self._finish(trainer, pl_module, "val")

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._outputs = {}

    def on_test_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.on_test:
            self._collect(outputs, dataloader_idx)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.on_test:
            self._finish(trainer, pl_module, "test")

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.at_fit_end:
            return
        if trainer.datamodule is None:
            rank_zero_warn(f"{type(self).__name__}(at_fit_end=True) needs the DataModule of the fit; no probe was run")
            return
        cache = _fit_end_cache(trainer)  # shared with the other probes of this fit
        results = {f"probe/{k}": v for k, v in self.evaluate(pl_module, trainer.datamodule, cache).items()}
        self.results.update(results)
        for logger in trainer.loggers:  # self.log is not available after the training loop
            logger.log_metrics(results, step=trainer.global_step)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        _FIT_END_EMBEDDINGS.pop(trainer, None)  # after every probe's on_train_end: free the embeddings

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def extra_repr(self) -> str:
        return (f"on_validation={self.on_validation}, on_test={self.on_test}, at_fit_end={self.at_fit_end}, "
                f"reference_limit={self.reference_limit}")


class KNNProbe(EmbeddingProbe):
    r"""Weighted kNN accuracy ``knn_top1`` (Wu et al., CVPR 2018, Sec. 3.4; HCL official code
    ``image/main.py`` ``test()``: ``k = 200``, ``t`` = 0.5): :func:`graphneg.metrics.knn_accuracy`
    against the reference set, :func:`graphneg.metrics.probe.knn_loo_accuracy` (leave-one-out over the
    evaluation embeddings) without one.

    Args:
        k: neighbours; temperature: ``t`` of the weights ``exp(cos / t)``.
        on_validation, on_test, at_fit_end, reference_limit: see :class:`EmbeddingProbe`.
    """

    def __init__(self, k: int = 200, temperature: float = 0.1, on_validation: bool = True, on_test: bool = True,
                 at_fit_end: bool = True, reference_limit: Optional[int] = None) -> None:
        super().__init__(on_validation, on_test, at_fit_end, reference_limit)
        self.k = check_k(k, "k")
        self.temperature = check_temperature(temperature, owner="KNNProbe")

    def compute(self, queries: Embedded, reference: Optional[Embedded], stage: str) -> Dict[str, float]:
        emb, lab = queries
        if reference is None:  # documented fallback: leave-one-out over the evaluation set
            return {"knn_top1": knn_loo_accuracy(emb, lab, k=self.k, temperature=self.temperature)}
        return {"knn_top1": knn_accuracy(reference[0], reference[1], emb, lab, k=self.k,
                                         temperature=self.temperature)}

    def extra_repr(self) -> str:
        return f"k={self.k}, temperature={self.temperature}, " + super().extra_repr()


class LinearProbe(EmbeddingProbe):
    r"""Linear-probe accuracy ``linear_top1`` (SimCLR Sec. 4 / B.6; HCL ``image/linear.py``):
    :func:`graphneg.metrics.linear_probe` trained on the reference embeddings, tested on the queries;
    without a reference set, trained on a seeded half of the evaluation embeddings and tested on the
    other half. Off during validation by default (it trains a classifier).

    Args:
        epochs, lr, weight_decay, batch_size: :func:`~graphneg.metrics.linear_probe` settings.
        seed: seed of the probe's batch order and of the fallback split.
        on_validation, on_test, at_fit_end, reference_limit: see :class:`EmbeddingProbe`.
    """

    def __init__(self, epochs: int = 100, lr: float = 1e-2, weight_decay: float = 1e-6,
                 batch_size: Optional[int] = 512, seed: int = 0, on_validation: bool = False,
                 on_test: bool = True, at_fit_end: bool = True, reference_limit: Optional[int] = None) -> None:
        super().__init__(on_validation, on_test, at_fit_end, reference_limit)
        self.epochs = check_k(epochs, "epochs")
        check_hyperparameter(lr, "lr", 0.0, min_inclusive=False, owner="LinearProbe")
        if batch_size is not None:
            check_k(batch_size, "batch_size")
        self.lr, self.weight_decay, self.batch_size, self.seed = float(lr), float(weight_decay), batch_size, int(seed)

    def compute(self, queries: Embedded, reference: Optional[Embedded], stage: str) -> Dict[str, float]:
        emb, lab = queries
        kwargs = dict(epochs=self.epochs, lr=self.lr, weight_decay=self.weight_decay,
                      batch_size=self.batch_size, seed=self.seed)
        if reference is None:  # fallback: seeded half / half split of the evaluation set
            perm = torch.randperm(emb.size(0), generator=torch.Generator().manual_seed(self.seed)).to(emb.device)
            half = emb.size(0) // 2
            tr, te = perm[:half], perm[half:]
            return {"linear_top1": linear_probe(emb[tr], lab[tr], emb[te], lab[te],
                                                num_classes=int(lab.max()) + 1, **kwargs)}
        return {"linear_top1": linear_probe(reference[0], reference[1], emb, lab, **kwargs)}

    def extra_repr(self) -> str:
        return f"epochs={self.epochs}, lr={self.lr}, seed={self.seed}, " + super().extra_repr()


class SVCProbe(EmbeddingProbe):
    r"""SVC protocol of InfoGraph / GraphCL / HCL for graph embeddings: ``svc_acc`` and ``svc_std``
    (:func:`graphneg.metrics.graph_protocol.svc_protocol`: stratified k-fold CV of an SVC with an inner
    grid over ``C``) on the evaluation embeddings; no reference set.

    Validation uses a fast setting (``val_folds``, ``val_C_grid``); the test stage and the end of fit
    the full protocol (``folds``, ``C_grid``; InfoGraph: 10 folds, ``C`` in ``{1e-3, ..., 1e3}``).

    Args:
        folds, C_grid: the full protocol.
        val_folds, val_C_grid: the validation protocol.
        kernel: SVC kernel (the reference's default ``"rbf"``).
        seed: seed of the CV folds.
        on_validation, on_test, at_fit_end: see :class:`EmbeddingProbe`.
    """

    needs_reference = False

    def __init__(self, folds: int = 10, C_grid: Sequence[float] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0),
                 val_folds: int = 5, val_C_grid: Sequence[float] = (0.1, 1.0, 10.0), kernel: str = "rbf",
                 seed: int = 0, on_validation: bool = True, on_test: bool = True, at_fit_end: bool = True) -> None:
        super().__init__(on_validation, on_test, at_fit_end, None)
        self.folds = check_k(folds, "folds", minimum=2)
        self.val_folds = check_k(val_folds, "val_folds", minimum=2)
        for name, grid in (("C_grid", C_grid), ("val_C_grid", val_C_grid)):
            if len(grid) == 0 or any(float(c) <= 0 for c in grid):
                raise ValueError(f"{name} must hold positive C values, got {list(grid)}")
        self.C_grid = tuple(float(c) for c in C_grid)
        self.val_C_grid = tuple(float(c) for c in val_C_grid)
        self.kernel, self.seed = kernel, int(seed)

    def compute(self, queries: Embedded, reference: Optional[Embedded], stage: str) -> Dict[str, float]:
        from graphneg.metrics.graph_protocol import svc_protocol

        emb, lab = queries
        fast = stage == "val"
        res = svc_protocol(emb.float().cpu(), lab.cpu(), folds=self.val_folds if fast else self.folds,
                           C_grid=self.val_C_grid if fast else self.C_grid, seed=self.seed, kernel=self.kernel)
        return {"svc_acc": res["mean"], "svc_std": res["std"]}

    def extra_repr(self) -> str:
        return (f"folds={self.folds}, C_grid={self.C_grid}, val_folds={self.val_folds}, "
                f"val_C_grid={self.val_C_grid}, kernel={self.kernel!r}, seed={self.seed}, on_validation="
                f"{self.on_validation}, on_test={self.on_test}, at_fit_end={self.at_fit_end}")
