"""The ``graphneg`` command: a LightningCLI (subcommands fit / validate / test / predict).

Examples::

    graphneg fit --config experiments/mnist_metric.yaml
    graphneg fit --config experiments/mnist_metric.yaml --trainer.max_epochs 2
    graphneg fit --config experiments/mnist_metric.yaml --ckpt_path last      # resume the latest run
    graphneg fit --config runs/mnist_metric/lightning_logs/version_0/config.yaml   # the same run again
    graphneg test --config experiments/mnist_metric.yaml --ckpt_path <file.ckpt>

What the CLI adds to Lightning's:

* **Resuming** (``--ckpt_path last``): Lightning looks for ``last.ckpt`` only in the new run's own
  folder, so it never resumes when each run gets a new ``lightning_logs/version_N``. graphneg resolves
  ``last`` itself (:func:`find_last_checkpoint`): the ``checkpoints/last.ckpt`` of the highest-numbered
  ``version_N`` under the logger's folder (``<trainer.default_root_dir>/lightning_logs`` by default) that
  has one; with an explicit ``ModelCheckpoint(dirpath=...)`` the ``last.ckpt`` there; without a logger
  ``<default_root_dir>/checkpoints/last.ckpt``. No such file is an error (``FileNotFoundError``), not a
  silent fresh start. The resumed run logs to a new ``version_N`` and continues the epoch and global
  step of the checkpoint.
* **Atomic checkpoints** on top of whatever ``trainer.plugins`` choose
  (:func:`graphneg.checkpoint.use_atomic_checkpoints`); orphaned temporary files of killed runs are
  removed at start-up. Nothing unserialisable is put into the config, so a run's saved ``config.yaml``
  can be passed back to ``graphneg fit --config``.
* ``--detect_nan`` (default ``true``): a :class:`graphneg.checkpoint.DetectNaN` callback stops training
  on a NaN/inf loss, naming the epoch, batch index and global step, before a checkpoint of that state is
  written. ``--detect_nan false`` turns it off.
* Linked arguments (set once, copied by :meth:`GraphnegCLI.add_arguments_to_parser`): the number of
  training classes of ``MNIST5kDataModule`` -> the generator's and the loss's ``num_classes``; the
  encoder's ``embedding_dim`` -> the generator's ``dim`` and the loss's ``embedding_size``. A link applies
  when both ends exist in the chosen classes; a linked target's value then always comes from its source
  (set the source instead). The TU DataModule's ``num_features`` reaches the GIN encoder's
  ``in_channels`` without a link: a ``link_arguments`` into ``model.init_args.encoder.init_args`` makes
  jsonargparse 4.53 reject every config whose encoder ``class_path`` is a function
  (``graphneg.models.resnet18``: "add_function_arguments() got an unexpected keyword argument
  'linked_targets'"), so the TU configs leave ``in_channels`` out, ``GINEncoder(in_channels=None)`` has no
  layers yet and ``GraphContrastiveModule.setup()`` builds them from ``datamodule.num_features`` (a given
  ``in_channels`` is checked against it instead).
* Default callbacks: ``last.ckpt`` + best checkpoint, learning-rate monitor, RNG state for exact resume,
  a rich progress bar (unless the run disables bars or configures its own). Lightning's cloud-service
  tips and two warnings that are not about the user's run are not shown (see :func:`cli_main`).
"""
from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, List, Optional, Sequence

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_info

from graphneg.checkpoint import DetectNaN, RNGStateCallback, remove_orphaned_temp_files, use_atomic_checkpoints


def default_callbacks() -> list:
    return [
        ModelCheckpoint(save_last=True, save_top_k=1),
        LearningRateMonitor(logging_interval="epoch"),
        RNGStateCallback(),
    ]


def _num_train_classes(train_classes: Sequence[int], split: str) -> int:
    """Training classes of the MNIST DataModules: all 10 digits for ``MNIST5kDataModule``'s stratified
    split, else ``len(train_classes)`` (``MNIST5kDataModule`` zero-shot, ``MNIST5kPairsDataModule`` test
    split; its ``split="validation"`` trains on the subset ``val_train_classes`` of ``train_classes``,
    whose labels stay below this count). ``train_classes=None``: ``MNIST5kPairsDataModule``'s named
    ``class_split`` (both named splits train 50 classes)."""
    if split == "stratified":
        return 10
    return 50 if train_classes is None else len(train_classes)


