"""The ``graphneg`` command: a LightningCLI (subcommands fit / validate / test / predict).

Examples::

    graphneg fit --config experiments/mnist_metric.yaml
    graphneg fit --config experiments/mnist_metric.yaml --trainer.max_epochs 2
    graphneg fit --config experiments/mnist_metric.yaml --ckpt_path last      # resume
    graphneg test --config experiments/mnist_metric.yaml --ckpt_path <file.ckpt>

Every run logs to TensorBoard under ``trainer.default_root_dir`` (``lightning_logs/`` by default) and
writes checkpoints atomically (``graphneg.checkpoint.AtomicCheckpointIO``), keeping ``last.ckpt``.
"""
from __future__ import annotations

import sys
from typing import List, Optional

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from graphneg.checkpoint import AtomicCheckpointIO, RNGStateCallback


def default_callbacks() -> list:
    return [
        ModelCheckpoint(save_last=True, save_top_k=1),
        LearningRateMonitor(logging_interval="epoch"),
        RNGStateCallback(),
    ]


class GraphnegCLI(LightningCLI):
    """LightningCLI with graphneg's defaults: any LightningModule / LightningDataModule subclass chosen by
    ``class_path`` in the YAML, atomic checkpoints, a rich progress bar, LR monitor and ``last.ckpt``."""

    def _instantiate_trainer(self, config, callbacks):
        # a rich progress bar unless the run disables the bar or configures its own
        if config.get("enable_progress_bar", True) is not False:
            from lightning.pytorch.callbacks import ProgressBar, RichProgressBar

            configured = [c for c in (config.get("callbacks") or []) + callbacks if isinstance(c, ProgressBar)]
            if not configured:
                try:
                    import rich  # noqa: F401

                    callbacks = [*callbacks, RichProgressBar(leave=True)]
                except ImportError:
                    pass
        return super()._instantiate_trainer(config, callbacks)


def cli_main(args: Optional[List[str]] = None, run: bool = True) -> GraphnegCLI:
    return GraphnegCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_defaults={"plugins": [AtomicCheckpointIO()], "callbacks": default_callbacks()},
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
        auto_configure_optimizers=False,
        seed_everything_default=0,
    )


def main() -> None:
    cli_main(sys.argv[1:])


__all__ = ["GraphnegCLI", "cli_main", "main"]
