"""The ``graphneg`` command: a LightningCLI (subcommands fit / validate / test / predict).

Examples::

    graphneg fit --config experiments/mnist_metric.yaml
    graphneg fit --config experiments/mnist_metric.yaml --trainer.max_epochs 2
    graphneg fit --config experiments/mnist_metric.yaml --ckpt_path last      # resume the latest run
    graphneg fit --config runs/mnist_metric/lightning_logs/version_0/config.yaml   # the same run again
    graphneg test --config experiments/mnist_metric.yaml --ckpt_path <file.ckpt>

What the CLI adds to Lightning's:

* **Run folders that cannot collide**: before anything is written, each run claims its own
  ``<root>/version_N`` with ``os.mkdir`` of the next free number, retried on ``FileExistsError``
  (:func:`graphneg.runs.claim_version_dir`), so runs started at the same moment (a seed sweep) each get
  their own folder, config and checkpoints; ``config.yaml`` is never overwritten (created exclusively). A
  start that fails before its first training step and checkpoint leaves no folder behind. Each
  ``TensorBoardLogger`` / ``CSVLogger`` without a fixed ``version`` (Lightning's default logger included)
  is built again with its config's arguments and ``version=N`` (:func:`graphneg.runs.claim_logger_versions`,
  rank zero); the saved ``config.yaml`` keeps the version unset, so running it again claims a new folder.
* **Resuming** (``--ckpt_path last``): Lightning looks for ``last.ckpt`` only in the new run's own
  folder, so it never resumes when each run gets a new ``lightning_logs/version_N``. graphneg resolves
  ``last`` itself (:func:`choose_last_checkpoint`): among the ``version_N/checkpoints`` folders under the
  logger's folder (``<trainer.default_root_dir>/lightning_logs`` by default), newest run first, the first
  that holds a checkpoint that loads (``torch.load(weights_only=True)``), and in it the checkpoint with the
  highest global step (``last.ckpt`` on a tie). So a corrupt or missing ``last.ckpt`` beside an intact
  ``epoch=N`` checkpoint resumes the intact one; the log line names the file taken and every file or run
  skipped, with the reason. With an explicit ``ModelCheckpoint(dirpath=...)`` that folder is searched;
  without a logger ``<default_root_dir>/checkpoints``. Nothing usable is an error (``FileNotFoundError``),
  not a silent fresh start. The resumed run logs to a new ``version_N`` and continues the epoch and
  global step of the checkpoint.
* **Configs that mean one thing**: the ``config.yaml`` of a resumed run names the checkpoint it resumed
  from as an absolute path (``ckpt_path: /.../version_2/checkpoints/epoch=3-step=120.ckpt``, never
  ``last``), so ``graphneg fit --config <that config.yaml>`` resumes the same state again, whatever runs
  were added since. An explicit ``--ckpt_path`` is checked first: a missing, empty, truncated or
  non-checkpoint file is an error naming the file and what is wrong with it.
* **Atomic checkpoints** on top of whatever ``trainer.plugins`` choose
  (:func:`graphneg.checkpoint.use_atomic_checkpoints`); orphaned temporary files of killed runs are
  removed at start-up. Nothing unserialisable is put into the config, so a run's saved ``config.yaml``
  can be passed back to ``graphneg fit --config``.
* ``--detect_nan`` (default ``true``): a :class:`graphneg.checkpoint.DetectNaN` callback stops training
  on a NaN/inf loss, naming the epoch, batch index and global step, before a checkpoint of that state is
  written. ``--detect_nan false`` turns it off.
* **Sizes stated once** (the size protocol, :data:`SIZE_LINKS`): a DataModule that exposes a ``num_classes``
  attribute (the classes of its training labels, ``0..num_classes-1``) has it copied, after the DataModule
  is built, into the generator's, the loss's and the model's ``num_classes`` wherever the chosen classes
  have that parameter (jsonargparse ``link_arguments(..., apply_on="instantiate")``); the encoder's
  ``embedding_dim`` init argument is copied into the generator's ``dim`` and the loss's ``embedding_size``.
  Any DataModule works, graphneg's own (``MNIST5kDataModule``, ``MNIST5kPairsDataModule``, the retrieval
  DataModules, ``TUDataModule``) expose ``num_classes``. A value the config states for a target wins (the
  attribute is then not read); a DataModule without the attribute leaves the config's values, and a size
  still missing is a one-line error naming the argument. Image
  DataModules also expose ``in_channels``, but the encoder's ``in_channels`` is stated in the encoder: a
  link into ``model.init_args.encoder.init_args`` makes jsonargparse 4.53 reject every config whose encoder
  ``class_path`` is a function (``graphneg.models.resnet18``: "add_function_arguments() got an unexpected
  keyword argument 'linked_targets'"). The TU DataModule's ``num_features`` reaches the GIN encoder
  without a link: the TU configs leave ``in_channels`` out, ``GINEncoder(in_channels=None)`` has no
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
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, List, Optional

import fsspec
import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_info

from graphneg.checkpoint import DetectNaN, RNGStateCallback, remove_orphaned_temp_files, use_atomic_checkpoints
from graphneg.runs import (
    checkpoint_folders, check_ckpt_path, choose_last_checkpoint, claim_logger_versions, find_last_checkpoint,
)


def default_callbacks() -> list:
    return [
        ModelCheckpoint(save_last=True, save_top_k=1),
        LearningRateMonitor(logging_interval="epoch"),
        RNGStateCallback(),
    ]


# The size protocol (see the module docstring). (source, target, apply_on): "instantiate" links read an attribute
# of the instantiated DataModule (ignored when it has none), "parse" links copy a config value.
SIZE_LINKS = (
    ("data.num_classes", "model.init_args.generator.init_args.num_classes", "instantiate"),
    ("data.num_classes", "model.init_args.loss.init_args.num_classes", "instantiate"),
    ("data.num_classes", "model.init_args.num_classes", "instantiate"),
    ("model.init_args.encoder.init_args.embedding_dim", "model.init_args.generator.init_args.dim", "parse"),
    ("model.init_args.encoder.init_args.embedding_dim", "model.init_args.loss.init_args.embedding_size", "parse"),
)
#: (source, target, apply_on, compute_fn), kept for callers of the earlier 4-tuple form
LINKS = tuple((src, tgt, how, None) for src, tgt, how in SIZE_LINKS)


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
        log_dir = run_log_dir(trainer)
        fs = get_filesystem(log_dir)
        path = os.path.join(log_dir, self.config_filename)
        exists = RuntimeError(f"{path} exists; graphneg does not overwrite the config of an earlier run (give "
                              "this run its own folder: leave trainer.logger's version unset)")
        if not self.overwrite and fs.isfile(path):
            raise exists
        fs.makedirs(log_dir, exist_ok=True)
        text = self.dump()
        if fsspec.utils.get_protocol(path) in ("file", "local") and not self.overwrite:
            try:  # exclusive create: of two runs sharing a folder, one fails here instead of overwriting
                with open(path[len("file://"):] if path.startswith("file://") else path, "x") as f:
                    f.write(text)
            except FileExistsError:
                raise exists from None
            return
        with fs.open(path, "w") as f:
            f.write(text)

    def dump(self) -> str:
        """The config as YAML, with the link targets that hold a value put back (jsonargparse's dump drops
        them even with ``skip_link_targets=False`` inside subclass arguments)."""
        import yaml

        text = self.parser.dump(self.config, skip_none=False)
        header = [line for line in text.splitlines() if line.startswith("#")]
        data = yaml.safe_load(text)
        for _, target, _ in SIZE_LINKS:
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


def run_log_dir(trainer: L.Trainer) -> str:
    """``trainer.log_dir`` without its broadcast (a collective that hangs or fails when only rank zero calls
    it, as the config writer and the end-of-fit print do): the first logger's ``log_dir`` (else its
    ``save_dir``), without a logger ``trainer.default_root_dir``."""
    logger = trainer.logger
    log_dir = getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None) if logger else None
    return str(log_dir or trainer.default_root_dir)


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
        for source, target, apply_on in SIZE_LINKS:
            if target not in self._unused_links:
                parser.link_arguments(source, target, apply_on=apply_on)

    # size links that this run does not need: read by add_arguments_to_parser
    _unused_links: frozenset = frozenset()

    def setup_parser(self, add_subcommands: bool, main_kwargs: dict, subparser_kwargs: dict) -> None:
        self._parser_setup = (add_subcommands, main_kwargs, subparser_kwargs)
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)

    def parse_arguments(self, parser, args) -> None:
        """Parse; then drop the instantiation links (:data:`SIZE_LINKS`) whose target the chosen classes lack
        (no generator, a loss without ``num_classes``) or the config already sets, and parse again. So a
        DataModule's ``num_classes`` is read only when a target needs it (a ``TUDataModule`` would load its
        dataset to answer), a value stated in the config wins, and Lightning does not record links into
        parameters that do not exist ("Expected key ... to be in data")."""
        super().parse_arguments(parser, args)
        config = self.config.get(self.config.get("subcommand") or "", self.config)
        unused = frozenset(target for _, target, how in SIZE_LINKS
                           if how == "instantiate" and (target not in config or config[target] is not None))
        if unused - self._unused_links:
            self._unused_links = self._unused_links | unused
            super().setup_parser(*self._parser_setup)
            super().parse_arguments(self.parser, args)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (TypeError, ValueError) as err:
            missing = self._missing_sizes(str(err))
            if missing:
                target, leaf = missing
                raise ValueError(
                    f"{target} is not set: the DataModule has no `{leaf}` attribute to link it from (graphneg's size "
                    f"protocol); give the DataModule a `{leaf}` attribute, or set --{target}"
                ) from None
            raise

    def _missing_sizes(self, message: str) -> Optional[tuple]:
        """The first size-link target left unset when instantiation failed mentioning its name."""
        config = self._subconfig(self.config)
        for _, target, apply_on in SIZE_LINKS:
            leaf = target.rsplit(".", 1)[-1]
            if apply_on == "instantiate" and leaf in message and target in config and config[target] is None:
                return target, leaf
        return None

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

    # ------------------------------------------------------------------ run folder, --ckpt_path
    def _parse_ckpt_path(self) -> None:
        # Lightning reads an explicit --ckpt_path here (its hyper-parameters) with a bare torch.load: a bad file
        # is reported first, naming the file and what is wrong with it
        sub = self.config.get("subcommand")
        if sub:
            check_ckpt_path(self.config[sub].get("ckpt_path"))
        super()._parse_ckpt_path()

    def _prepare_run(self) -> None:
        trainer = self.trainer
        explicit, versioned, _ = checkpoint_folders(trainer)
        for folder in explicit + versioned:
            remove_orphaned_temp_files(folder)
        sub = str(self.subcommand)
        config, parsed = self._subconfig(self.config_init), self._subconfig(self.config)
        ckpt = config.get("ckpt_path")
        if ckpt == "last":
            choice = choose_last_checkpoint(trainer)
            rank_zero_info(f"graphneg: {choice.message}")
            resolved: Optional[Path] = choice.path.absolute()
        else:
            resolved = check_ckpt_path(ckpt)
        if resolved is not None:
            # the saved config.yaml names the file itself, so re-running it resumes the same state
            for cfg in (config, parsed):
                cfg["ckpt_path"] = str(resolved)
        # each logger without a fixed version is rebuilt on a folder claimed for this run (rank zero only)
        in_run = sub in ("fit", "validate", "test", "predict")
        self._claimed = claim_logger_versions(trainer, _lookup(parsed, "trainer.logger")) if in_run else []

    def _release_run_dirs(self) -> None:
        """After a failed start: remove the claimed folders of a run that wrote no checkpoint and trained no
        step (only the config, hparams and an empty event file would be left)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or trainer.global_step > 0:
            return
        for path in getattr(self, "_claimed", []):
            if path.is_dir() and not any(path.rglob("*.ckpt")):
                shutil.rmtree(path, ignore_errors=True)

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            self._release_run_dirs()
            raise

    def before_fit(self) -> None:
        self._prepare_run()

    def before_validate(self) -> None:
        self._prepare_run()

    def before_test(self) -> None:
        self._prepare_run()

    def before_predict(self) -> None:
        self._prepare_run()

    def after_fit(self) -> None:
        """Print the run's evaluation metrics (the last logged ``val/``/``test/`` scalars and every probe's
        fit-end results) and where the run's logs are, so a terminal user sees what TensorBoard shows."""
        if self.trainer.is_global_zero:
            print(format_fit_summary(self.trainer))