# (source, target, apply_on, compute_fn): see the module docstring
LINKS = (
    (("data.init_args.train_classes", "data.init_args.split"), "model.init_args.generator.init_args.num_classes",
     "parse", _num_train_classes),
    (("data.init_args.train_classes", "data.init_args.split"), "model.init_args.loss.init_args.num_classes",
     "parse", _num_train_classes),
    ("model.init_args.encoder.init_args.embedding_dim", "model.init_args.generator.init_args.dim", "parse", None),
    ("model.init_args.encoder.init_args.embedding_dim", "model.init_args.loss.init_args.embedding_size", "parse",
     None),
)


def _version_number(path: Path) -> Optional[int]:
    m = re.fullmatch(r"version_(\d+)", path.name)
    return int(m.group(1)) if m else None


def _checkpoint_folders(trainer: L.Trainer) -> tuple:
    """``(explicit ModelCheckpoint folders, versioned run folders' checkpoint folders (newest first),
    the folder searched)`` for ``trainer``."""
    explicit = []
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.dirpath is not None:
            explicit.append(Path(cb.dirpath))
    logger = trainer.logger
    root = getattr(logger, "root_dir", None) if logger is not None else None
    if logger is None or root is None:
        return explicit, [Path(trainer.default_root_dir) / "checkpoints"], Path(trainer.default_root_dir)
    root = Path(root)
    runs = sorted(
        ((n, p) for p in (root.iterdir() if root.is_dir() else ()) if (n := _version_number(p)) is not None),
        reverse=True,
    )
    return explicit, [p / "checkpoints" for _, p in runs], root


def find_last_checkpoint(trainer: L.Trainer) -> Path:
    """The ``last.ckpt`` that ``--ckpt_path last`` resumes (see the module docstring for the search order).

    Raises:
        FileNotFoundError: no earlier run has a ``last.ckpt``.
    """
    explicit, versioned, root = _checkpoint_folders(trainer)
    folders = explicit if explicit else versioned
    for folder in folders:
        last = folder / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"
        if last.is_file():
            return last
    where = ", ".join(str(f) for f in explicit) if explicit else f"{root}/version_*/checkpoints/"
    raise FileNotFoundError(
        f"--ckpt_path last: no earlier run has a last.ckpt (looked in {where}). Start without --ckpt_path, pass "
        f"--ckpt_path <file.ckpt>, or set --trainer.default_root_dir to the folder of the run to resume "
        f"(now {trainer.default_root_dir!s})"
    )


class SaveFullConfig(SaveConfigCallback):
    """Writes the run's ``config.yaml`` including the values of linked arguments.

    Lightning's ``SaveConfigCallback`` drops every link target from the file; for a link whose source the
    chosen classes lack (e.g. a generator's ``dim`` under an encoder without ``embedding_dim``, where the
    value comes from the YAML) that loses the value, and ``graphneg fit --config <saved config.yaml>``
    would build a different model. Here link targets are kept; links recompute them when the file is
    read back, so the file starts the same run.
    """

    def __init__(self, parser, config, config_filename: str = "config.yaml", overwrite: bool = False,
                 multifile: bool = False, save_to_log_dir: bool = True) -> None:
        # the standard write is replaced by `save_config` (rank zero only)
        super().__init__(parser, config, config_filename, overwrite, multifile, save_to_log_dir=False)

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        logger = trainer.logger  # not trainer.log_dir: it broadcasts, and this runs on rank zero only
        log_dir = getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None) if logger else None
        log_dir = str(log_dir or trainer.default_root_dir)
        fs = get_filesystem(log_dir)
        path = os.path.join(log_dir, self.config_filename)
        if not self.overwrite and fs.isfile(path):
            raise RuntimeError(f"{path} exists; graphneg does not overwrite the config of an earlier run")
        fs.makedirs(log_dir, exist_ok=True)
        with fs.open(path, "w") as f:
            f.write(self.dump())

    def dump(self) -> str:
        """The config as YAML, with the link targets that hold a value put back (jsonargparse's dump drops
        them even with ``skip_link_targets=False`` inside subclass arguments)."""
        import yaml

        text = self.parser.dump(self.config, skip_none=False)
        header = [line for line in text.splitlines() if line.startswith("#")]
        data = yaml.safe_load(text)
        for _, target, _, _ in LINKS:
            value = _lookup(self.config, target)
            if value is None:
                continue
            node, keys = data, target.split(".")
            for k in keys[:-1]:
                node = node.get(k) if isinstance(node, dict) else None
                if node is None:
                    break
            if isinstance(node, dict):
                node[keys[-1]] = value
        return "\n".join(header + [yaml.safe_dump(data, sort_keys=False)])


