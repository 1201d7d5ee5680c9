"""Two-view contrastive learning on graphs: :class:`GraphContrastiveModule` (GraphCL style).

See :mod:`graphneg.models.contrastive.base` for the shared training step and the logged scalars.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from graphneg.models.contrastive.base import _check_choice, _ContrastiveBase, _normal_tensor, knn_loo_accuracy

__all__ = ["GraphContrastiveModule"]


class GraphContrastiveModule(_ContrastiveBase):
    r"""Graph contrastive learning (GraphCL style) with any two-view contrastive loss.

    Training batches are pairs ``(view1, view2)`` of :class:`~torch_geometric.data.Batch` (two
    augmentations of the same graphs, :class:`graphneg.data.tu.TUDataModule`); graph embeddings
    ``h = encoder.forward_data(view)`` (:class:`graphneg.models.GINEncoder`: sum-pooled, concatenated
    layer readouts as InfoGraph / GraphCL) go through the head ``g`` (GraphCL ``proj_head``:
    ``Linear(D, D) - ReLU - Linear(D, D)`` by default) into the loss (You et al., NeurIPS 2020,
    Sec. 3.2, eq. 3 is NT-Xent; HCL's graph experiments swap in their loss on the same
    embeddings). With ``supervised=True`` the graph labels ``view1.y`` reach the loss.

    Evaluation (InfoGraph / GraphCL / HCL protocol): the validation / test loaders yield all graphs;
    their encoder embeddings go to :func:`graphneg.metrics.graph_protocol.svc_protocol`. Validation
    runs every ``eval_every`` epochs (and at the last epoch) with a fast setting (``val_folds``,
    ``val_C_grid``), logging ``val/svc_acc`` / ``val/svc_std``; with ``eval="knn"`` it logs the
    leave-one-out kNN accuracy ``val/knn_top1`` instead (cheap, for large datasets). The test stage
    and the end of fit (``probe_at_end``) run the full protocol (``test_folds``, ``C_grid``):
    ``test/svc_acc`` / ``probe/svc_acc`` with their std.

    Args:
        encoder: graph encoder with ``forward_data(batch) -> [G, D]`` (or ``forward(x, edge_index,
            batch)``); its ``in_channels`` must equal the DataModule's ``num_features`` (checked).
        loss: a two-view contrastive loss.
        projector: projection head; ``None`` builds one from ``projector_dims``.
        projector_dims: widths of the default head (``None``: ``(D, D)`` as GraphCL; ``()``: none).
        projector_batch_norm: BatchNorm1d in the default head's hidden layer (GraphCL: no).
        lr, weight_decay, optimizer, momentum, scheduler: as :class:`ContrastiveModule`
            (GraphCL / HCL graph: Adam, lr 1e-3 here as the issue asks, no weight decay).
        supervised: pass the graph labels to the loss.
        eval: ``"svc"`` or ``"knn"`` (validation monitor).
        eval_every: validate every this many epochs.
        val_folds, val_C_grid: the fast validation protocol.
        test_folds, C_grid: the full protocol (InfoGraph: 10 folds, ``C`` in ``{1e-3, ..., 1e3}``).
        svc_kernel: SVC kernel (the reference's default ``"rbf"``).
        knn_k, knn_t: the ``eval="knn"`` monitor.
        probe_at_end, log_histograms, projector_max, seed: as :class:`ContrastiveModule`
            (``seed`` seeds the CV folds).
    """

    def __init__(
        self,
        encoder: nn.Module,
        loss: nn.Module,
        projector: Optional[nn.Module] = None,
        projector_dims: Optional[Sequence[int]] = None,
        projector_batch_norm: bool = False,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer: str = "adam",
        momentum: float = 0.9,
        scheduler: str = "none",
        supervised: bool = False,
        eval: str = "svc",
        eval_every: int = 1,
        val_folds: int = 5,
        val_C_grid: Sequence[float] = (0.1, 1.0, 10.0),
        test_folds: int = 10,
        C_grid: Sequence[float] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0),
        svc_kernel: str = "rbf",
        knn_k: int = 20,
        knn_t: float = 0.1,
        probe_at_end: bool = True,
        log_histograms: bool = True,
        projector_max: int = 1000,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=list(self._ignored_init_args))
        _check_choice("eval", eval, ("svc", "knn"))
        if isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1:
            raise ValueError(f"eval_every must be a positive int (epochs), got {eval_every!r}")
        for name, folds in (("val_folds", val_folds), ("test_folds", test_folds)):
            if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
                raise ValueError(f"{name} must be an int >= 2, got {folds!r}")
        for name, grid in (("val_C_grid", val_C_grid), ("C_grid", C_grid)):
            if len(grid) == 0 or any(float(c) <= 0 for c in grid):
                raise ValueError(f"{name} must hold positive C values, got {list(grid)}")
        self._init_common(encoder, loss, projector, projector_dims, projector_batch_norm)

    # ------------------------------------------------------------------ batches
    def embed(self, data) -> Tensor:
        if callable(getattr(self.encoder, "forward_data", None)):
            return self.encoder.forward_data(data)
        return self.encoder(data.x, data.edge_index, getattr(data, "batch", None))

    @staticmethod
    def _split_batch(batch):
        if not isinstance(batch, (list, tuple)) or len(batch) != 2:
            raise ValueError(
                "GraphContrastiveModule expects training batches (view1, view2) of torch_geometric Batch "
                "objects (graphneg.data.tu.TUDataModule's train loader)"
            )
        v1, v2 = batch
        n1, n2 = getattr(v1, "num_graphs", None), getattr(v2, "num_graphs", None)
        if n1 is None or n1 != n2:
            raise ValueError(f"the two views must hold the same graphs, got {n1} and {n2} graphs")
        labels = getattr(v1, "y", None)
        if labels is not None:
            labels = labels.reshape(-1)
        return v1, v2, labels, int(n1)

    @staticmethod
    def _eval_batch(batch):
        y = getattr(batch, "y", None)
        if y is None:
            raise ValueError("evaluation graphs need graph labels y for the SVC protocol")
        return batch, y

    def setup(self, stage: Optional[str] = None) -> None:
        dm = self._datamodule()
        features = getattr(dm, "num_features", None) if dm is not None else None
        in_ch = getattr(self.encoder, "in_channels", None)
        if isinstance(features, int) and isinstance(in_ch, int) and features != in_ch:
            name = getattr(dm, "name", type(dm).__name__)
            raise ValueError(
                f"the encoder's in_channels={in_ch} does not match the node features of {name} "
                f"(num_features={features}); set model.init_args.encoder.init_args.in_channels={features}"
            )

    # ------------------------------------------------------------------ evaluation
    def _eval_reset(self) -> None:
        self._val_emb: List[Tensor] = []
        self._val_lab: List[Tensor] = []

    def _eval_epoch(self) -> bool:
        epoch = self.current_epoch + 1
        max_epochs = self.trainer.max_epochs if self._trainer is not None else None
        last = max_epochs is not None and max_epochs > 0 and epoch >= max_epochs
        return epoch % self.hparams.eval_every == 0 or last

    def validation_step(self, batch, batch_idx: int) -> None:
        if self.trainer.sanity_checking or not self._eval_epoch():
            return
        x, y = self._eval_batch(batch)
        self._val_emb.append(self.embed(x).detach())
        self._val_lab.append(y.detach().reshape(-1))

    def _collected(self) -> Optional[Tuple[Tensor, Tensor]]:
        if not self._val_emb:
            return None
        emb, lab = torch.cat(self._val_emb), torch.cat(self._val_lab)
        self._eval_reset()
        return self._gather(emb), self._gather(lab)

    def _svc(self, emb: Tensor, lab: Tensor, full: bool) -> Dict[str, float]:
        from graphneg.metrics.graph_protocol import svc_protocol

        hp = self.hparams
        res = svc_protocol(emb.detach().float().cpu(), lab.detach().cpu(),
                           folds=hp.test_folds if full else hp.val_folds,
                           C_grid=tuple(hp.C_grid if full else hp.val_C_grid), seed=hp.seed,
                           kernel=hp.svc_kernel)
        return {"svc_acc": res["mean"], "svc_std": res["std"]}

    def on_validation_epoch_end(self) -> None:
        got = self._collected()
        if got is None:
            return
        emb, lab = got
        if self.hparams.eval == "knn":
            self.log("val/knn_top1", knn_loo_accuracy(emb, lab, self.hparams.knn_k, self.hparams.knn_t),
                     prog_bar=True, batch_size=emb.size(0))
        else:
            res = self._svc(emb, lab, full=False)
            self.log("val/svc_acc", res["svc_acc"], prog_bar=True, batch_size=emb.size(0))
            self.log("val/svc_std", res["svc_std"], batch_size=emb.size(0))
        self._last_eval = (_normal_tensor(emb).cpu(), _normal_tensor(lab).cpu(), None)

    def on_test_epoch_start(self) -> None:
        self._eval_reset()

    def test_step(self, batch, batch_idx: int) -> None:
        x, y = self._eval_batch(batch)
        self._val_emb.append(self.embed(x).detach())
        self._val_lab.append(y.detach().reshape(-1))

    def on_test_epoch_end(self) -> None:
        got = self._collected()
        if got is None:
            return
        res = self._svc(*got, full=True)
        for k, v in res.items():
            self.log(f"test/{k}", v, batch_size=got[0].size(0))

    def evaluate(self, datamodule) -> Dict[str, float]:
        """Full SVC protocol on the embeddings of all graphs: ``{"svc_acc", "svc_std"}``.

        Graphs: the DataModule's test loader (else its validation loader). Also usable on an
        untrained module (the random-encoder baseline).
        """
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                loader = (datamodule.test_dataloader() if callable(getattr(datamodule, "test_dataloader", None))
                          else datamodule.val_dataloader())
                emb, lab = self._embed_loader(loader)
            return self._svc(emb, lab, full=True)
        finally:
            self.train(was_training)

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self.embed(batch)