EVAL_PREFIXES = ("val/", "test/", "probe/")


def evaluation_metrics(trainer: L.Trainer) -> Dict[str, float]:
    """The evaluation metrics of a finished fit: the trainer's last logged scalars whose names start with
    one of :data:`EVAL_PREFIXES` (``_epoch`` suffixes dropped), and the ``results`` of callbacks that
    evaluate at the end of the fit (the probes of :mod:`graphneg.callbacks`, which log after the training
    loop and so are not in ``trainer.callback_metrics``)."""
    out: Dict[str, float] = {}
    for name, value in trainer.callback_metrics.items():
        name = name[:-len("_epoch")] if name.endswith("_epoch") else name
        if name.startswith(EVAL_PREFIXES) and not name.endswith("_step"):
            out[name] = float(value)
    for cb in trainer.callbacks:
        for name, value in (getattr(cb, "results", None) or {}).items():
            out[name] = float(value)
    return dict(sorted(out.items()))


def format_fit_summary(trainer: L.Trainer) -> str:
    """Lines printed at the end of ``graphneg fit``: epoch / step reached, the evaluation metrics, the log folder."""
    metrics = evaluation_metrics(trainer)
    lines = [f"graphneg fit: finished at epoch {trainer.current_epoch}, global step {trainer.global_step}"]
    if metrics:
        width = max(len(k) for k in metrics)
        lines += [f"  {k:<{width}}  {v:.4f}" for k, v in metrics.items()]
    else:
        lines.append("  no evaluation metric was logged (no validation / test data or probe)")
    log_dir = run_log_dir(trainer)
    lines.append(f"  logs: {log_dir}  (tensorboard --logdir {log_dir})")
    return "\n".join(lines)


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
            args=args,
            run=run,
            auto_configure_optimizers=False,
            seed_everything_default=0,
        )


def main() -> None:
    cli_main()


__all__ = [
    "GraphnegCLI", "SaveFullConfig", "evaluation_metrics", "format_fit_summary", "run_log_dir", "quiet_lightning",
    "cli_main", "find_last_checkpoint", "choose_last_checkpoint", "check_ckpt_path", "main", "LINKS", "SIZE_LINKS",
]


if __name__ == "__main__":
    main()