def _lookup(config, key: str):
    """``config[key]`` for a dotted key, ``None`` when a part is missing or ``None``."""
    node = config
    for k in key.split("."):
        try:
            node = node[k]
        except (KeyError, TypeError, AttributeError):
            return None
        if node is None:
            return None
    return node


class GraphnegCLI(LightningCLI):
    """LightningCLI with graphneg's defaults (see the module docstring): any LightningModule /
    LightningDataModule subclass chosen by ``class_path``, resuming the latest run with ``--ckpt_path
    last``, atomic checkpoints, ``--detect_nan``, linked arguments, a rich progress bar."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--detect_nan", type=bool, default=True,
            help="Stop training on a NaN or inf training loss (graphneg.checkpoint.DetectNaN), before a "
                 "checkpoint of that state is written.",
        )
        for source, target, apply_on, compute_fn in LINKS:
            parser.link_arguments(source, target, compute_fn=compute_fn, apply_on=apply_on)

    def _subconfig(self, config) -> Any:
        return config.get(str(self.subcommand), config) if self.subcommand else config

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        config = self._subconfig(self.config_init)
        trainer_cfg = config.get("trainer", {}) or {}
        configured = trainer_cfg.get("callbacks") or []
        configured = list(configured) if isinstance(configured, (list, tuple)) else [configured]
        extra = []
        if config.get("detect_nan", True) and not any(isinstance(c, DetectNaN) for c in configured):
            extra.append(DetectNaN())
        if trainer_cfg.get("enable_progress_bar", True) is not False and not any(
            isinstance(c, ProgressBar) for c in configured
        ):
            try:
                import rich  # noqa: F401

                from lightning.pytorch.callbacks import RichProgressBar

                extra.append(RichProgressBar(leave=True))
            except ImportError:  # Lightning's default tqdm bar
                pass
        if extra:
            kwargs["callbacks"] = configured + extra
        trainer = super().instantiate_trainer(**kwargs)
        use_atomic_checkpoints(trainer)
        return trainer

    # ------------------------------------------------------------------ --ckpt_path last
    def _prepare_run(self) -> None:
        explicit, versioned, _ = _checkpoint_folders(self.trainer)
        for folder in explicit + versioned:
            remove_orphaned_temp_files(folder)
        config = self._subconfig(self.config_init)
        if config.get("ckpt_path") == "last":
            path = find_last_checkpoint(self.trainer)
            rank_zero_info(f"graphneg: resuming from {path}")
            config["ckpt_path"] = str(path)

    def before_fit(self) -> None:
        self._prepare_run()

    def before_validate(self) -> None:
        self._prepare_run()

    def before_test(self) -> None:
        self._prepare_run()

    def before_predict(self) -> None:
        self._prepare_run()


class _DropLightningTips(logging.Filter):
    """Drops Lightning's advertisements for its cloud services (the litlogger / litmodels tips)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not re.search(r"\[(litlogger|litmodels)\]", record.getMessage())


def _install_log_filter() -> None:
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropLightningTips) for f in log.filters):
        log.addFilter(_DropLightningTips())


@contextmanager
def quiet_lightning():
    """Within this context Lightning's cloud-service tips (litlogger / litmodels) and its internal
    ``LeafSpec`` deprecation warning (Lightning's use of torch's pytree API, nothing a user can change) are
    not shown; every other warning is. For scripts that call ``trainer.fit`` on a CLI's objects."""
    _install_log_filter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
        yield


def cli_main(args: Optional[List[str]] = None, run: bool = True) -> GraphnegCLI:
    """Run the ``graphneg`` command with ``args`` (``None``: ``sys.argv[1:]``); returns the CLI object.

    Hidden while it runs: Lightning's cloud-service tips, LightningCLI's warning that ``args`` was given
    while ``sys.argv`` is not empty (passing ``args`` from Python is this function's purpose), and
    Lightning's internal ``LeafSpec`` deprecation warning (Lightning's own use of torch's pytree API,
    nothing a user can change). All other warnings are shown.
    """
    with quiet_lightning():
        warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended to run from within")
        return GraphnegCLI(
            L.LightningModule,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            trainer_defaults={"callbacks": default_callbacks()},
            save_config_callback=SaveFullConfig,
            save_config_kwargs={"overwrite": True},
            args=args,
            run=run,
            auto_configure_optimizers=False,
            seed_everything_default=0,
        )


def main() -> None:
    cli_main()


__all__ = ["GraphnegCLI", "SaveFullConfig", "quiet_lightning", "cli_main", "find_last_checkpoint", "main", "LINKS"]
