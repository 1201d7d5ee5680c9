"""Two-view contrastive learning on graphs: :class:`GraphContrastiveModule` (GraphCL style).

See :mod:`graphneg.models.contrastive.base` for the shared training step and the logged scalars, and
:mod:`graphneg.callbacks` for the downstream probes (SVC protocol, kNN).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

from torch import Tensor, nn

from graphneg.models.contrastive.base import ContrastiveModuleBase

__all__ = ["GraphContrastiveModule"]


class GraphContrastiveModule(ContrastiveModuleBase):
    r"""Graph contrastive learning (GraphCL style) with any two-view contrastive loss.

    Training batches are pairs ``(view1, view2)`` of :class:`~torch_geometric.data.Batch` (two
    augmentations of the same graphs, :class:`graphneg.data.tu.TUDataModule`); graph embeddings
    ``h = encoder.forward_data(view)`` (:class:`graphneg.models.GINEncoder`: sum-pooled, concatenated
    layer readouts as InfoGraph / GraphCL) go through the head ``g`` (GraphCL ``proj_head``:
    ``Linear(D, D) - ReLU - Linear(D, D)`` by default) into the loss (You et al., NeurIPS 2020,
    Sec. 3.2, eq. 3 is NT-Xent; HCL's graph experiments swap in their loss on the same
    embeddings). With ``supervised=True`` the graph labels ``view1.y`` reach the loss.

    Evaluation (InfoGraph / GraphCL / HCL protocol) is done by callbacks (``trainer.callbacks``): the
    validation / test loaders yield all graphs, ``validation_step`` / ``test_step`` return their encoder
    embeddings, and :class:`graphneg.callbacks.SVCProbe` runs
    :func:`graphneg.metrics.graph_protocol.svc_protocol` on them (fast setting at validation:
    ``val/svc_acc`` / ``val/svc_std``; full protocol at test and at the end of fit: ``test/svc_acc``,
    ``probe/svc_acc``); :class:`graphneg.callbacks.KNNProbe` logs the leave-one-out kNN accuracy
    ``val/knn_top1`` instead (cheap, for large datasets). How often validation runs is the Trainer's
    ``check_val_every_n_epoch`` (the configs: ``trainer.check_val_every_n_epoch: 5``).

    Args:
        encoder: graph encoder with ``forward_data(batch) -> [G, D]`` (or ``forward(x, edge_index,
            batch)``); its ``in_channels`` must equal the DataModule's ``num_features`` (checked at
            setup); a :class:`~graphneg.models.GINEncoder` with ``in_channels=None`` is built there with
            the DataModule's ``num_features`` (:meth:`setup`).
        loss: a two-view contrastive loss.
        projector: projection head; ``None`` builds one from ``projector_dims``.
        projector_dims: widths of the default head (``None``: ``(D, D)`` as GraphCL; ``()``: none).
        projector_batch_norm: BatchNorm1d in the default head's hidden layer (GraphCL: no).
        lr, weight_decay, optimizer, momentum, scheduler: as :class:`ContrastiveModule`
            (GraphCL / HCL graph: Adam, lr 1e-3 here as the issue asks, no weight decay).
        supervised: pass the graph labels to the loss.
        log_histograms, projector_max: as :class:`ContrastiveModule`.
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
        log_histograms: bool = True,
        projector_max: int = 1000,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=list(self._ignored_init_args))
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
        """Check (or fill) the encoder's ``in_channels`` against the DataModule's ``num_features``.

        An encoder made without ``in_channels`` (:class:`graphneg.models.GINEncoder` with
        ``in_channels=None``, the TU configs of ``experiments/unremix/``) gets its layers here:
        ``encoder.build(datamodule.num_features)``. This runs before Lightning creates the optimisers
        and before ``--ckpt_path`` restores weights, so both see the built layers. Outside a Trainer
        (``load_from_checkpoint``, :meth:`graphneg.callbacks.EmbeddingProbe.evaluate`) pass an encoder
        with explicit ``in_channels``.
        """
        dm = self.trainer.datamodule
        features = getattr(dm, "num_features", None) if dm is not None else None
        in_ch = getattr(self.encoder, "in_channels", None)
        name = getattr(dm, "name", type(dm).__name__) if dm is not None else "(none: fit was given loaders)"
        if in_ch is None and callable(getattr(self.encoder, "build", None)):
            if not isinstance(features, int):
                raise ValueError(
                    f"the encoder {type(self.encoder).__name__} has in_channels=None (set from the DataModule at "
                    f"setup) but the DataModule {name} has no integer num_features; set "
                    "model.init_args.encoder.init_args.in_channels"
                )
            self.encoder.build(features)
            return
        if isinstance(features, int) and isinstance(in_ch, int) and features != in_ch:
            raise ValueError(
                f"the encoder's in_channels={in_ch} does not match the node features of {name} "
                f"(num_features={features}); set model.init_args.encoder.init_args.in_channels={features} "
                "or leave it out (GINEncoder then takes num_features at setup)"
            )

    # ------------------------------------------------------------------ evaluation
    def validation_step(self, batch, batch_idx: int) -> Optional[Dict[str, Tensor]]:
        """``{"embeddings": h, "labels": y}`` for the probes of :mod:`graphneg.callbacks` (``None`` in the
        sanity check, which the probes skip)."""
        if self.trainer.sanity_checking:
            return None
        h, y = self.embed_batch(batch)
        self._keep_for_projector(h, y)
        return {"embeddings": h, "labels": y}

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self.embed(batch)
